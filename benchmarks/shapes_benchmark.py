"""Text to 3D measured on the 3D reference prior: every rule on the same NeRFs, cameras, t and noise.

    python benchmarks/shapes_benchmark.py --prior DIR      # table + turntable grid -> benchmarks/results/shapes/

Each (method, prompt) distils a NeRF from the same initial weights (NeRF seed) with the same
cameras, timesteps and noise per step (run seed), then is measured against the analytic object
its prompt names: volumetric IoU of the NeRF's occupancy (density above the mesh threshold),
Chamfer distance of the extracted mesh, the judge's reading of a turntable (shape, colour, and
for the mug and the house the Janus rate: frames not in front that it calls "front"), the
object's colour against the true colour (chromaticity error, saturation), and the cost.

The runs go through `nfsd_core.batch` (`--workers N` on a local Ray, `--address` on a cluster,
`--in-process` without Ray): every worker loads the prior once, and finished runs are journalled,
so an interrupted benchmark resumes where it stopped. Every run uses `--threads` torch threads
(default 1), so the numbers do not depend on how many workers ran them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nfsd_core.batch.journal import Journal  # noqa: E402
from nfsd_core.batch.runner import add_batch_arguments, batch_options, results, run_tasks  # noqa: E402
from nfsd_core.batch.tasks import ModelSpec, Report, Task  # noqa: E402
from nfsd_core.image_files import save_grid as save_image_grid  # noqa: E402
from nfsd_core.nerf import extract_mesh, orbit_cameras, render_turntable, view_names  # noqa: E402
from nfsd_core.nerf.mesh import density_grid, isosurface_threshold  # noqa: E402
from nfsd_core.shapes.evaluator import ShapeJudge  # noqa: E402
from nfsd_core.shapes.metrics import (  # noqa: E402
    colour_error, janus_rate, mesh_chamfer, object_colour, occupancy_iou, saturation,
)
from nfsd_core.shapes.demo import TextToNerf, load_demo3d, text_to_nerf  # noqa: E402
from nfsd_core.shapes.objects import COLOURS, FRONTED  # noqa: E402
from nfsd_core.shapes.prior import SHAPES_PRIOR_DIR  # noqa: E402

OUTPUT = ROOT / "benchmarks" / "results" / "shapes"
# (prompt, shape, colour or None for a coarse prompt of any colour)
PROMPTS = [
    ("a red mug", "mug", "red"), ("a blue house", "house", "blue"), ("a green cube", "cube", "green"),
    ("a yellow cone", "cone", "yellow"), ("a purple torus", "torus", "purple"),
    ("a white cylinder", "cylinder", "white"), ("a mug", "mug", None), ("a house", "house", None),
]
METHODS = {
    "SDS 100": {"rule": "sds", "scale": 100.0},
    "SDS 7.5": {"rule": "sds", "scale": 7.5},
    "NFSD 7.5": {"rule": "nfsd", "scale": 7.5},
    "CSD": {"rule": "csd", "scale": None},
    "NFSD 7.5, no view prompts": {"rule": "nfsd", "scale": 7.5, "view_prompts": False},
}
TURNTABLE_FRAMES = 16  # the judge's frames; the grid shows every fourth
GRID_FRAMES = 4
MESH_RESOLUTION = 64


def measure(nerf, shape: str, colour: str | None, judge: ShapeJudge) -> tuple[dict, torch.Tensor]:
    """The metrics of one distilled NeRF, and its turntable frames [N, 3, 32, 32]."""
    turntable = render_turntable(nerf, frames=TURNTABLE_FRAMES, size=32)
    frames = turntable.colour.permute(0, 3, 1, 2)
    settings = nerf.settings.cameras
    cameras = orbit_cameras(TURNTABLE_FRAMES, settings.eval_elevation, settings.eval_distance, settings.eval_fovy)
    judged = judge.predict(frames)
    density = density_grid(nerf, MESH_RESOLUTION)
    occupied = bool((density > 1e-5).any())
    threshold = isosurface_threshold(density, "auto") if occupied else float("inf")
    mesh = extract_mesh(nerf, resolution=MESH_RESOLUTION, y_up=False) if occupied else None
    mean_colour = object_colour(turntable.colour, turntable.opacity)
    record = {
        "iou": occupancy_iou(density, threshold, shape, nerf.settings.radius),
        "chamfer": mesh_chamfer(mesh.vertices, shape) if mesh is not None and len(mesh.faces) else None,
        "judge_shape": sum(name == shape for name in judged["shape"]) / TURNTABLE_FRAMES,
        "judge_colour": None if colour is None else sum(name == colour for name in judged["colour"]) / TURNTABLE_FRAMES,
        "janus": (janus_rate(judged["view"], view_names(cameras.elevation, cameras.azimuth))
                  if shape in FRONTED else None),
        "colour_error": None if colour is None else colour_error(mean_colour, colour),
        "saturation": saturation(mean_colour),
        "true_saturation": None if colour is None else saturation(torch.tensor(COLOURS[colour])),
        "coverage": float(turntable.opacity.mean()),
    }
    return record, frames


def run_one(model, codec, judge, prompt: str, shape: str, colour: str | None, run: TextToNerf,
            report: Report | None = None) -> tuple[dict, torch.Tensor]:
    """Distil `prompt` with `run` and measure the NeRF; `report(steps_done)` follows the steps."""
    evaluations, seconds = [], []

    def on_step(step_record) -> None:
        evaluations.append(step_record.evaluations / run.nerf.batch_size)
        seconds.append(step_record.seconds)
        if report is not None:
            report(step_record.step + 1)

    started = time.perf_counter()
    nerf = text_to_nerf(model, codec, prompt, run, on_step=on_step)
    record, frames = measure(nerf, shape, colour, judge)
    record.update(evaluations_per_step=sum(evaluations) / len(evaluations),
                  seconds_per_step=sum(seconds) / len(seconds), minutes=(time.perf_counter() - started) / 60)
    return record, frames


def benchmark_run(loaded: tuple, report: Report, prompt: str, shape: str, colour: str | None, run: TextToNerf,
                  frame_file: str) -> dict:
    """One (method, prompt) run as a batch task on the worker's (model, codec, judge): its record,
    its turntable frames saved to `frame_file`."""
    record, frames = run_one(*loaded, prompt, shape, colour, run, report)
    torch.save(frames, frame_file)
    return record


def run_key(method: str, prompt: str) -> str:
    return f"{method} | {prompt}"


def frame_file(frames_dir: Path, key: str) -> Path:
    return frames_dir / (hashlib.sha256(key.encode()).hexdigest()[:16] + ".pt")


def benchmark_tasks(prior: Path, methods: list[str], prompts: list[tuple[str, str, str | None]], base: TextToNerf,
                    frames_dir: Path) -> list[Task]:
    """A batch task per (method, prompt), method by method, on the prior loaded once per worker;
    each saves its turntable frames in `frames_dir`."""
    model = ModelSpec(load_demo3d, (str(prior), "cpu"))
    tasks = []
    for method in methods:
        for prompt, shape, colour in prompts:
            key, run = run_key(method, prompt), replace(base, **METHODS[method])
            tasks.append(Task(key, base.steps, model, benchmark_run,
                              (prompt, shape, colour, run, str(frame_file(frames_dir, key)))))
    return tasks


def mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


COLUMNS = [("occupancy IoU", "iou", "{:.2f}"), ("mesh Chamfer", "chamfer", "{:.3f}"),
           ("judge: shape", "judge_shape", "{:.0%}"), ("judge: colour", "judge_colour", "{:.0%}"),
           ("Janus rate", "janus", "{:.0%}"), ("colour error", "colour_error", "{:.2f}"),
           ("saturation", "saturation", "{:.2f}"), ("saturation - true", "saturation_excess", "{:+.2f}"),
           ("evals / step", "evaluations_per_step", "{:.2f}"),
           ("s / step", "seconds_per_step", "{:.3f}"), ("min / object", "minutes", "{:.1f}")]


def metric(record: dict, key: str) -> float | None:
    """A column's value for one run: a record's field, or the object's saturation above its true
    colour's (prompts that name a colour)."""
    if key == "saturation_excess":
        return None if record["true_saturation"] is None else record["saturation"] - record["true_saturation"]
    return record[key]


