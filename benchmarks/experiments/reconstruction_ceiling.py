"""What the 3D demo's NeRF can reach at all: fitted to the analytic objects' own renders, no score model.

    python benchmarks/experiments/reconstruction_ceiling.py [--targets same-view]   # -> benchmarks/results/experiments/

Issue 18 asks the distilled NeRFs for a volume ratio within 0.8-1.25, IoU 0.6 and the prompted object as the
nearest analytic one. This script separates what distillation loses from what the representation, the 32 px
renders and the measures allow: the demo's NeRF (`shapes.demo.CPU_NERF`: its hash grid, 32 samples per ray,
32 px renders from the same cameras, the same steps and learning rate) is fitted by plain supervision to
renders of the true object (`shapes.render`, the prior's own images: the object's colour under the prior's
light, on black; `VIEWS` cameras drawn once, each step takes its batch from them), with a loss on the
opacity-weighted colour and on the opacity, and no regulariser. Each fit is measured like a distilled NeRF
(`size_nerf.measure`).

`--targets same-view` asks what the prompts' view captions leave open: each render is fitted to the
object seen from another camera of the bank with the same view name ("front", "side", "back"), the only
thing about the camera a view-dependent prompt tells the prior. Rotationally symmetric objects (cone,
cylinder) lose little by it; a cube's or a house's faces turn with the azimuth. `--targets same-bin
--azimuth-bins N` does the same with N azimuth bins (the first centred on the front) in place of the view
names: how finely a caption would have to name the azimuth. `--targets any-view` fits each render to any
camera of the bank: what a prompt without a view leaves open (the benchmark's "no view prompts" row).
`--elevation-within D` keeps the targets' elevation within D degrees of the camera's, which no caption names
either.

`--render-size N` and `--samples-per-ray S` fit at another pixel size and ray sampling than the demo's 32 and 32:
whether what the fit cannot hold (the mug's hollow, its wall about one 32 px pixel thick) is the pixel size.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "benchmarks" / "experiments"))

from nfsd_core.batch.journal import Journal  # noqa: E402
from nfsd_core.nerf import NerfRepresentation, sample_cameras  # noqa: E402
from nfsd_core.nerf.rays import camera_rays  # noqa: E402
from nfsd_core.nerf.rendering import render_rays  # noqa: E402
from nfsd_core.nerf.settings import NerfSettings  # noqa: E402
from nfsd_core.nerf.shading import SHADINGS  # noqa: E402
from nfsd_core.optimize import OptimizerSettings  # noqa: E402
from nfsd_core.shapes.demo import CPU_NERF, TextToNerf  # noqa: E402
from nfsd_core.shapes.render import Scene, render_scenes  # noqa: E402
from shapes_benchmark import PROMPTS as BENCHMARK_PROMPTS  # noqa: E402
from size_nerf import MEASURE_COLUMNS, OUTPUT, PROMPTS, measure, measure_cells  # noqa: E402

BLACK = (0.0, 0.0, 0.0)
VIEWS = 128
TARGETS = ("own", "same-view", "same-bin", "any-view")


def azimuth_bins(azimuth: torch.Tensor, bins: int) -> torch.Tensor:
    """The bin [N] of each azimuth [N] in degrees, of `bins` equal bins with the first centred on 0 (the front)."""
    width = 360.0 / bins
    return torch.floor(((azimuth + width / 2) % 360.0) / width).long()


def same_view_targets(view_ids: torch.Tensor, elevation: torch.Tensor, within: float, batch: torch.Tensor,
                      generator: torch.Generator) -> torch.Tensor:
    """For each bank index in `batch`, a random bank index of the same view (`view_ids` [VIEWS]) whose
    `elevation` [VIEWS] is within `within` degrees of its own."""
    targets = []
    for index in batch.tolist():
        near = (elevation - elevation[index]).abs() <= within
        candidates = torch.nonzero((view_ids == view_ids[index]) & near).flatten()
        targets.append(candidates[torch.randint(len(candidates), (1,), generator=generator)])
    return torch.cat(targets)


def fit(settings: NerfSettings, shape: str, colour: str, steps: int, lr: float, seed: int,
        targets: str = "own", bins: int = 8, within: float = math.inf) -> NerfRepresentation:
    """The NeRF of `settings` fitted to `steps` batches of the object's renders from the settings' cameras
    (`targets` "own"), or from other cameras of the same view name ("same-view"), of the same one of
    `bins` azimuth bins ("same-bin") or of any view ("any-view"), with an elevation `within` degrees of the camera's."""
    nerf = NerfRepresentation(settings)
    adam = OptimizerSettings(lr=lr)  # the distillation's optimiser
    optimizer = torch.optim.AdamW(nerf.parameter_groups(lr), betas=adam.betas, eps=adam.eps,
                                  weight_decay=adam.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    size = settings.render_sizes[-1]
    light = settings.shading_light()
    cameras = sample_cameras(settings.cameras, VIEWS, generator)
    truth = render_scenes([Scene(shape, colour, BLACK)] * VIEWS, cameras, size)
    origins, directions = camera_rays(cameras, size, size)  # [VIEWS, size, size, 3]
    target_colour = truth.image.permute(0, 2, 3, 1)  # on black: the opacity-weighted colour
    target_opacity = truth.mask.permute(0, 2, 3, 1)
    if targets == "same-bin":
        view_ids = azimuth_bins(cameras.azimuth, bins)
    elif targets == "any-view":
        view_ids = torch.zeros(VIEWS, dtype=torch.long)
    else:
        view_ids = torch.tensor([sorted(set(cameras.views)).index(view) for view in cameras.views])
    for _ in range(steps):
        batch = torch.randint(VIEWS, (settings.batch_size,), generator=generator)
        target = (batch if targets == "own"
                  else same_view_targets(view_ids, cameras.elevation, within, batch, generator))
        rays = render_rays(nerf.field, origins[batch].reshape(-1, 3), directions[batch].reshape(-1, 3),
                           settings.samples_per_ray, generator=generator, light=light)
        loss = (F.mse_loss(rays.colour, target_colour[target].reshape(-1, 3))
                + F.mse_loss(rays.opacity, target_opacity[target].reshape(-1, 1)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return nerf.eval()


def markdown(done: dict[str, list[dict]]) -> str:
    """One row per fit: the mesh's measures at the "auto" level / at the level of the rendered silhouettes."""
    lines = [f"| fit | prompt | {MEASURE_COLUMNS} |", "|---|---|---|---|---|---|---|---|"]
    for key, (record,) in done.items():
        fitted, prompt = key.split(" | ")
        lines.append(f"| {fitted} | {prompt} | {measure_cells(record)} |")
    return "\n".join(lines) + "\n"


def benchmark_means(done: dict[str, list[dict]]) -> str:
    """Each fit whose runs cover every object of the text-to-3D benchmark, averaged as the benchmark
    averages its prompts (`shapes_benchmark.PROMPTS`: the mug and the house twice), the mesh at "auto" /
    at the level of the rendered silhouettes."""
    lines = ["| fit | volume ratio, auto / rendered level | IoU, auto / rendered level | "
             "nearest object = prompted, auto / rendered level |", "|---|---|---|---|"]
    fits = dict.fromkeys(key.split(" | ")[0] for key in done)
    for fitted in fits:
        by_shape = {PROMPTS[key.split(" | ")[1]]: records[0] for key, records in done.items()
                    if key.startswith(fitted + " | ")}
        if not all(shape in by_shape for _, shape, _ in BENCHMARK_PROMPTS):
            continue
        cells = {"volume_ratio": [], "iou": [], "nearest_object": []}
        for level in ("auto", "rendered"):
            rows = [by_shape[shape][level] for _, shape, _ in BENCHMARK_PROMPTS]
            for name in ("volume_ratio", "iou"):
                cells[name].append(f"{sum(row[name] for row in rows) / len(rows):.2f}")
            nearest = sum(row["nearest_object"] == shape for row, (_, shape, _) in zip(rows, BENCHMARK_PROMPTS))
            cells["nearest_object"].append(str(nearest))
        lines.append(f"| {fitted} | {' / '.join(cells['volume_ratio'])} | {' / '.join(cells['iou'])} | "
                     f"{' / '.join(cells['nearest_object'])} of {len(BENCHMARK_PROMPTS)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shading", nargs="+", default=["albedo"], choices=SHADINGS)
    parser.add_argument("--targets", choices=TARGETS, default="own")
    parser.add_argument("--azimuth-bins", type=int, default=8, help="with --targets same-bin")
    parser.add_argument("--elevation-within", type=float, default=math.inf, help="with --targets other than own")
    parser.add_argument("--prompts", nargs="+", default=list(PROMPTS), choices=list(PROMPTS))
    parser.add_argument("--steps", type=int, default=TextToNerf.steps)
    parser.add_argument("--render-size", type=int, default=CPU_NERF.render_sizes[-1])
    parser.add_argument("--samples-per-ray", type=int, default=CPU_NERF.samples_per_ray)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    if args.targets == "own" and not math.isinf(args.elevation_within):
        parser.error("--elevation-within applies to --targets same-view, same-bin or any-view")
    torch.set_num_threads(1)
    journal = Journal(args.output / "reconstruction_ceiling.jsonl", {"steps": args.steps, "seed": args.seed})
    target_names = {"own": "", "same-view": ", targets of the same view", "any-view": ", targets of any view",
                    "same-bin": f", targets of the same {360 / args.azimuth_bins:g} degree azimuth bin"}
    base = dataclasses.replace(CPU_NERF, occupancy=dataclasses.replace(CPU_NERF.occupancy, enabled=False),
                               render_sizes=(args.render_size,), samples_per_ray=args.samples_per_ray)
    demo_resolution = (CPU_NERF.render_sizes[-1], CPU_NERF.samples_per_ray)
    resolution = ("" if (args.render_size, args.samples_per_ray) == demo_resolution
                  else f", {args.render_size} px, {args.samples_per_ray} samples per ray")
    for shading in args.shading:
        for prompt in args.prompts:
            within = "" if math.isinf(args.elevation_within) else f", elevation within {args.elevation_within:g}"
            key = f"{shading}{resolution}{target_names[args.targets]}{within} | {prompt}"
            if key in journal.done:
                continue
            started = time.perf_counter()
            nerf = fit(dataclasses.replace(base, shading=shading), PROMPTS[prompt], prompt.split()[1], args.steps,
                       TextToNerf.lr, args.seed, args.targets, args.azimuth_bins, args.elevation_within)
            record = measure(nerf, PROMPTS[prompt])
            record["minutes"] = (time.perf_counter() - started) / 60
            journal.add(key, [record])
            auto = record["auto"]
            print(f"{key}: rendered size {record['silhouette_size']:.2f}, volume {auto['volume_ratio']:.2f}, "
                  f"IoU {auto['iou']:.2f}, nearest {auto['nearest_object']}", flush=True)
    table, means = markdown(journal.done), benchmark_means(journal.done)
    if means.count("\n") > 2:
        table += "\nOver the text-to-3D benchmark's eight prompts:\n\n" + means
    (args.output / "reconstruction_ceiling.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
