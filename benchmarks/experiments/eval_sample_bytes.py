"""What one queried sample of an evaluation render (no graph kept) costs, against `budget.eval_sample_bytes`.

    python benchmarks/experiments/eval_sample_bytes.py   # -> benchmarks/results/experiments/eval_sample_bytes.md

Each row renders one 64 px view (4096 rays: two chunks of 2048 rays of 64 samples) of a NeRF whose occupancy
grid marks every cell occupied, without and with normals, and a mesh's density query (a 64^3 grid), in this
process with `MALLOC_MMAP_THRESHOLD_=65536` set (it re-runs itself so: freed tensors leave the resident set).
Per sample = the resident peak over the render / the samples of one chunk (131072; a few of the first chunk's
rays miss the box, so this leans low); per point = (peak - the density grid) / one query chunk. The budget's
constants were fitted to these rows: the default field, and with 8 levels or 32 hidden units.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

OUTPUT = ROOT / "benchmarks" / "results" / "experiments" / "eval_sample_bytes.md"


def measure() -> list[str]:
    import torch

    from memory_probe import CLEAN_MALLOC, peak_rss, reset_peak, rss
    from nfsd_core.budget import chunk_rays, eval_sample_bytes
    from nfsd_core.nerf import NerfRepresentation, NerfSettings, orbit_cameras
    from nfsd_core.nerf.mesh import density_grid

    assert all(os.environ.get(name) == value for name, value in CLEAN_MALLOC.items())
    torch.set_num_threads(2)
    default = NerfSettings()
    volumes = {"default": default.volume, "8 levels": dataclasses.replace(default.volume, levels=8),
               "32 hidden units": dataclasses.replace(default.volume, hidden_width=32)}
    camera = orbit_cameras(1, 15.0, 1.5, 70.0)
    chunk_samples = chunk_rays(default.samples_per_ray) * default.samples_per_ray
    lines = ["| field | normals | measured B / sample | estimate | estimate / measured |", "|---|---|---|---|---|"]
    for name, volume in volumes.items():
        nerf = NerfRepresentation(dataclasses.replace(default, volume=volume))
        nerf.occupancy.estimator.binaries.fill_(True)
        for normals in (False, True):
            start = rss()
            reset_peak()
            with torch.no_grad():
                nerf.render(camera, 64, 64, normals=normals)
            measured = (peak_rss() - start) / chunk_samples
            estimate = eval_sample_bytes(volume, normals)
            lines.append(f"| {name} | {normals} | {measured:.0f} | {estimate} | {estimate / measured:.2f} |")
        start = rss()
        reset_peak()
        with torch.no_grad():
            density_grid(nerf, 64)
        measured = (peak_rss() - start - 64**3 * 4) / chunk_rays(1)
        estimate = eval_sample_bytes(volume)
        lines.append(f"| {name} | density query (mesh) | {measured:.0f} | {estimate} | {estimate / measured:.2f} |")
        print(lines[-3:], flush=True)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    from memory_probe import CLEAN_MALLOC

    if any(os.environ.get(name) != value for name, value in CLEAN_MALLOC.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **CLEAN_MALLOC})
    lines = measure()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join([f"# {__doc__.splitlines()[0]}", "", *lines, ""]))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