def markdown_table(records: dict[str, dict[str, dict]]) -> str:
    """One row per method: each metric averaged over the prompts that define it."""
    lines = ["| method | " + " | ".join(title for title, _, _ in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for method, by_prompt in records.items():
        cells = []
        for _, key, form in COLUMNS:
            value = mean([metric(record, key) for record in by_prompt.values()])
            cells.append("-" if value is None else form.format(value))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save_grid(frames: dict[str, dict[str, torch.Tensor]], path: Path, crop: int = 6, upscale: int = 3) -> None:
    """Rows = methods; per prompt, every fourth turntable frame (front, side, back, side), the
    object's middle of the frame (`crop` pixels off each side) enlarged `upscale` times."""
    methods, prompts = list(frames), list(next(iter(frames.values())))
    step = TURNTABLE_FRAMES // GRID_FRAMES
    images = torch.stack([torch.cat([frames[m][p][::step] for p in prompts]) for m in methods])
    images = images[..., crop:-crop, crop:-crop]  # [methods, prompts * GRID_FRAMES, 3, h, w]
    images = F.interpolate(images.flatten(0, 1), scale_factor=upscale, mode="nearest").unflatten(0, images.shape[:2])
    labels = [prompt.removeprefix("a ") if frame == 0 else "" for prompt in prompts for frame in range(GRID_FRAMES)]
    save_image_grid(images, path, column_labels=labels, row_labels=methods)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prior", type=Path, default=SHAPES_PRIOR_DIR)
    parser.add_argument("--steps", type=int, default=TextToNerf.steps)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompts", type=int, default=len(PROMPTS), help="the first N prompts (a smaller run)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS),
                        help="the methods to run (default: all)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    add_batch_arguments(parser)
    args = parser.parse_args(argv)
    prompts = PROMPTS[: args.prompts]
    base = TextToNerf(steps=args.steps, seed=args.seed)
    settings = {"steps": args.steps, "seed": args.seed, "prior": str(args.prior), "nerf": base.nerf.to_config(),
                "timesteps": asdict(base.timesteps), "threads": args.threads}
    journal = Journal(args.output / "runs.jsonl", settings)
    frames_dir = args.output / "frames"
    frames_dir.mkdir(parents=True, exist_ok=True)
    done = results(run_tasks(benchmark_tasks(args.prior, args.methods, prompts, base, frames_dir), batch_options(args),
                             journal, description="benchmark"))
    records: dict[str, dict[str, dict]] = {}
    frames: dict[str, dict[str, torch.Tensor]] = {}
    for method in args.methods:
        for prompt, _, _ in prompts:
            records.setdefault(method, {})[prompt] = done[run_key(method, prompt)]
            frames.setdefault(method, {})[prompt] = torch.load(frame_file(frames_dir, run_key(method, prompt)))
    table = markdown_table(records)
    (args.output / "results.md").write_text(table + "\n")
    (args.output / "results.json").write_text(json.dumps({"settings": settings, "records": records},
                                                         indent=1))
    save_grid(frames, args.output / "grid.png")
    print(table)
    return 0


if __name__ == "__main__":
    import shapes_benchmark  # Ray's workers find the runs' functions by this module's name, not __main__

    raise SystemExit(shapes_benchmark.main())
