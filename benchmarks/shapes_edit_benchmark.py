"""Editing images on the 3D reference prior: every object in every colour, edited to another colour
and to another shape, with SDS (from the image), DDS and NFSD-edit at the same seeds.

    python benchmarks/shapes_edit_benchmark.py     # table + grid -> benchmarks/results/shapes_edit/

The sources are the prior's own kind of image: each of the 7 objects in each of the 6 colours, seen
from the front, side or back (in turn) over a seeded random background, rendered analytically with
the object's mask. A colour edit asks for the next colour ("a red cube, front view" -> "a green
cube, front view"), a shape edit for the next object ("a red cube ..." -> "a red cylinder ...").
Every method starts each canvas row from the source's latents and, under one seed, draws the same
(t, noise) per step: 200 steps, AdamW lr 0.01, t uniform in [0.02, 0.98], w(t) = 1 - ab, each
rule at its default scale (SDS 100 reads only the target prompt; DDS and NFSD-edit also the
source's). The masked rows confine DDS and NFSD-edit to the latents the object touches (colour
edits only: a new shape needs pixels the old one did not cover).

Measured per edit kind, as means over the rows and the seeds: the judge's reading of the target
attribute (edit success) and of the kept one (the shape in a colour edit, the colour in a shape
edit), the mean absolute pixel change outside the object (the source's mask; for shape edits the
union of the source's and the target object's masks, both rendered from the same camera: what
should not move), and denoiser evaluations per step and image. "no edit" is the source through
the VAE: the floor of the target attribute and the reference of the kept one. Finished runs are
journalled.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nfsd_core import (DEFAULT_NEGATIVE_PROMPT, OptimizerSettings, Prompts, ScoreDistillation,  # noqa: E402
                       TimestepSchedule, latent_mask, optimize)
from nfsd_core.digits.comparison import PromptCanvas  # noqa: E402
from nfsd_core.image_files import save_grid  # noqa: E402
from nfsd_core.shapes.data import CAMERA_VIEWS, IMAGE_SIZE, fine_prompt  # noqa: E402
from nfsd_core.shapes.evaluator import ShapeJudge, load_shapes_judge  # noqa: E402
from nfsd_core.shapes.objects import COLOURS, OBJECTS  # noqa: E402
from nfsd_core.shapes.prior import SHAPES_PRIOR_DIR, load_shapes_prior  # noqa: E402
from nfsd_core.shapes.render import Scene, render_scenes, view_cameras  # noqa: E402
from nfsd_core.batch.journal import Journal  # noqa: E402

OUTPUT = ROOT / "benchmarks" / "results" / "shapes_edit"
KINDS = {"colour": "shape", "shape": "colour"}  # the edited attribute -> the one to keep
NO_EDIT = "no edit (source through the VAE)"


@dataclass(frozen=True)
class Method:
    label: str
    rule: str
    masked: bool = False  # confined to the latents the source object touches (colour edits only)


METHODS = [Method("SDS 100 (from the image)", "sds"), Method("DDS 7.5", "dds"), Method("NFSD-edit 7.5", "nfsd_edit"),
           Method("DDS 7.5, object mask", "dds", masked=True),
           Method("NFSD-edit 7.5, object mask", "nfsd_edit", masked=True)]


@dataclass(frozen=True)
class Edit:
    """One canvas row: the source object and what it is edited into, seen from `view`."""

    shape: str
    colour: str
    view: str
    target_shape: str
    target_colour: str
    background: tuple[float, float, float]

    @property
    def source_prompt(self) -> str:
        return fine_prompt(self.colour, self.shape, self.view)

    @property
    def target_prompt(self) -> str:
        return fine_prompt(self.target_colour, self.target_shape, self.view)

    @property
    def key(self) -> str:
        return f"{self.source_prompt} -> {self.target_prompt}"


def edits(kind: str, scene_seed: int = 0) -> list[Edit]:
    """Every object in every colour, views in turn, backgrounds from `scene_seed`, edited by `kind`."""
    shapes, colours = list(OBJECTS), list(COLOURS)
    generator = torch.Generator().manual_seed(scene_seed)
    rows = []
    for index, (shape, colour) in enumerate((s, c) for s in shapes for c in colours):
        background = tuple(torch.rand(3, generator=generator).tolist())
        target_shape = shapes[(shapes.index(shape) + 1) % len(shapes)] if kind == "shape" else shape
        target_colour = colours[(colours.index(colour) + 1) % len(colours)] if kind == "colour" else colour
        rows.append(Edit(shape, colour, CAMERA_VIEWS[index % len(CAMERA_VIEWS)], target_shape, target_colour,
                         background))
    return rows


def renders(rows: list[Edit], target: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(images [B, 3, 32, 32], object masks [B, 1, 32, 32]) of the rows' sources (or targets)."""
    scenes = [Scene(row.target_shape if target else row.shape, row.target_colour if target else row.colour,
                    row.background) for row in rows]
    render = render_scenes(scenes, view_cameras([row.view for row in rows]), IMAGE_SIZE)
    return render.image, render.mask


