"""The optimisation loop shared by the latent canvas and the NeRF.

Each step: render latents from the representation, ask the guidance for their gradient, push it
through the renderer with the distillation loss (plus the representation's regularisers), and
take an AdamW step. Hooks report every step, show previews, and may stop the run; with a
checkpoint directory the state is saved every N steps, when the run ends, and when anything
(an interrupt, an error in a hook) breaks the loop, so no finished step is ever lost. A
checkpoint resumes only the run that wrote it: the one whose `run_identity` it holds. The run
holds its checkpoint folder's lock from before its first step to its last save. A step that
leaves NaN or infinite parameters stops the run with `NonFiniteParameters`, and that state is
never saved: the folder keeps the last finite one.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .bounded_text import excerpt
from .checkpoint import (Checkpoint, checkpoint_key, has_checkpoint, hold_checkpoint_dir, load_checkpoint,
                         save_checkpoint, unusable)
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


def is_number(value: Any) -> bool:
    """A JSON number (NaN and infinities included: a step's statistics may overflow), not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# What each StepRecord field holds, as a check of its JSON value.
RECORD_FIELDS = {
    "step": is_whole, "evaluations": is_whole, "nonfinite_gradient": is_whole,
    "loss": is_number, "grad_norm": is_number, "regularization": is_number, "seconds": is_number,
    "t": lambda value: isinstance(value, list) and all(map(is_whole, value)),
    "components": lambda value: isinstance(value, dict) and all(map(is_number, value.values())),
    "stats": lambda value: isinstance(value, dict) and all(map(is_number, value.values())),
}


def step_records(checkpoint: Checkpoint) -> list[StepRecord]:
    """The history a checkpoint holds, as StepRecords, each checked field by field."""
    records = []
    for index, record in enumerate(checkpoint.history):
        if not isinstance(record, dict) or record.keys() - RECORD_FIELDS.keys() \
                or {"step", "t", "loss", "grad_norm", "components", "regularization", "evaluations", "seconds"} \
                - record.keys():
            raise unusable(checkpoint.path, f"its history is not of this version (step {index} holds "
                           f"{excerpt(sorted(record) if isinstance(record, dict) else record, 80)})")
        wrong = next((name for name, check in RECORD_FIELDS.items() if name in record and not check(record[name])),
                     None)
        if wrong is not None:
            raise unusable(checkpoint.path, f"its history's step {index} has {wrong} = {excerpt(record[wrong])}, "
                           "not a value of that kind")
        if record["step"] != index:
            raise unusable(checkpoint.path, f"its history's step {index} is numbered {record['step']}")
        records.append(StepRecord(**record))
    return records


class NonFiniteParameters(ArithmeticError):
    """A step left NaN or infinite values in the representation's parameters."""


def check_finite_parameters(representation: Representation, step: int) -> None:
    """Raise NonFiniteParameters, naming `step`, if any parameter holds NaN or infinite values."""
    parameters = [p.detach() for p in representation.parameters()]
    if parameters and not bool(torch.stack([torch.isfinite(p).all() for p in parameters]).all()):
        raise NonFiniteParameters(
            f"step {step + 1} left NaN or infinite values in the representation's parameters, so the run cannot go on "
            "(a learning rate or guidance scale too high, or a model that returns NaN): lower the learning rate or "
            "the scale, or set grad_clip. That state is not saved; a checkpoint keeps the last finite one.")


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
    signing_key: bytes | None = None,
) -> RunResult:
    """Optimise `representation` for `steps` steps (resuming from `checkpoint_dir` if it holds one).

    `should_stop` is polled before every step; a True ends the run early (saved, `stopped`).
    An exception from any hook propagates after the state is saved. `identity_extras` are JSON
    values that also decide the result but only the caller knows (e.g. the model and prompts):
    a checkpoint saved under other extras, or other settings, is refused (see `run_identity`).
    The checkpoint folder is claimed and locked (see `hold_checkpoint_dir`) before the first step
    and stays locked until the last save; its states are signed with `signing_key` (default: the
    user's, see `checkpoint.checkpoint_key`). A step that leaves non-finite parameters raises
    NonFiniteParameters; that state is never saved.
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
    with ExitStack() as held:
        history: list[StepRecord] = []
        done, saved = 0, None
        if checkpoint_dir is not None:
            identity = run_identity(representation, guidance, steps, settings, identity_extras)
            key = signing_key if signing_key is not None else checkpoint_key()
            held.enter_context(hold_checkpoint_dir(checkpoint_dir))
            if has_checkpoint(checkpoint_dir):
                checkpoint = load_checkpoint(checkpoint_dir, representation, optimizer, identity, key)
                done = saved = checkpoint.step
                history = step_records(checkpoint)

        def save() -> None:
            nonlocal saved
            if checkpoint_dir is not None and done != saved:  # a finished run's moments are never needed again
                save_checkpoint(checkpoint_dir, representation, optimizer if done < steps else None, done, identity,
                                [dataclasses.asdict(r) for r in history], key)
                saved = done

        stopped = False
        try:
            while done < steps:
                if should_stop is not None and should_stop():
                    stopped = True
                    break
                record = optimization_step(representation, guidance, optimizer, done, steps)
                check_finite_parameters(representation, done)
                history.append(record)
                done += 1
                if checkpoint_every and done % checkpoint_every == 0 and done < steps:
                    save()
                if on_step is not None:
                    on_step(record)
                if on_preview is not None and preview_every and (done % preview_every == 0 or done == steps):
                    with torch.no_grad():
                        on_preview(done, representation)
        except NonFiniteParameters:
            raise  # the parameters are lost: the folder keeps the last finite state
        except BaseException:
            save()
            raise
        save()
        return RunResult(representation, history, done, stopped)
