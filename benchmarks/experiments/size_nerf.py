"""Where a distilled NeRF's size goes wrong: the mesh level, the rendered object, or the run's settings.

    python benchmarks/experiments/size_nerf.py --variants baseline "SDS 7.5" ...   # -> benchmarks/results/experiments/

Each variant changes one thing in the demo's run as it was before issue 18's fix (`shapes.demo.TextToNerf`:
NFSD 7.5, 600 steps, CPU settings, with `shapes.data.TRAINER_CAMERAS`, the cameras the shipped prior's
data was drawn with, and threestudio's regularisers, sparsity 10) and distils the same prompts from the same
seeds. Every NeRF is measured against the analytic object its prompt names (issue 18):

- **what the cameras see**: the linear size of the rendered silhouette (opacity > 0.5) against the
  object's own silhouette from the same cameras (16 turntable frames and 16 training cameras, 64 px),
  sqrt(area ratio); and, through the run, the same ratio every 100 steps (soft coverage, 8 cameras);
- **the mesh**: the volume above the density level against the object's volume, IoU, best IoU with the
  object uniformly rescaled and at which scale, and the nearest analytic object, at two levels: the mesh
  extraction's "auto" level and the level whose silhouettes match the rendered ones (the level whose
  maximum along each camera ray exceeds it on as many pixels as the render's opacity exceeds 0.5).
Finished runs are journalled: a rerun only runs what is missing, and two processes can split the
variants over one journal.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from nfsd_core.batch.journal import Journal  # noqa: E402
from nfsd_core.distillation import Prompts, ScoreDistillation  # noqa: E402
from nfsd_core.nerf import CameraSettings, NerfRepresentation, make_cameras, orbit_cameras, sample_cameras  # noqa: E402
from nfsd_core.nerf.mesh import density_grid, isosurface_threshold  # noqa: E402
from nfsd_core.nerf.regularizers import RegularizerSettings  # noqa: E402
from nfsd_core.optimize import OptimizerSettings, optimize  # noqa: E402
from nfsd_core.shapes.demo import TextToNerf  # noqa: E402
from nfsd_core.shapes.metrics import (  # noqa: E402
    nearest_object, occupancy_iou, ray_maxima, rescaled_fit, volume_ratio,
)
from nfsd_core.shapes.data import TRAINER_CAMERAS  # noqa: E402
from nfsd_core.shapes.prior import SHAPES_PRIOR_DIR, load_shapes_prior  # noqa: E402
from nfsd_core.shapes.render import Scene, render_scenes  # noqa: E402

OUTPUT = ROOT / "benchmarks" / "results" / "experiments"
PROMPTS = {"a green cube": "cube", "a yellow cone": "cone", "a purple torus": "torus", "a blue house": "house",
           "a red mug": "mug", "a white cylinder": "cylinder"}
# One change each against the demo's run (nested dicts replace fields of nested settings).
VARIANTS: dict[str, dict] = {
    "baseline": {},
    "SDS 100": {"rule": "sds", "scale": 100.0},
    "SDS 7.5": {"rule": "sds", "scale": 7.5},
    "CSD 1": {"rule": "csd", "scale": 1.0},
    "CSD 7.5": {"rule": "csd", "scale": 7.5},
    "NFSD 3": {"scale": 3.0},
    "NFSD 15": {"scale": 15.0},
    "lr 0.003": {"lr": 0.003},
    "small blob (edge 0.3)": {"nerf": {"volume": {"blob_std": 0.33}}},
    "no sparsity": {"nerf": {"regularizers": {"sparsity": {"start": 0.0, "end": 0.0}}}},
    "sparsity 30": {"nerf": {"regularizers": {"sparsity": {"start": 30.0, "end": 30.0}}}},
    # threestudio's weight 10 against 64 x 64 latents; the demo's latents are 8 x 8 (64 times fewer terms in the sum)
    "sparsity 0.16": {"nerf": {"regularizers": {"sparsity": {"start": 0.16, "end": 0.16}}}},
    "no opaque": {"nerf": {"regularizers": {"opaque": {"end": 0.0}}}},
    "opaque ramp 0.2-0.8": {"nerf": {"regularizers": {"opaque": {"start_at": 0.2, "end_at": 0.8}}}},
    "environment background": {"nerf": {"background": {"kind": "environment"}}},
    "learned background only": {"nerf": {"background": {"kind": "environment", "random_probability": 0.0}}},
    "t_max 0.98 throughout": {"timesteps": {"t_max_end": None}},
    "t_max 0.5 throughout": {"timesteps": {"t_max": 0.5, "t_max_end": None}},
    "fixed camera (d 1.25, fovy 55)": {"nerf": {"cameras": {"distance_range": (1.25, 1.25),
                                                            "fovy_range": (55.0, 55.0)}}},
    "close cameras (d 1-1.25, fovy 40-55)": {"nerf": {"cameras": {"distance_range": (1.0, 1.25),
                                                                  "fovy_range": (40.0, 55.0)}}},
    "close cameras, sparsity 0.16": {"nerf": {"cameras": {"distance_range": (1.0, 1.25), "fovy_range": (40.0, 55.0)},
                                              "regularizers": {"sparsity": {"start": 0.16, "end": 0.16}}}},
    "closest cameras (d 1-1.1, fovy 40-47)": {"nerf": {"cameras": {"distance_range": (1.0, 1.1),
                                                                   "fovy_range": (40.0, 47.0)}}},
}
CLOSE = VARIANTS["close cameras (d 1-1.25, fovy 40-55)"]
for rule in ("SDS 100", "SDS 7.5", "CSD 1", "CSD 7.5"):
    VARIANTS[f"close cameras, {rule}"] = {**VARIANTS[rule], **CLOSE}
VARIANTS["close cameras, opaque ramp 0.2-0.8"] = {"nerf": {**CLOSE["nerf"],
                                                           **VARIANTS["opaque ramp 0.2-0.8"]["nerf"]}}
# The NeRF's box as the data's (shapes.render.BOUND 0.5): no density can sit at the cameras (distance >= 1).
BOX = {"nerf": {"radius": 0.5}}
VARIANTS["box 0.5"] = BOX
VARIANTS["box 0.5, close cameras"] = {"nerf": {**BOX["nerf"], **CLOSE["nerf"]}}
VARIANTS["box 0.5, closest cameras"] = {"nerf": {**BOX["nerf"],
                                                 **VARIANTS["closest cameras (d 1-1.1, fovy 40-47)"]["nerf"]}}
for rule in ("SDS 100", "SDS 7.5", "CSD 1", "CSD 7.5"):
    VARIANTS[f"box 0.5, close cameras, {rule}"] = {**VARIANTS[rule], **VARIANTS["box 0.5, close cameras"]}
# Every camera frames the origin's half-height 0.5 (the data's box): distance 0.5 / tan(fovy / 2), 0.96 to 1.37.
FRAME = {"nerf": {"cameras": {"distance_range": (0.5, 0.5), "fovy_range": (40.0, 55.0), "relative_distance": True}}}
VARIANTS["fixed frame 0.5"] = FRAME
for rule in ("SDS 100", "SDS 7.5", "CSD 1", "CSD 7.5"):
    VARIANTS[f"fixed frame 0.5, {rule}"] = {**VARIANTS[rule], **FRAME}
SPARSITY_1 = {"sparsity": {"start": 1.0, "end": 1.0}}
VARIANTS["fixed frame 0.5, sparsity 1"] = {"nerf": {**FRAME["nerf"], "regularizers": SPARSITY_1}}
for rule in ("SDS 100", "SDS 7.5", "CSD 1"):
    VARIANTS[f"fixed frame 0.5, sparsity 1, {rule}"] = {**VARIANTS[rule], **VARIANTS["fixed frame 0.5, sparsity 1"]}
VARIANTS["box 0.5, close cameras, sparsity 1"] = {"nerf": {**VARIANTS["box 0.5, close cameras"]["nerf"], "regularizers": {
    "sparsity": {"start": 1.0, "end": 1.0}}}}
# Shaded renders under the prior's own light (nerf.shading): the geometry, not painted shading, has to make the faces.
LAMBERTIAN = {"nerf": {**FRAME["nerf"], "shading": "lambertian"}}
VARIANTS["fixed frame 0.5, lambertian"] = LAMBERTIAN
VARIANTS["fixed frame 0.5, lambertian from 0.25"] = {"nerf": {**LAMBERTIAN["nerf"], "shaded_from": 0.25}}
for rule in ("SDS 100", "SDS 7.5", "CSD 1", "CSD 7.5"):
    VARIANTS[f"fixed frame 0.5, lambertian, {rule}"] = {**VARIANTS[rule], **LAMBERTIAN}
for change in ("no opaque", "opaque ramp 0.2-0.8", "sparsity 30", "small blob (edge 0.3)", "box 0.5"):
    VARIANTS[f"fixed frame 0.5, {change}"] = {"nerf": {**FRAME["nerf"], **VARIANTS[change]["nerf"]}}
# NFSD's two terms apart, at the demo's settings: CSD is NFSD without delta_D, and from t 0.2 (the DDPM step 200)
# on NFSD's delta_D is e_u - e_n only, never the e_u it takes below.
DEMO = "fixed frame 0.5, sparsity 30"
VARIANTS[f"{DEMO}, CSD 7.5"] = {**VARIANTS["CSD 7.5"], **VARIANTS[DEMO]}
VARIANTS[f"{DEMO}, t from 0.2"] = {**VARIANTS[DEMO], "timesteps": {"t_min": 0.2}}
VARIANTS[f"{DEMO}, t from 0.2, CSD 7.5"] = {**VARIANTS[f"{DEMO}, t from 0.2"], **VARIANTS["CSD 7.5"]}
# Later, lower timesteps: the prior's fine detail (edges, corners) lives at small t.
VARIANTS["fixed frame 0.5, t_max 0.98 -> 0.3"] = {**FRAME, "timesteps": {"t_max_end": 0.3}}
VARIANTS["fixed frame 0.5, t sqrt-annealed 0.98 -> 0.02"] = {**FRAME, "timesteps": {"kind": "sqrt_anneal",
                                                                                   "t_max_end": None}}
GRID = 96  # density grid over the NeRF's box for the volume measures
SILHOUETTE_SIZE = 64
TRACE_EVERY = 100


def at_sparsity_10(run: TextToNerf, **nerf_changes) -> TextToNerf:
    """`run` with threestudio's regularisers (sparsity 10, the demo's before issue 18's second fix) and
    `nerf_changes`: the run as the experiments measured before that fix."""
    nerf = dataclasses.replace(run.nerf, regularizers=RegularizerSettings(), **nerf_changes)
    return dataclasses.replace(run, nerf=nerf)


def overridden(settings, changes: dict):
    """`settings` (a frozen dataclass) with `changes` applied, nested dicts into nested dataclasses."""
    values = {}
    for name, value in changes.items():
        current = getattr(settings, name)
        values[name] = overridden(current, value) if dataclasses.is_dataclass(current) else value
    return dataclasses.replace(settings, **values)


def measurement_cameras(seed: int = 1):
    """16 turntable frames (the NeRF's evaluation camera) and 16 training cameras of a fixed seed."""
    settings = CameraSettings()
    orbit = orbit_cameras(16, settings.eval_elevation, settings.eval_distance, settings.eval_fovy)
    drawn = sample_cameras(settings, 16, torch.Generator().manual_seed(seed))
    return make_cameras(*(torch.cat([getattr(orbit, n), getattr(drawn, n)]) for n in
                          ("elevation", "azimuth", "distance", "fovy")))


def true_masks(shape: str, cameras, size: int) -> torch.Tensor:
    scenes = [Scene(shape, "white", (0.0, 0.0, 0.0))] * len(cameras)
    return render_scenes(scenes, cameras, size).mask[:, 0]  # [N, H, W]


@torch.no_grad()
def measure(nerf: NerfRepresentation, shape: str) -> dict:
    radius = nerf.settings.radius
    cameras = measurement_cameras()
    opacity = torch.cat([nerf.render(cameras.select(i), SILHOUETTE_SIZE, SILHOUETTE_SIZE).opacity[..., 0]
                         for i in range(len(cameras))])
    truth = true_masks(shape, cameras, SILHOUETTE_SIZE)
    rendered_pixels = int((opacity > 0.5).sum())
    density = density_grid(nerf, GRID)
    maxima = ray_maxima(density, radius, cameras, SILHOUETTE_SIZE).flatten()
    render_level = float(maxima.sort(descending=True).values[max(rendered_pixels - 1, 0)])
    levels = {"auto": isosurface_threshold(density, "auto"), "rendered": render_level}
    record = {
        "silhouette_size": math.sqrt(rendered_pixels / float((truth > 0.5).sum())),
        "turntable_coverage_ratio": float(opacity[:16].sum() / truth[:16].sum()),
        "levels": levels,
        "auto_silhouette_size": math.sqrt(float((maxima > levels["auto"]).sum()) / float((truth > 0.5).sum())),
    }
    for name, level in levels.items():
        best_iou, best_scale = rescaled_fit(density, level, shape, radius)
        record[name] = {"volume_ratio": volume_ratio(density, level, shape, radius),
                        "iou": occupancy_iou(density, level, shape, radius),
                        "best_rescaled_iou": best_iou, "at_scale": best_scale,
                        "nearest_object": nearest_object(density, level, radius)}
    return record


def trace_cameras():
    return sample_cameras(CameraSettings(), 8, torch.Generator().manual_seed(2))


def run_variant(model, codec, prompt: str, shape: str, run: TextToNerf, save: Path | None = None) -> dict:
    """Distil `prompt` with `run` (as `shapes.demo.text_to_nerf`), tracing the soft coverage ratio."""
    cameras = trace_cameras()
    truth = true_masks(shape, cameras, 32).sum()
    prompts = Prompts.from_text(model, prompt, view_dependent=run.view_prompts)
    guidance = ScoreDistillation(model, prompts, run.rule, scale=run.scale, seed=run.seed, timesteps=run.timesteps)
    nerf = NerfRepresentation(run.nerf, codec=codec)
    trace = []

    @torch.no_grad()
    def on_preview(step: int, representation) -> None:
        trace.append((step, float(representation.render(cameras, 32, 32).opacity.sum() / truth)))

    on_preview(0, nerf)
    started = time.perf_counter()
    optimize(nerf, guidance, run.steps, OptimizerSettings(lr=run.lr), on_preview=on_preview,
             preview_every=TRACE_EVERY)
    if save is not None:
        save.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"settings": run.nerf.to_config(), "state": nerf.state_dict()}, save)
    record = measure(nerf, shape)
    record.update(coverage_trace=trace, minutes=(time.perf_counter() - started) / 60)
    return record


