"""Text to 3D measured on the 3D reference prior: every rule on the same NeRFs, cameras, t and noise.

    python benchmarks/shapes_benchmark.py --prior DIR      # table + turntable grid -> benchmarks/results/shapes/

Each (method, prompt, seed) distils a NeRF; under one seed every method starts from the same
initial weights (NeRF seed) with the same cameras, timesteps and noise per step (run seed). Each
NeRF is measured against the analytic object its prompt names:
- size: the occupied volume (density above the mesh threshold) over the object's volume; the
  rendered silhouette's linear size against the object's own from the turntable cameras; the
  mesh's silhouettes against the rendered ones (is the mesh where the renders are?);
- shape: volumetric IoU, the best IoU with the object uniformly rescaled (and at which scale),
  whether the prompted object is the nearest of the analytic objects, the mesh's Chamfer distance;
- appearance: the judge's reading of a turntable (shape, colour, and for the mug and the house the
  Janus rate: frames not in front that it calls "front"), the object's colour against the true
  colour (chromaticity error, saturation);
- cost.
The untrained NeRF is measured as a row of its own: what learning nothing scores. Tables give the
mean over prompts and seeds, and the spread over seeds (the standard deviation of the per-seed
means).

The runs go through `nfsd_core.batch` (`--workers N` on a local Ray, `--address` on a cluster,
`--in-process` without Ray): every worker loads the prior once, and finished runs are journalled,
so an interrupted benchmark resumes where it stopped. Every run uses `--threads` torch threads
(default 1), so the numbers do not depend on how many workers ran them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import statistics
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
from nfsd_core.nerf import NerfRepresentation, extract_mesh, orbit_cameras, render_turntable, view_names  # noqa: E402
from nfsd_core.nerf.mesh import density_grid, isosurface_threshold  # noqa: E402
from nfsd_core.nerf.regularizers import Ramp  # noqa: E402
from nfsd_core.shapes.evaluator import ShapeJudge  # noqa: E402
from nfsd_core.shapes.metrics import (  # noqa: E402
    colour_error, janus_rate, level_set_coverage, mesh_chamfer, nearest_object, object_colour, occupancy_iou,
    rescaled_fit, saturation, volume_ratio,
)
from nfsd_core.shapes.demo import TextToNerf, load_demo3d, text_to_nerf  # noqa: E402
from nfsd_core.shapes.objects import COLOURS, FRONTED  # noqa: E402
from nfsd_core.shapes.prior import SHAPES_PRIOR_DIR  # noqa: E402
from nfsd_core.shapes.render import Scene, render_scenes  # noqa: E402

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
    "CSD 1": {"rule": "csd", "scale": 1.0},
    "CSD 7.5": {"rule": "csd", "scale": 7.5},
    "NFSD 7.5, no view prompts": {"rule": "nfsd", "scale": 7.5, "view_prompts": False},
    "untrained NeRF (floor)": {"steps": 0},
}
SEEDS = (0, 1, 2)
TURNTABLE_FRAMES = 16  # the judge's frames; the grid shows every fourth
GRID_FRAMES = 4
MESH_RESOLUTION = 64
SILHOUETTE_SIZE = 64


def measure(nerf, shape: str, colour: str | None, judge: ShapeJudge) -> tuple[dict, torch.Tensor]:
    """The metrics of one distilled NeRF, and its turntable frames [N, 3, 32, 32]."""
    turntable = render_turntable(nerf, frames=TURNTABLE_FRAMES, size=32)
    frames = turntable.colour.permute(0, 3, 1, 2)
    settings = nerf.settings.cameras
    cameras = orbit_cameras(TURNTABLE_FRAMES, settings.eval_elevation, settings.eval_distance, settings.eval_fovy)
    judged = judge.predict(frames)
    radius = nerf.settings.radius
    density = density_grid(nerf, MESH_RESOLUTION)
    occupied = bool((density > 1e-5).any())
    threshold = isosurface_threshold(density, "auto") if occupied else float("inf")
    mesh = extract_mesh(nerf, resolution=MESH_RESOLUTION, y_up=False) if occupied else None
    mean_colour = object_colour(turntable.colour, turntable.opacity)
    # Sizes as the turntable's cameras see them, at SILHOUETTE_SIZE px: the render (opacity > 0.5), the object, the mesh
    rendered = render_turntable(nerf, frames=TURNTABLE_FRAMES, size=SILHOUETTE_SIZE).opacity[..., 0] > 0.5
    true = render_scenes([Scene(shape, "white", (0.0, 0.0, 0.0))] * TURNTABLE_FRAMES, cameras, SILHOUETTE_SIZE).mask
    meshed = level_set_coverage(density, threshold, radius, cameras, SILHOUETTE_SIZE)
    best_iou, best_scale = rescaled_fit(density, threshold, shape, radius)
    nearest = nearest_object(density, threshold, radius)
    record = {
        "volume_ratio": volume_ratio(density, threshold, shape, radius),
        "rendered_size": math.sqrt(float(rendered.sum()) / float((true > 0.5).sum())),
        "mesh_size_vs_render": math.sqrt(float(meshed.sum()) / max(float(rendered.sum()), 1.0)),
        "iou": occupancy_iou(density, threshold, shape, radius),
        "best_rescaled_iou": best_iou,
        "rescale": best_scale,
        "nearest_object": nearest,
        "nearest_is_prompted": float(nearest == shape),
        "chamfer": mesh_chamfer(mesh.vertices, shape) if mesh is not None and len(mesh.faces) else None,
        "judge_shape": sum(name == shape for name in judged["shape"]) / TURNTABLE_FRAMES,
        "judge_colour": None if colour is None else sum(name == colour for name in judged["colour"]) / TURNTABLE_FRAMES,
        "janus": (janus_rate(judged["view"], view_names(cameras.elevation, cameras.azimuth))
                  if shape in FRONTED else None),
        "colour_error": None if colour is None else colour_error(mean_colour, colour),
        "saturation": saturation(mean_colour),
        "true_saturation": None if colour is None else saturation(torch.tensor(COLOURS[colour])),
        "coverage": float(turntable.opacity.mean()),
        "true_coverage": float(true.mean()),
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
    if run.steps:
        nerf = text_to_nerf(model, codec, prompt, run, on_step=on_step)
    else:  # the floor: what learning nothing scores
        nerf = NerfRepresentation(run.nerf, codec=codec)
    record, frames = measure(nerf, shape, colour, judge)
    record.update(evaluations_per_step=mean(evaluations), seconds_per_step=mean(seconds),
                  minutes=(time.perf_counter() - started) / 60)
    return record, frames


def benchmark_run(loaded: tuple, report: Report, prompt: str, shape: str, colour: str | None, run: TextToNerf,
                  frame_file: str) -> dict:
    """One (method, prompt) run as a batch task on the worker's (model, codec, judge): its record,
    its turntable frames saved to `frame_file`."""
    record, frames = run_one(*loaded, prompt, shape, colour, run, report)
    torch.save(frames, frame_file)
    return record


def run_key(method: str, prompt: str, seed: int) -> str:
    return f"{method} | {prompt} | seed {seed}"


def frame_file(frames_dir: Path, key: str) -> Path:
    return frames_dir / (hashlib.sha256(key.encode()).hexdigest()[:16] + ".pt")


def benchmark_tasks(prior: Path, methods: list[str], seeds: list[int], prompts: list[tuple[str, str, str | None]],
                    base: TextToNerf, frames_dir: Path) -> list[Task]:
    """A batch task per (method, seed, prompt), method by method, on the prior loaded once per worker;
    under one seed every method starts from the same NeRF and draws the same randomness. Each task saves
    its turntable frames in `frames_dir`."""
    model = ModelSpec(load_demo3d, (str(prior), "cpu"))
    tasks = []
    for method in methods:
        for seed in seeds:
            for prompt, shape, colour in prompts:
                key = run_key(method, prompt, seed)
                run = replace(base, **METHODS[method], seed=seed, nerf=replace(base.nerf, seed=seed))
                tasks.append(Task(key, run.steps, model, benchmark_run,
                                  (prompt, shape, colour, run, str(frame_file(frames_dir, key)))))
    return tasks


def mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


GEOMETRY = [("volume / true volume", "volume_ratio", "{:.2f}"), ("rendered size", "rendered_size", "{:.2f}"),
            ("mesh size / rendered", "mesh_size_vs_render", "{:.2f}"),
            ("occupancy IoU", "iou", "{:.2f}"), ("IoU rescaled", "best_rescaled_iou", "{:.2f}"),
            ("at scale", "rescale", "{:.2f}"), ("nearest object = prompted", "nearest_is_prompted", "{:.0%}"),
            ("mesh Chamfer", "chamfer", "{:.3f}")]
APPEARANCE = [("judge: shape", "judge_shape", "{:.0%}"), ("judge: colour", "judge_colour", "{:.0%}"),
              ("Janus rate", "janus", "{:.0%}"), ("colour error", "colour_error", "{:.2f}"),
              ("saturation", "saturation", "{:.2f}"), ("saturation - true", "saturation_excess", "{:+.2f}"),
              ("evals / step", "evaluations_per_step", "{:.2f}"), ("s / step", "seconds_per_step", "{:.3f}"),
              ("min / object", "minutes", "{:.1f}")]


def metric(record: dict, key: str) -> float | None:
    """A column's value for one run: a record's field, or the object's saturation above its true
    colour's (prompts that name a colour)."""
    if key == "saturation_excess":
        return None if record["true_saturation"] is None else record["saturation"] - record["true_saturation"]
    return record[key]


