"""Stripes on large turntables: how much detail a NeRF trained at 32 px shows at 4x and 8x that size.

    python benchmarks/experiments/turntable_stripes.py     # -> benchmarks/results/experiments/turntable_stripes.{json,md,png}

Each variant distils one prompt with the demo's run (`shapes.demo.TextToNerf`) changed in one way, then
renders a turntable (8 frames at the evaluation camera) at 32, 128 and 256 px, with the samples per ray the
NeRF was trained with and with 4 times as many. The measure (issue 18): the high-frequency energy of a
large turntable against the 32 px one upsampled, mean((F_large - bilinear(F_32))^2), inside the object
(pixels whose opacity exceeds 0.99 at the large size and in every pixel around them; object edges are
sharper at any larger size and are left out). The analytic object, rendered the same way, is the floor:
its shading is smooth, so what a NeRF adds above it is stripes and speckle. The PNG shows every variant's
first four 256 px frames.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from nfsd_core.batch.journal import Journal  # noqa: E402
from nfsd_core.image_files import save_grid  # noqa: E402
from nfsd_core.nerf import NerfRepresentation, orbit_cameras, render_turntable  # noqa: E402
from nfsd_core.shapes.demo import TextToNerf, text_to_nerf  # noqa: E402
from nfsd_core.shapes.prior import SHAPES_PRIOR_DIR, load_shapes_prior  # noqa: E402
from nfsd_core.shapes.render import Scene, render_scenes  # noqa: E402
from size_nerf import at_sparsity_10, overridden  # noqa: E402

OUTPUT = ROOT / "benchmarks" / "results" / "experiments"
PROMPT, SHAPE, COLOUR = "a green cube", "cube", "green"
VARIANTS: dict[str, dict] = {
    "12 levels, finest 512": {"nerf": {"volume": {"levels": 12, "finest_resolution": 512}}},
    "12 levels, finest 128": {"nerf": {"volume": {"levels": 12, "finest_resolution": 128}}},
    "8 levels, finest 128": {"nerf": {"volume": {"levels": 8, "finest_resolution": 128}}},
    "6 levels, finest 64": {"nerf": {"volume": {"levels": 6, "finest_resolution": 64}}},
    "12 levels, finest 64": {"nerf": {"volume": {"levels": 12, "finest_resolution": 64}}},
}
FRAMES = 8
SIZES = (128, 256)
EVAL_SAMPLE_FACTORS = (1, 4)
INTERIOR = 5  # pixels around an interior pixel that must be inside too (a 5x5 neighbourhood)


def with_samples(nerf: NerfRepresentation, factor: int) -> NerfRepresentation:
    """The same NeRF rendering `factor` times as many samples per ray."""
    if factor == 1:
        return nerf
    settings = dataclasses.replace(nerf.settings, samples_per_ray=nerf.settings.samples_per_ray * factor)
    clone = NerfRepresentation(settings, codec=nerf.codec)
    clone.load_state_dict(nerf.state_dict())
    return clone


def truth_turntable(size: int, settings) -> tuple[torch.Tensor, torch.Tensor]:
    cameras = orbit_cameras(FRAMES, settings.eval_elevation, settings.eval_distance, settings.eval_fovy)
    render = render_scenes([Scene(SHAPE, COLOUR, (1.0, 1.0, 1.0))] * FRAMES, cameras, size, supersample=2)
    return render.image, render.mask


def high_frequency(frames: torch.Tensor, opacity: torch.Tensor, small: torch.Tensor) -> float:
    """mean((frames - bilinear(small))^2) over interior pixels; frames [N, 3, S, S], opacity [N, 1, S, S]."""
    size = frames.shape[-1]
    upsampled = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    interior = -F.max_pool2d(-(opacity > 0.99).float(), INTERIOR, stride=1, padding=INTERIOR // 2) > 0.5
    residual = ((frames - upsampled) ** 2).mean(dim=1, keepdim=True)
    return float(residual[interior].mean()) if interior.any() else float("nan")


@torch.no_grad()
def measure(nerf: NerfRepresentation) -> tuple[dict, torch.Tensor]:
    """High-frequency energies per (size, sample factor), and 256 px frames [4, 3, 256, 256] per factor."""
    record, pictures = {}, []
    small = render_turntable(nerf, frames=FRAMES, size=32).colour.permute(0, 3, 1, 2)
    for factor in EVAL_SAMPLE_FACTORS:
        renderer = with_samples(nerf, factor)
        for size in SIZES:
            turntable = render_turntable(renderer, frames=FRAMES, size=size)
            frames = turntable.colour.permute(0, 3, 1, 2)
            record[f"{size} px, samples x{factor}"] = high_frequency(frames, turntable.opacity.permute(0, 3, 1, 2),
                                                                     small)
            if size == SIZES[-1]:
                pictures.append(frames[:4])
    return record, torch.stack(pictures)


def markdown(done: dict, floor: dict) -> str:
    keys = list(floor)
    lines = ["| variant | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys),
             "| analytic object (floor) | " + " | ".join(f"{floor[k]:.5f}" for k in keys) + " |"]
    for variant, records in done.items():
        record = records[0]
        lines.append(f"| {variant} | " + " | ".join(f"{record[k]:.5f} ({record[k] / floor[k]:.1f}x)" for k in keys)
                     + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=TextToNerf.steps)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--prior", type=Path, default=SHAPES_PRIOR_DIR)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, codec = load_shapes_prior(directory=args.prior)
    journal = Journal(args.output / "turntable_stripes.jsonl", {"steps": args.steps, "prompt": PROMPT})
    pictures_dir = args.output / "turntable_stripes_frames"
    pictures_dir.mkdir(parents=True, exist_ok=True)
    base = at_sparsity_10(dataclasses.replace(TextToNerf(), steps=args.steps))  # as it was measured
    for variant in args.variants:
        if variant in journal.done:
            continue
        nerf = text_to_nerf(model, codec, PROMPT, overridden(base, VARIANTS[variant]))
        record, pictures = measure(nerf)
        torch.save(pictures, pictures_dir / f"{list(VARIANTS).index(variant)}.pt")
        record["overrides"] = VARIANTS[variant]
        journal.add(variant, [record])
        print(variant, json.dumps(record), flush=True)
    settings = TextToNerf().nerf.cameras
    small_truth, _ = truth_turntable(32, settings)
    floor = {}
    for size in SIZES:
        frames, mask = truth_turntable(size, settings)
        for factor in EVAL_SAMPLE_FACTORS:
            floor[f"{size} px, samples x{factor}"] = high_frequency(frames, mask, small_truth)
    done = {v: journal.done[v] for v in VARIANTS if v in journal.done}
    (args.output / "turntable_stripes.md").write_text(markdown(done, floor))
    rows = [torch.load(pictures_dir / f"{list(VARIANTS).index(v)}.pt") for v in done]  # [factors, 4, 3, S, S]
    grid = torch.stack([row[i] for row in rows for i in range(len(EVAL_SAMPLE_FACTORS))])
    save_grid(grid, args.output / "turntable_stripes.png",
              row_labels=[f"{v}, samples x{f}" for v in done for f in EVAL_SAMPLE_FACTORS])
    print(markdown(done, floor))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
