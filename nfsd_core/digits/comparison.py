"""Same-seed comparisons of distillation rules on the digits prior: run, measure, tabulate.

Every method starts from the same initial latents [B, 4, 8, 8] and, for the distillation rules,
draws the same (t, noise) at every step (`NoiseStream`), so rows differ only by the rule and its
settings. One latent canvas holds all prompts at once: each row names its prompt as its "view",
so a step is still one batched denoiser call. The DDIM sampler (the model used as it was
trained) is the reference row; real training-split digits give the floor.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..distillation import Prompts, ScoreDistillation
from ..guidance import DEFAULT_NEGATIVE_PROMPT
from ..models.base import LatentCodec, ScoreModel
from ..optimize import OptimizerSettings, StepRecord, optimize
from ..representations.base import GuidanceView
from ..representations.canvas import LatentCanvas, initial_latents
from ..sampling import ddim_sample
from ..timesteps import TimestepSchedule
from .evaluator import DigitEvaluator
from .metrics import measure, real_baseline, real_images
from .prompts import COARSE_LABELS, COARSE_PROMPTS, fine_prompt

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Method:
    """One row of a comparison: a rule with its settings, or the DDIM reference (`rule=None`).

    The defaults are what the benchmark's sweep supports on this prior: with t annealed from high
    to low noise (`sqrt_anneal`), 500 steps at lr 0.01 are at or near every rule's best setting;
    with uniform t, NFSD and CSD keep saturating past about lr x steps = 2.5.
    """

    label: str
    rule: str | None
    scale: float | None = None
    lr: float = 0.01
    steps: int = 500
    t_schedule: str = "sqrt_anneal"
    ddim_steps: int = 50

    @property
    def step_count(self) -> int:
        return self.ddim_steps if self.rule is None else self.steps


@dataclass(frozen=True)
class PromptSet:
    """Which prompt each canvas row gets, and how rows group for measuring."""

    per_fine: int = 6
    per_coarse: int = 20

    def groups(self) -> dict[str, list[str]]:
        return {
            "fine": [fine_prompt(d) for d in range(10) for _ in range(self.per_fine)],
            "coarse": [p for p in COARSE_PROMPTS for _ in range(self.per_coarse)],
        }

    def rows(self) -> list[str]:
        return [prompt for prompts in self.groups().values() for prompt in prompts]


class PromptCanvas(LatentCanvas):
    """A latent canvas whose rows each carry their own prompt (passed to the guidance as views)."""

    def __init__(self, latents: Tensor, row_prompts: Sequence[str]):
        super().__init__(latents)
        if len(row_prompts) != latents.shape[0]:
            raise ValueError(f"need one prompt per latent row, got {len(row_prompts)} for {latents.shape[0]}")
        self.row_prompts = list(row_prompts)

    def render_for_guidance(self, step: int, steps: int, generator: torch.Generator) -> GuidanceView:
        view = super().render_for_guidance(step, steps, generator)
        view.views = self.row_prompts
        return view


def encode_prompts(model: ScoreModel, row_prompts: Sequence[str], negative: str = DEFAULT_NEGATIVE_PROMPT) -> Prompts:
    """Conditions keyed by prompt text, so a canvas row's "view" is its prompt."""
    return Prompts(
        positive={prompt: model.encode_prompt(prompt) for prompt in dict.fromkeys(row_prompts)},
        unconditional=model.encode_prompt(""),
        negative=model.encode_prompt(negative),
    )