def summary(runs: dict[int, list[dict]], key: str) -> tuple[float, float] | None:
    """(mean over prompts and seeds, standard deviation over seeds of the per-seed means) of a column;
    `runs` maps each seed to its records (one per prompt). None when no run defines the column."""
    per_seed = [mean([metric(record, key) for record in records]) for records in runs.values()]
    per_seed = [value for value in per_seed if value is not None]
    if not per_seed:
        return None
    return sum(per_seed) / len(per_seed), statistics.pstdev(per_seed)


def markdown_table(records: dict[str, dict[int, list[dict]]], columns: list[tuple[str, str, str]]) -> str:
    """One row per method: each column's mean over prompts (that define it) and seeds, +- its spread over seeds."""
    lines = ["| method | " + " | ".join(title for title, _, _ in columns) + " |", "|---|" + "---|" * len(columns)]
    for method, runs in records.items():
        cells = []
        for _, key, form in columns:
            value = summary(runs, key)
            spread = "" if value is None or len(runs) < 2 else " ± " + form.format(value[1]).lstrip("+")
            cells.append("-" if value is None else form.format(value[0]) + spread)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_prompt_table(records: dict[str, dict[int, list[dict]]], prompts: list[str]) -> str:
    """Volume ratio and nearest object of every method and prompt, over the seeds."""
    lines = ["| method | " + " | ".join(prompts) + " |", "|---|" + "---|" * len(prompts)]
    for method, runs in records.items():
        cells = []
        for index in range(len(prompts)):
            rows = [records_of_seed[index] for records_of_seed in runs.values()]
            ratios = "/".join(f"{row['volume_ratio']:.2f}" for row in rows)
            cells.append(f"{ratios} {'/'.join(row['nearest_object'] for row in rows)}")
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


