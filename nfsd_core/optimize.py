"""The optimisation loop shared by the latent canvas and the NeRF.

Each step: render latents from the representation, ask the guidance for their gradient, push it
through the renderer with the distillation loss (plus the representation's regularisers), and
take an AdamW step. Hooks report every step, show previews, and may stop the run; with a
checkpoint directory the state is saved every N steps, when the run ends, and when anything
(an interrupt, an error in a hook) breaks the loop, so no finished step is ever lost. A
checkpoint resumes only the run that wrote it: the one whose `run_identity` it holds.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .checkpoint import (Checkpoint, claim_checkpoint_dir, has_checkpoint, load_checkpoint, save_checkpoint,
                         unusable)
from .distillation import ScoreDistillation, distillation_loss
from .identity import run_identity
from .representations.base import Representation

# The NoiseStream purpose of the representation's own per-step randomness (cameras, backgrounds).
REPRESENTATION_RANDOMNESS = 1


@dataclass(frozen=True)
class OptimizerSettings:
    """AdamW settings; the defaults are SDS-Bridge's 2D setup (lr 0.01, betas (0.9, 0.99), eps 1e-15)."""

    lr: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-15
    weight_decay: float = 0.0

    def __post_init__(self):
        if not self.lr > 0:
            raise ValueError(f"learning rate must be positive, got {self.lr}")


@dataclass(frozen=True)
class StepRecord:
    """Statistics of one finished step (0-based `step`); `nonfinite_gradient` counts the entries of
    the guidance gradient that were NaN or infinite (zeroed before they reached the parameters,
    e.g. an fp16 overflow in the model)."""

    step: int
    t: list[int]
    loss: float
    grad_norm: float
    components: dict[str, float]
    regularization: float
    evaluations: int
    seconds: float
    stats: dict[str, float] = field(default_factory=dict)
    nonfinite_gradient: int = 0


HISTORY_FIELDS = ("step", "t", "loss", "grad_norm", "regularization", "evaluations", "nonfinite_gradient")


def history_columns(history: list[StepRecord]) -> dict[str, list]:
    """A run's per-step history as columns, one list per statistic: the fields of HISTORY_FIELDS,
    then each guidance component and each of the representation's own statistics (e.g. opacity),
    None where a step lacks one. Step times are left out, so the same run always gives the same
    columns (resumed or not)."""
    columns = {name: [getattr(record, name) for record in history] for name in HISTORY_FIELDS}
    for source in ("components", "stats"):
        for name in sorted({name for record in history for name in getattr(record, source)}):
            columns[name] = [getattr(record, source).get(name) for record in history]
    return columns


@dataclass
class RunResult:
    representation: Representation
    history: list[StepRecord]
    steps_done: int
    stopped: bool


def step_records(checkpoint: Checkpoint) -> list[StepRecord]:
    """The history a checkpoint holds, as StepRecords."""
    try:
        return [StepRecord(**record) for record in checkpoint.history]
    except TypeError as error:
        raise unusable(checkpoint.path, f"its history is not of this version ({error})") from None


def optimization_step(
    representation: Representation,
    guidance: ScoreDistillation,
    optimizer: torch.optim.Optimizer,
    step: int,
    steps: int,
) -> StepRecord:
    started = time.perf_counter()
    generator = guidance.noise_stream.generator(step, REPRESENTATION_RANDOMNESS)
    view = representation.render_for_guidance(step, steps, generator)
    result = guidance(view.latents, step, steps, views=view.views)
    loss = distillation_loss(view.latents, result.gradient)
    optimizer.zero_grad(set_to_none=True)
    (loss + view.regularization).backward()
    optimizer.step()
    return StepRecord(
        step=step,
        t=result.t.tolist(),
        loss=float(loss.detach()),
        grad_norm=float(result.gradient.norm()),
        components={name: float(value.norm()) for name, value in result.components.items()},
        regularization=float(torch.as_tensor(view.regularization).detach()),
        evaluations=result.evaluations,
        seconds=time.perf_counter() - started,
        stats=dict(view.stats),
        nonfinite_gradient=result.nonfinite,
    )


def optimize(
    representation: Representation,
    guidance: ScoreDistillation,
    steps: int,
    settings: OptimizerSettings = OptimizerSettings(),
    *,
    on_step: Callable[[StepRecord], None] | None = None,
    on_preview: Callable[[int, Representation], None] | None = None,
    preview_every: int = 0,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 0,
    identity_extras: dict[str, Any] | None = None,
) -> RunResult:
    """Optimise `representation` for `steps` steps (resuming from `checkpoint_dir` if it holds one).

    `should_stop` is polled before every step; a True ends the run early (saved, `stopped`).
    An exception from any hook propagates after the state is saved. `identity_extras` are JSON
    values that also decide the result but only the caller knows (e.g. the model and prompts):
    a checkpoint saved under other extras, or other settings, is refused (see `run_identity`).
    The checkpoint folder is claimed (see `claim_checkpoint_dir`) before the first step.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if preview_every < 0 or checkpoint_every < 0:
        raise ValueError("preview_every and checkpoint_every must be >= 0 (0 turns them off)")
    optimizer = torch.optim.AdamW(
        representation.parameter_groups(settings.lr),
        betas=settings.betas,
        eps=settings.eps,
        weight_decay=settings.weight_decay,
    )
    history: list[StepRecord] = []
    done, saved = 0, None
    if checkpoint_dir is not None:
        identity = run_identity(representation, guidance, steps, settings, identity_extras)
        claim_checkpoint_dir(checkpoint_dir)
        if has_checkpoint(checkpoint_dir):
            checkpoint = load_checkpoint(checkpoint_dir, representation, optimizer, identity)
            done = saved = checkpoint.step
            history = step_records(checkpoint)

    def save() -> None:
        nonlocal saved
        if checkpoint_dir is not None and done != saved:  # a finished run's moments are never needed again
            save_checkpoint(checkpoint_dir, representation, optimizer if done < steps else None, done, identity,
                            [dataclasses.asdict(r) for r in history])
            saved = done

    stopped = False
    try:
        while done < steps:
            if should_stop is not None and should_stop():
                stopped = True
                break
            record = optimization_step(representation, guidance, optimizer, done, steps)
            history.append(record)
            done += 1
            if checkpoint_every and done % checkpoint_every == 0 and done < steps:
                save()
            if on_step is not None:
                on_step(record)
            if on_preview is not None and preview_every and (done % preview_every == 0 or done == steps):
                with torch.no_grad():
                    on_preview(done, representation)
    except BaseException:
        save()
        raise
    save()
    return RunResult(representation, history, done, stopped)