def run_method(
    model: ScoreModel, prompts: Prompts, row_prompts: Sequence[str], method: Method, initial: Tensor, seed: int,
    progress: Progress | None = None, snapshots: Sequence[int] = (),
) -> tuple[Tensor, float, dict[int, Tensor]]:
    """Run `method` from `initial` latents [B, 4, 8, 8] (DDIM: x_T; rules: the canvas's start).

    Returns the final latents, denoiser evaluations per step and image, and the latents after
    each step count in `snapshots` (rules only).
    """
    evaluations_before = model.evaluations
    kept: dict[int, Tensor] = {}
    if method.rule is None:
        latents = ddim_sample(model, prompts, initial, method.ddim_steps, method.scale or 7.5, views=row_prompts,
                              on_step=progress)
    else:
        guidance = ScoreDistillation(model, prompts, method.rule, method.scale,
                                     TimestepSchedule(kind=method.t_schedule), seed=seed)
        canvas = PromptCanvas(initial, row_prompts)

        def on_step(record: StepRecord) -> None:
            if record.step + 1 in snapshots:
                kept[record.step + 1] = canvas.latents.detach().clone()
            if progress is not None:
                progress(record.step)

        optimize(canvas, guidance, method.steps, OptimizerSettings(lr=method.lr), on_step=on_step)
        latents = canvas.latents.detach()
    per_step = (model.evaluations - evaluations_before) / (method.step_count * len(row_prompts))
    return latents, per_step, kept


@dataclass
class ComparisonResult:
    """Metrics per method label and prompt group, the real-digit baseline, and the decoded images
    (plus a draw of real digits with the same prompts, as the grid's last row)."""

    metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    baseline: dict[str, dict[str, float]] = field(default_factory=dict)
    images: dict[str, Tensor] = field(default_factory=dict)
    methods: dict[str, dict] = field(default_factory=dict)
    info: dict = field(default_factory=dict)


def measure_groups(
    evaluator: DigitEvaluator, images: Tensor, latents: Tensor, prompt_set: PromptSet
) -> dict[str, dict[str, float]]:
    results, start = {}, 0
    for group, prompts in prompt_set.groups().items():
        rows = slice(start, start + len(prompts))
        results[group] = measure(evaluator, images[rows], latents[rows], prompts)
        start += len(prompts)
    return results


def compare(
    model: ScoreModel,
    codec: LatentCodec,
    evaluator: DigitEvaluator,
    methods: Sequence[Method],
    prompt_set: PromptSet = PromptSet(),
    seed: int = 0,
    progress: Progress | None = None,
) -> ComparisonResult:
    """Run every method from the same initial latents and seed, and measure the decoded images."""
    rows = prompt_set.rows()
    prompts = encode_prompts(model, rows)
    noise = initial_latents((len(rows), 4, 8, 8), seed)
    runs = {method.label: measure_method(model, codec, evaluator, method, prompt_set, prompts, noise, seed, progress)
            for method in methods}
    return comparison_result(codec, evaluator, prompt_set, seed, runs)


MethodRun = tuple[Tensor, dict[str, dict[str, float]], dict]  # decoded images, metrics by group, the method's record


def measure_method(
    model: ScoreModel,
    codec: LatentCodec,
    evaluator: DigitEvaluator,
    method: Method,
    prompt_set: PromptSet,
    prompts: Prompts,
    noise: Tensor,
    seed: int,
    progress: Progress | None = None,
) -> MethodRun:
    """Run one method from `noise` [B, 4, 8, 8] on the prompt set's rows (`prompts`: their
    `encode_prompts`) and measure its decoded images."""
    started = time.perf_counter()
    latents, per_step, _ = run_method(model, prompts, prompt_set.rows(), method, noise, seed, progress)
    with torch.no_grad():
        images = codec.decode(latents)
    record = {**asdict(method), "evaluations_per_step": per_step, "evaluations_per_image": per_step * method.step_count,
              "seconds": round(time.perf_counter() - started, 1)}
    return images, measure_groups(evaluator, images, latents, prompt_set), record


