"""The 2D comparison on the 3D reference prior: every rule paints 32x32 objects on one latent canvas.

    python benchmarks/shapes_canvas_benchmark.py     # table + grid -> benchmarks/results/shapes_canvas/

The digits benchmark's main table on a second prior: each method starts from the same latents and
draws the same (t, noise) per step (`nfsd_core.digits.comparison.run_method`: 500 steps, lr 0.01,
t annealed from high to low noise); DDIM at CFG 7.5 is the reference and rendered objects of the
same prompts are the floor. Fine prompts name shape, colour and view ("a red mug, side view"),
coarse ones shape and view only ("a mug, side view": any colour, the many-image condition of the
NFSD paper's over-smoothing argument). The prior's judge reads shape, colour and view; the image's
saturation (mean HSV saturation of its pixels) and pixel std show over-saturation and washed-out
greys; for coarse prompts, `colours` is the number of distinct colours judged among a shape's
images, out of the 6 there are (diversity). The methods run as `nfsd_core.batch` tasks (`--workers`,
`--address`, `--in-process`, `--threads`: see the shapes benchmark); finished ones are journalled.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nfsd_core.batch.journal import Journal  # noqa: E402
from nfsd_core.batch.runner import add_batch_arguments, batch_options, results, run_tasks  # noqa: E402
from nfsd_core.batch.tasks import ModelSpec, Report, Task  # noqa: E402
from nfsd_core.digits.comparison import Method, encode_prompts, run_method  # noqa: E402
from nfsd_core.image_files import save_grid  # noqa: E402
from nfsd_core.representations.canvas import initial_latents  # noqa: E402
from nfsd_core.nerf import CameraSettings, make_cameras, sample_cameras  # noqa: E402
from nfsd_core.shapes.data import CAMERA_VIEWS, IMAGE_SIZE, coarse_prompt, fine_prompt  # noqa: E402
from nfsd_core.shapes.demo import load_demo3d  # noqa: E402
from nfsd_core.shapes.evaluator import ShapeJudge, load_shapes_judge  # noqa: E402
from nfsd_core.shapes.objects import COLOURS, OBJECTS  # noqa: E402
from nfsd_core.shapes.prior import SHAPES_PRIOR_DIR  # noqa: E402
from nfsd_core.shapes.render import Scene, render_scenes  # noqa: E402

OUTPUT = ROOT / "benchmarks" / "results" / "shapes_canvas"
METHODS = [Method("DDIM 7.5 (reference)", None, 7.5), Method("SDS 100", "sds", 100.0), Method("SDS 7.5", "sds", 7.5),
           Method("NFSD 7.5", "nfsd", 7.5), Method("CSD", "csd")]
FLOOR = "rendered objects (floor)"


def canvas_rows() -> list[tuple[str, str, str | None, str]]:
    """(group, shape, colour or None, view) of every canvas row: each shape in each colour once
    (fine), and each shape as often again without a colour (coarse); views cycle."""
    rows = []
    for group in ("fine", "coarse"):
        for index, (shape, colour) in enumerate((s, c) for s in OBJECTS for c in COLOURS):
            rows.append((group, shape, colour if group == "fine" else None, CAMERA_VIEWS[index % len(CAMERA_VIEWS)]))
    return rows


def row_prompt(shape: str, colour: str | None, view: str) -> str:
    return fine_prompt(colour, shape, view) if colour else coarse_prompt(shape, view)


def real_renders(rows: list[tuple[str, str, str | None, str]], seed: int) -> torch.Tensor:
    """Rendered objects [B, 3, 32, 32] that meet the rows' prompts: each row's shape and colour
    (coarse: a drawn one) from a training camera of its view, over a random background."""
    generator = torch.Generator().manual_seed(seed)
    drawn = sample_cameras(CameraSettings(), 8 * len(rows), generator)
    unused = list(range(len(drawn)))
    picked, scenes = [], []
    for _, shape, colour, view in rows:
        index = next(i for i in unused if drawn.views[i] == view)
        unused.remove(index)
        picked.append(index)
        colour = colour or list(COLOURS)[int(torch.randint(len(COLOURS), (), generator=generator))]
        scenes.append(Scene(shape, colour, tuple(torch.rand(3, generator=generator).tolist())))
    cameras = make_cameras(*(getattr(drawn, name)[picked] for name in ("elevation", "azimuth", "distance", "fovy")))
    return render_scenes(scenes, cameras, IMAGE_SIZE).image


def canvas_run(loaded: tuple, report: Report, method: Method, seed: int, image_file: str) -> dict:
    """One method as a batch task on the worker's (model, codec, judge): every row from the same
    latents and seed; its record, its decoded images saved to `image_file`."""
    model, codec, judge = loaded
    rows = canvas_rows()
    texts = [row_prompt(shape, colour, view) for _, shape, colour, view in rows]
    latents, per_step, _ = run_method(model, encode_prompts(model, texts), texts, method,
                                      initial_latents((len(rows), 4, 8, 8), seed), seed,
                                      progress=lambda step: report(step + 1))
    with torch.no_grad():
        decoded = codec.decode(latents).clamp(0, 1)
    torch.save(decoded, image_file)
    return {"metrics": measure(judge, decoded, rows), "evaluations_per_step": per_step}


def pixel_saturation(images: torch.Tensor) -> torch.Tensor:
    """Mean HSV saturation of each image's pixels [B] (images [B, 3, H, W] in [0, 1])."""
    high, low = images.amax(dim=1), images.amin(dim=1)
    return ((high - low) / high.clamp_min(1e-6)).flatten(1).mean(dim=1)