def prior_name(directory: Path) -> str:
    """The prior directory as results record it: relative to the repository when inside it."""
    directory = directory.resolve()
    return str(directory.relative_to(ROOT)) if directory.is_relative_to(ROOT) else str(directory)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prior", type=Path, default=SHAPES_PRIOR_DIR)
    parser.add_argument("--steps", type=int, default=TextToNerf.steps)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS),
                        help="run and NeRF seeds; each method and prompt runs once per seed")
    parser.add_argument("--prompts", type=int, default=len(PROMPTS), help="the first N prompts (a smaller run)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS),
                        help="the methods to run (default: all)")
    parser.add_argument("--view-elevation-step", type=int, default=0, choices=range(0, 91), metavar="DEGREES",
                        help="view prompts also name the camera's elevation rounded to this many degrees, for a "
                             "prior trained with the same --view-elevation-step (nfsd_core.shapes.training)")
    parser.add_argument("--sparsity", type=float, nargs="+", default=None, metavar="WEIGHT",
                        help="the sparsity loss's weight through the run, or its ramp START END START_AT END_AT "
                             "(fractions of the run; default: the demo's)")
    parser.add_argument("--fixed-regularizers", action="store_true",
                        help="every method with the demo's regulariser weights, which are otherwise multiplied by "
                             "its scale / 7.5 (shapes.demo.TextToNerf.regularizers_follow_scale)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    add_batch_arguments(parser)
    args = parser.parse_args(argv)
    prompts = PROMPTS[: args.prompts]
    base = TextToNerf(steps=args.steps, regularizers_follow_scale=not args.fixed_regularizers)
    if args.view_elevation_step:
        cameras = replace(base.nerf.cameras, view_elevation_step=args.view_elevation_step)
        base = replace(base, nerf=replace(base.nerf, cameras=cameras))
    if args.sparsity is not None:
        if len(args.sparsity) not in (1, 4):
            parser.error(f"--sparsity takes a weight or START END START_AT END_AT, got {len(args.sparsity)} numbers")
        ramp = Ramp.constant(*args.sparsity) if len(args.sparsity) == 1 else Ramp(*args.sparsity)
        regularizers = replace(base.nerf.regularizers, sparsity=ramp)
        base = replace(base, nerf=replace(base.nerf, regularizers=regularizers))
    settings = {"steps": args.steps, "prior": prior_name(args.prior), "nerf": base.nerf.to_config(),
                "regularizers_follow_scale": base.regularizers_follow_scale, "timesteps": asdict(base.timesteps),
                "threads": args.threads}
    journal = Journal(args.output / "runs.jsonl", settings)
    frames_dir = args.output / "frames"
    frames_dir.mkdir(parents=True, exist_ok=True)
    tasks = benchmark_tasks(args.prior, args.methods, args.seeds, prompts, base, frames_dir)
    done = results(run_tasks(tasks, batch_options(args), journal, description="benchmark"))
    records: dict[str, dict[int, list[dict]]] = {}
    frames: dict[str, dict[str, torch.Tensor]] = {}
    for method in args.methods:
        for seed in args.seeds:
            for prompt, _, _ in prompts:
                key = run_key(method, prompt, seed)
                records.setdefault(method, {}).setdefault(seed, []).append(done[key])
                if seed == args.seeds[0]:
                    frames.setdefault(method, {})[prompt] = torch.load(frame_file(frames_dir, key))
    names = [prompt for prompt, _, _ in prompts]
    tables = (f"Geometry:\n\n{markdown_table(records, GEOMETRY)}\n\nAppearance and cost:\n\n"
              f"{markdown_table(records, APPEARANCE)}\n\nVolume / true volume and nearest object per prompt "
              f"(seeds {', '.join(map(str, args.seeds))}):\n\n{per_prompt_table(records, names)}")
    (args.output / "results.md").write_text(tables + "\n")
    by_prompt = {method: {prompt: {f"seed {seed}": runs[seed][index] for seed in runs}
                          for index, prompt in enumerate(names)} for method, runs in records.items()}
    (args.output / "results.json").write_text(json.dumps({"settings": settings, "seeds": args.seeds,
                                                          "records": by_prompt}, indent=1))
    save_grid(frames, args.output / "grid.png")
    print(tables)
    return 0


if __name__ == "__main__":
    import shapes_benchmark  # Ray's workers find the runs' functions by this module's name, not __main__

    raise SystemExit(shapes_benchmark.main())