MEASURE_COLUMNS = ("rendered size | mesh size (auto) | volume ratio auto / rendered level | IoU auto / rendered | "
                   "best rescaled IoU (scale), rendered level | nearest object auto / rendered")


def measure_cells(record: dict) -> str:
    """`measure`'s figures as the table cells of MEASURE_COLUMNS."""
    auto, rendered = record["auto"], record["rendered"]
    return (f"{record['silhouette_size']:.2f} | {record['auto_silhouette_size']:.2f} | "
            f"{auto['volume_ratio']:.2f} / {rendered['volume_ratio']:.2f} | "
            f"{auto['iou']:.2f} / {rendered['iou']:.2f} | "
            f"{rendered['best_rescaled_iou']:.2f} ({rendered['at_scale']:.2f}) | "
            f"{auto['nearest_object']} / {rendered['nearest_object']}")


def markdown(done: dict[str, list[dict]], variants: list[str], prompts: list[str]) -> str:
    lines = [f"| variant | prompt | {MEASURE_COLUMNS} | coverage ratio at step 0, 100, ..., end |",
             "|---|---|---|---|---|---|---|---|---|"]
    for variant in variants:
        for prompt in prompts:
            key = f"{variant} | {prompt}"
            if key not in done:
                continue
            record = done[key][0]
            trace = " ".join(f"{ratio:.2f}" for _, ratio in record["coverage_trace"])
            lines.append(f"| {variant} | {prompt} | {measure_cells(record)} | {trace} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=["baseline"], choices=list(VARIANTS))
    parser.add_argument("--prompts", nargs="+", default=["a green cube", "a yellow cone"], choices=list(PROMPTS))
    parser.add_argument("--steps", type=int, default=TextToNerf.steps)
    parser.add_argument("--seed", type=int, default=0, help="the run's and the NeRF's seed (as the benchmark's)")
    parser.add_argument("--name", default="size_nerf", help="results file stem in --output")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--prior", type=Path, default=SHAPES_PRIOR_DIR)
    parser.add_argument("--save-nerfs", type=Path, default=None, help="also save each NeRF here (for later looks)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, codec = load_shapes_prior(directory=args.prior)
    journal = Journal(args.output / f"{args.name}.jsonl", {"steps": args.steps, "seed": args.seed})
    base = at_sparsity_10(dataclasses.replace(TextToNerf(), steps=args.steps, seed=args.seed),
                          cameras=TRAINER_CAMERAS, seed=args.seed)
    for variant in args.variants:
        for prompt in args.prompts:
            key = f"{variant} | {prompt}"
            if key in journal.done:
                continue
            save = None if args.save_nerfs is None else args.save_nerfs / (key.replace(" ", "_").replace("|", "") + ".pt")
            record = run_variant(model, codec, prompt, PROMPTS[prompt], overridden(base, VARIANTS[variant]), save)
            record["overrides"] = VARIANTS[variant]
            journal.add(key, [record])
            print(key, json.dumps({k: record[k] for k in ("silhouette_size", "auto_silhouette_size")}), flush=True)
    done = Journal(args.output / f"{args.name}.jsonl", {"steps": args.steps, "seed": args.seed}).done
    order = [v for v in VARIANTS if any(k.startswith(v + " |") for k in done)]
    table = markdown(done, order, list(PROMPTS))
    (args.output / f"{args.name}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