def comparison_result(
    codec: LatentCodec, evaluator: DigitEvaluator, prompt_set: PromptSet, seed: int, runs: dict[str, MethodRun]
) -> ComparisonResult:
    """The methods' runs by label, with the real-digit baseline and, as the grid's last row, a draw
    of real digits for the same prompts."""
    rows = prompt_set.rows()
    result = ComparisonResult(info={"seed": seed, "prompt_set": asdict(prompt_set), "rows": len(rows)})
    result.baseline = {group: real_baseline(evaluator, codec.encode, prompts_of_group, seed)
                       for group, prompts_of_group in prompt_set.groups().items()}
    for label, (images, metrics, record) in runs.items():
        result.images[label], result.metrics[label], result.methods[label] = images, metrics, record
    result.images["real digits"] = real_images(evaluator, rows, torch.Generator().manual_seed(seed))
    return result


COLUMNS = (
    ("accuracy", "accuracy", "{:.0%}"),
    ("coverage", "coverage", "{:.0%}"),
    ("frechet", "Frechet", "{:.2f}"),
    ("diversity", "diversity", "{:.2f}"),
    ("latent_rms", "latent RMS", "{:.2f}"),
    ("pixel_std", "pixel std", "{:.3f}"),
    ("colour", "colour", "{:.3f}"),
)


def markdown_table(result: ComparisonResult, group: str) -> str:
    """One markdown table for a prompt group: a row per method, then the real-digit baseline."""
    header = ["method", *(title for key, title, _ in COLUMNS if _has(result, group, key)),
              "evals / step", "evals / image"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, groups in result.metrics.items():
        cells = [_format(groups[group], key, fmt) for key, _, fmt in COLUMNS if _has(result, group, key)]
        info = result.methods[label]
        lines.append(f"| {label} | " + " | ".join(cells) +
                     f" | {info['evaluations_per_step']:.2f} | {info['evaluations_per_image']:.0f} |")
    cells = [_format(result.baseline[group], key, fmt) for key, _, fmt in COLUMNS if _has(result, group, key)]
    lines.append("| real digits (floor) | " + " | ".join(cells) + " | - | - |")
    return "\n".join(lines)


def _has(result: ComparisonResult, group: str, key: str) -> bool:
    return key in result.baseline[group]  # coverage is only defined for coarse prompts


def _format(metrics: dict[str, float], key: str, fmt: str) -> str:
    return fmt.format(metrics[key])


def grid_columns(prompt_set: PromptSet, per_coarse_shown: int = 3) -> tuple[list[int], list[str]]:
    """Rows of the canvas shown in the grid, with their labels: one sample per fine prompt (its
    digit), then the first few of each coarse prompt ("odd", "even", "any")."""
    columns, labels = list(range(0, 10 * prompt_set.per_fine, prompt_set.per_fine)), [str(d) for d in range(10)]
    start = 10 * prompt_set.per_fine
    for index, prompt in enumerate(COARSE_PROMPTS):
        shown = min(per_coarse_shown, prompt_set.per_coarse)
        columns += range(start + index * prompt_set.per_coarse, start + index * prompt_set.per_coarse + shown)
        labels += [COARSE_LABELS[prompt]] * shown
    return columns, labels


def save_result(result: ComparisonResult, prompt_set: PromptSet, directory: str | Path, upscale: int = 2) -> Path:
    """Write results.json, results.md and grid.png (rows = methods) to `directory`."""
    from ..image_files import save_grid

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    record = {"info": result.info, "methods": result.methods, "metrics": result.metrics, "baseline": result.baseline}
    (directory / "results.json").write_text(json.dumps(record, indent=1))
    tables = [f"### {group} prompts\n\n{markdown_table(result, group)}\n" for group in result.baseline]
    (directory / "results.md").write_text("\n".join(tables))
    columns, column_labels = grid_columns(prompt_set)
    images = torch.stack([images[columns] for images in result.images.values()])  # [methods, columns, 3, H, W]
    if upscale > 1:
        images = F.interpolate(images.flatten(0, 1), scale_factor=upscale, mode="nearest").unflatten(0, images.shape[:2])
    save_grid(images, directory / "grid.png", column_labels=column_labels, row_labels=list(result.images))
    return directory