def measure(judge: ShapeJudge, images: torch.Tensor, rows: list[tuple[str, str, str | None, str]]) -> dict:
    """Per group: the judge's accuracy (shape, view; colour for fine prompts), saturation, pixel
    std and, for coarse prompts, the distinct colours judged per shape."""
    named = judge.predict(images)
    metrics = {}
    for group in ("fine", "coarse"):
        picked = [i for i, row in enumerate(rows) if row[0] == group]

        def share(name: str, column: int) -> float:
            return sum(named[name][i] == rows[i][column] for i in picked) / len(picked)

        record = {"shape": share("shape", 1), "view": share("view", 3),
                  "saturation": float(pixel_saturation(images[picked]).mean()),
                  "pixel_std": float(images[picked].std(dim=(1, 2, 3)).mean())}
        if group == "fine":
            record["colour"] = share("colour", 2)
        else:
            colours = {shape: {named["colour"][i] for i in picked if rows[i][1] == shape} for shape in OBJECTS}
            record["colours"] = sum(len(found) for found in colours.values()) / len(colours)
        metrics[group] = record
    return metrics


COLUMNS = [("judge: shape", "shape", "{:.0%}"), ("judge: colour", "colour", "{:.0%}"),
           ("judge: view", "view", "{:.0%}"), ("colours / shape", "colours", "{:.1f}"),
           ("saturation", "saturation", "{:.2f}"), ("pixel std", "pixel_std", "{:.3f}")]


def markdown_table(records: dict[str, dict], group: str) -> str:
    columns = [column for column in COLUMNS if column[1] in next(iter(records.values()))["metrics"][group]]
    lines = ["| method | " + " | ".join(title for title, _, _ in columns) + " | evals / step |",
             "|---|" + "---|" * (len(columns) + 1)]
    for label, record in records.items():
        cells = [form.format(record["metrics"][group][key]) for _, key, form in columns]
        evaluations = record.get("evaluations_per_step")
        cells.append("-" if evaluations is None else f"{evaluations:.2f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prior", type=Path, default=SHAPES_PRIOR_DIR)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=Method("", "nfsd").steps)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    add_batch_arguments(parser)
    args = parser.parse_args(argv)
    rows = canvas_rows()
    texts = [row_prompt(shape, colour, view) for _, shape, colour, view in rows]
    journal = Journal(args.output / "runs.jsonl", {"steps": args.steps, "seed": args.seed, "prior": str(args.prior),
                                                   "threads": args.threads})
    images_dir = args.output / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    prior = ModelSpec(load_demo3d, (str(args.prior), "cpu"))
    methods = [Method(m.label, m.rule, m.scale, steps=args.steps) for m in METHODS]
    image_files = {m.label: images_dir / (hashlib.sha256(m.label.encode()).hexdigest()[:16] + ".pt") for m in methods}
    tasks = [Task(m.label, m.step_count, prior, canvas_run, (m, args.seed, str(image_files[m.label]))) for m in methods]
    records = results(run_tasks(tasks, batch_options(args), journal, description="canvas benchmark"))
    images = {label: torch.load(image_files[label]) for label in records}
    images[FLOOR] = real_renders(rows, args.seed)
    records[FLOOR] = {"metrics": measure(load_shapes_judge(args.prior), images[FLOOR], rows)}
    tables = [f"### {group} prompts\n\n{markdown_table(records, group)}\n" for group in ("fine", "coarse")]
    (args.output / "results.md").write_text("\n".join(tables))
    (args.output / "results.json").write_text(json.dumps({"rows": texts, "records": records}, indent=1))
    per_shape = len(COLOURS)  # rows: fine (shape, colour) pairs, then as many coarse rows per shape
    shown = [s * per_shape + s % per_shape for s in range(len(OBJECTS))]  # one colour of each shape
    shown += [len(OBJECTS) * per_shape + s * per_shape + k for s in range(len(OBJECTS)) for k in (0, 1)]
    grid = torch.stack([picture[shown] for picture in images.values()])
    grid = torch.nn.functional.interpolate(grid.flatten(0, 1), scale_factor=2, mode="nearest").unflatten(
        0, grid.shape[:2])
    save_grid(grid, args.output / "grid.png", row_labels=list(images))
    print("\n".join(tables))
    return 0


if __name__ == "__main__":
    import shapes_canvas_benchmark  # Ray's workers find the runs' functions by this module's name, not __main__

    raise SystemExit(shapes_canvas_benchmark.main())