def run_edit(model, codec, rows: list[Edit], method: Method, seed: int, steps: int,
             progress=None) -> tuple[torch.Tensor, float]:
    """The edited images [B, 3, 32, 32] of every row, and denoiser evaluations per step and image."""
    images, masks = renders(rows)
    with torch.no_grad():
        source = codec.encode(images)
    keys = [row.key for row in rows]
    prompts = Prompts(positive={row.key: model.encode_prompt(row.target_prompt) for row in rows},
                      unconditional=model.encode_prompt(""), negative=model.encode_prompt(DEFAULT_NEGATIVE_PROMPT),
                      source={row.key: model.encode_prompt(row.source_prompt) for row in rows})
    edits_image = method.rule in ("dds", "nfsd_edit")
    mask = latent_mask(masks[:, 0], *source.shape[-2:]) if method.masked else None
    guidance = ScoreDistillation(model, prompts, method.rule, timesteps=TimestepSchedule(), seed=seed,
                                 source_latents=source if edits_image else None, mask=mask)
    canvas = PromptCanvas(source, keys)
    before = model.evaluations
    optimize(canvas, guidance, steps, OptimizerSettings(lr=0.01),
             on_step=None if progress is None else lambda record: progress())
    with torch.no_grad():
        edited = codec.decode(canvas.latents.detach()).clamp(0, 1)
    return edited, (model.evaluations - before) / (steps * len(rows))


def measure(judge: ShapeJudge, edited: torch.Tensor, rows: list[Edit], kind: str) -> dict[str, float]:
    """Judged target attribute, judged kept attribute, and pixel change outside the object(s)."""
    kept = KINDS[kind]
    named = judge.predict(edited)
    target = [getattr(row, f"target_{kind}") for row in rows]
    source_images, source_masks = renders(rows)
    outside = source_masks < 0.01
    if kind == "shape":
        outside &= renders(rows, target=True)[1] < 0.01
    change = (edited - source_images).abs().mean(dim=1, keepdim=True)
    per_image = (change * outside).flatten(1).sum(1) / outside.flatten(1).sum(1).clamp_min(1)
    return {"target": sum(a == b for a, b in zip(named[kind], target)) / len(rows),
            "kept": sum(a == getattr(row, kept) for a, row in zip(named[kept], rows)) / len(rows),
            "outside_change": float(per_image.mean())}


def no_edit(codec, judge: ShapeJudge, rows: list[Edit], kind: str) -> dict[str, float]:
    images, _ = renders(rows)
    with torch.no_grad():
        return measure(judge, codec.decode(codec.encode(images)).clamp(0, 1), rows, kind)


def mean(records: list[dict[str, float]]) -> dict[str, float]:
    return {key: sum(record[key] for record in records) / len(records) for key in records[0]}


def markdown_table(records: dict[str, dict]) -> str:
    lines = ["| method | colour edit: judged new colour | judged shape kept | pixel change outside | "
             "shape edit: judged new shape | judged colour kept | pixel change outside | evals / step |",
             "|---|---|---|---|---|---|---|---|"]
    for label, record in records.items():
        cells = []
        for kind in KINDS:
            metrics = record.get(kind)
            cells += (["-"] * 3 if metrics is None else
                      [f"{metrics['target']:.0%}", f"{metrics['kept']:.0%}", f"{metrics['outside_change']:.3f}"])
        evaluations = record.get("evaluations_per_step")
        cells.append("-" if evaluations is None else f"{evaluations:.2f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prior", type=Path, default=SHAPES_PRIOR_DIR)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="distillation seeds")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rows", type=int, default=len(OBJECTS) * len(COLOURS), help="edits per kind (a prefix)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    model, codec = load_shapes_prior(directory=args.prior)
    judge = load_shapes_judge(args.prior)
    rows = {kind: edits(kind)[:args.rows] for kind in KINDS}
    journal = Journal(args.output / "runs.jsonl", {"steps": args.steps, "seeds": args.seeds, "rows": args.rows,
                                                   "prior": str(args.prior)})
    images_dir = args.output / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    runs = [(method, kind, seed) for method in METHODS for kind in KINDS if kind == "colour" or not method.masked
            for seed in args.seeds]
    images: dict[str, dict[str, torch.Tensor]] = {}
    with tqdm(total=len(runs) * args.steps, desc="edit benchmark", unit="step") as bar:
        for method, kind, seed in runs:
            key = f"{method.label} | {kind} | seed {seed}"
            image_file = images_dir / (hashlib.sha256(key.encode()).hexdigest()[:16] + ".pt")
            if key not in journal.done:
                edited, per_step = run_edit(model, codec, rows[kind], method, seed, args.steps, bar.update)
                torch.save(edited, image_file)
                journal.add(key, [{**measure(judge, edited, rows[kind], kind), "evaluations_per_step": per_step}])
            else:
                bar.update(args.steps)
            if seed == args.seeds[0]:
                images.setdefault(kind, {})[method.label] = torch.load(image_file)
    records: dict[str, dict] = {NO_EDIT: {kind: no_edit(codec, judge, rows[kind], kind) for kind in KINDS}}
    for method in METHODS:
        record: dict = {}
        per_step: list[float] = []
        for kind in KINDS:
            done = [journal.done[f"{method.label} | {kind} | seed {seed}"][0] for seed in args.seeds
                    if f"{method.label} | {kind} | seed {seed}" in journal.done]
            if done:
                record[kind] = mean([{k: v for k, v in d.items() if k != "evaluations_per_step"} for d in done])
                per_step.extend(d["evaluations_per_step"] for d in done)
        records[method.label] = {**record, "evaluations_per_step": sum(per_step) / len(per_step)}
    table = markdown_table(records)
    (args.output / "results.md").write_text(table + "\n")
    (args.output / "results.json").write_text(json.dumps(
        {"settings": {"steps": args.steps, "seeds": args.seeds, "lr": 0.01, "timesteps": "uniform 0.02-0.98",
                      "weighting": "sds"},
         "edits": {kind: [row.key for row in kind_rows] for kind, kind_rows in rows.items()},
         "records": records,
         "runs": {key: entry[0] for key, entry in journal.done.items()}}, indent=1))
    save_edit_grid(rows, images, args.output / "grid.png")
    print(table)
    return 0


def save_edit_grid(rows: dict[str, list[Edit]], images: dict[str, dict[str, torch.Tensor]], path: Path) -> None:
    """The first seed's images: one row per method (unmasked ones), the sources first; a column per
    object (in its first colour), colour edits then shape edits."""
    shown = list(range(0, len(rows["colour"]), len(COLOURS)))
    labels = ["source"] + [m.label for m in METHODS if not m.masked]
    columns = []
    for kind in KINDS:
        picture = [renders(rows[kind])[0]] + [images[kind][label] for label in labels[1:]]
        columns.append(torch.stack([p[shown] for p in picture]))
    grid = torch.cat(columns, dim=1)
    grid = torch.nn.functional.interpolate(grid.flatten(0, 1), scale_factor=2, mode="nearest").unflatten(
        0, grid.shape[:2])
    column_labels = [f"{rows[kind][i].shape[:3]}>{getattr(rows[kind][i], f'target_{kind}')[:3]}"
                     for kind in KINDS for i in shown]  # e.g. "cub>gre": a cube made green
    save_grid(grid, path, column_labels=column_labels, row_labels=labels)


if __name__ == "__main__":
    raise SystemExit(main())
