"""What texturing a generator-sized mesh costs on the CPU: the visibility pass per view against a
whole step, and baking.

    python benchmarks/texture_step.py        # -> benchmarks/results/texture_step/results.md and .json

Meshes: a bumpy sphere (marching cubes of a displaced sphere's distance, an organic surface like
Hunyuan3D's) at about 100k, 250k and 500k faces, fitted to radius 0.5 as NFSD Mesh Texture fits
it. For each: the visibility pass of one 512 x 512 view (median over random training cameras)
with Embree (embreex, and its one-off BVH build) and with the plain-PyTorch rasteriser, and how
often the two name the same triangle. Then one real training step (`optimization_step`) of the
default TextureSettings (512 px renders, RGB through the VAE, NFSD) on the middle mesh, with the
Stable Diffusion 2.1-base architecture (UNet, VAE) built with random weights in fp32 (time does not
depend on the weights), split into visibility, colour render, VAE encode, denoiser (one batched
call of 3 rows) and the rest (backward through the VAE and the field, AdamW). Last, baking each
mesh into a 2048 px texture: xatlas's unwrap, then rasterising the texels, querying the field and
filling the gutters. One thread (`--threads`); figures are seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nfsd_core import OptimizerSettings, Prompts, ScoreDistillation  # noqa: E402
from nfsd_core.nerf import CameraSettings, sample_cameras  # noqa: E402
from nfsd_core.texture import Surface, TextureRepresentation, TextureSettings, Visibility, bake_texture  # noqa: E402
from nfsd_core.timesteps import TimestepSchedule  # noqa: E402
from nerf_step import PhaseTimer  # noqa: E402
from random_models import sd21_base_models  # noqa: E402

OUTPUT = ROOT / "benchmarks" / "results" / "texture_step"
FACES = (100_000, 250_000, 500_000)
VIEW_SIZE = 512
BAKE_SIZE = 2048
PHASES = ("visibility", "render", "encode", "denoiser", "backward")


def bumpy_sphere(faces: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A displaced sphere of about `faces` triangles (y up, as a mesh file), by marching cubes slab by slab."""
    from skimage.measure import marching_cubes

    resolution = int(round((faces / 3.5) ** 0.5))
    axis = np.linspace(-1.0, 1.0, resolution, dtype=np.float32)
    x, y = np.meshgrid(axis, axis, indexing="ij")
    grid = np.empty((resolution, resolution, resolution), dtype=np.float32)
    for k, z in enumerate(axis):
        radius = np.sqrt(x * x + y * y + z * z)
        grid[:, :, k] = radius - 0.6 - 0.06 * np.sin(9 * x) * np.sin(7 * y) * np.sin(8 * z)
    vertices, triangles, _, _ = marching_cubes(grid, 0.0, spacing=(2.0 / (resolution - 1),) * 3,
                                               gradient_direction="descent")
    return torch.from_numpy(vertices - 1.0).float(), torch.from_numpy(triangles.astype(np.int64))


def timed(function, *args, **kwargs):
    """`function(*args, **kwargs)` and the seconds it took."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def visibility_figures(surface: Surface, views: int) -> dict:
    """Per-view seconds of both backends at VIEW_SIZE, Embree's build, and their agreement."""
    cameras = sample_cameras(CameraSettings(), views, torch.Generator().manual_seed(0))
    embree = Visibility(surface.vertices, surface.faces, "embree")
    _, build = timed(embree, cameras.select(0), 8, 8)  # builds the scene (and casts a tiny view)
    hits, seconds = {}, {}
    for backend, visibility in (("embree", embree), ("torch", Visibility(surface.vertices, surface.faces, "torch"))):
        per_view = []
        for index in range(views):
            result, elapsed = timed(visibility, cameras.select(index), VIEW_SIZE, VIEW_SIZE)
            per_view.append(elapsed)
            hits.setdefault(backend, []).append(result.face)
        seconds[backend] = statistics.median(per_view)
    embree_faces, torch_faces = torch.cat(hits["embree"]), torch.cat(hits["torch"])
    return {"faces": len(surface.faces), "embree_build_s": build, "embree_view_s": seconds["embree"],
            "torch_view_s": seconds["torch"], "coverage": float((torch_faces >= 0).float().mean()),
            "same_face": float((embree_faces == torch_faces).float().mean())}


def step_figures(surface: Surface, rounds: int) -> dict:
    """Median phase seconds of real training steps of the default settings on `surface`."""
    model, codec = sd21_base_models("cpu", torch.float32)
    texture = TextureRepresentation(surface, TextureSettings(visibility="embree"), codec=codec)
    prompts = Prompts.from_text(model, "a DSLR photo of a stone statue", view_dependent=True)
    # t >= 200 on every step: NFSD's dearest case, with the negative prompt evaluated.
    guidance = ScoreDistillation(model, prompts, "nfsd", timesteps=TimestepSchedule(t_min=0.2, t_max=0.98))
    optimizer = torch.optim.AdamW(texture.parameter_groups(OptimizerSettings.lr), betas=OptimizerSettings.betas,
                                  eps=OptimizerSettings.eps)
    timer = PhaseTimer(texture, guidance, lambda: None)
    timer._wrap(texture, "visibility", "visibility")
    steps = rounds + 1
    timer.step(texture, guidance, optimizer, 0, steps)  # warm-up
    measured = [timer.step(texture, guidance, optimizer, step, steps) for step in range(1, steps)]
    median = {phase: statistics.median(r.get(phase, 0.0) for r in measured) for phase in PHASES}
    return {**median, "total": sum(median.values()), "faces": len(surface.faces)}


def bake_figures(surface: Surface, vertices: torch.Tensor) -> dict:
    """Seconds of each stage of baking `surface`'s (untrained) texture into BAKE_SIZE px with xatlas."""
    texture = TextureRepresentation(surface, TextureSettings())
    start, ends = time.perf_counter(), []
    bake_texture(texture, vertices, BAKE_SIZE, "xatlas", progress=lambda done, of: ends.append(time.perf_counter()))
    unwrap, rasterise, colour, fill = np.diff([start, *ends])
    return {"faces": len(surface.faces), "unwrap_s": unwrap, "rasterise_s": rasterise, "colour_s": colour,
            "fill_s": fill, "total_s": ends[-1] - start}


def markdown(results: dict) -> str:
    lines = [f"Visibility of one {VIEW_SIZE} x {VIEW_SIZE} view (median over {results['views']} random training "
             "cameras), seconds:", "",
             "| faces | Embree build (once) | Embree per view | torch rasteriser per view | pixels on the mesh | "
             "same triangle |", "|---|---|---|---|---|---|"]
    for row in results["visibility"]:
        lines.append(f"| {row['faces']:,} | {row['embree_build_s']:.2f} | {row['embree_view_s']:.3f} | "
                     f"{row['torch_view_s']:.3f} | {row['coverage']:.0%} | {row['same_face']:.2%} |")
    if results.get("step"):
        step = results["step"]
        lines += ["", f"One training step of the default settings on {step['faces']:,} faces (SD 2.1-base "
                  f"architecture, fp32, random weights; median of {results['rounds']} steps), seconds:", "",
                  "| " + " | ".join(PHASES) + " | total | visibility / total |",
                  "|" + "---|" * (len(PHASES) + 2)]
        lines.append("| " + " | ".join(f"{step[phase]:.2f}" for phase in PHASES)
                     + f" | {step['total']:.2f} | {step['visibility'] / step['total']:.1%} |")
    if results.get("bake"):
        lines += ["", f"Baking into a {BAKE_SIZE} px texture (xatlas), seconds:", "",
                  "| faces | unwrap | rasterise texels | colours | fill gutters | in all |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {row['faces']:,} | {row['unwrap_s']:.1f} | {row['rasterise_s']:.1f} | {row['colour_s']:.1f} | "
                  f"{row['fill_s']:.1f} | {row['total_s']:.1f} |" for row in results["bake"]]
    return "\n".join(lines) + "\n"


def write(results: dict, output: Path) -> None:
    """Save what is measured so far (a run stopped during the slow bakes keeps the rest)."""
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.json").write_text(json.dumps(results, indent=1))
    (output / "results.md").write_text(markdown(results))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=int, nargs="+", default=list(FACES))
    parser.add_argument("--views", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="measured training steps (after one warm-up)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-step", action="store_true", help="skip the training step (no SD-sized models)")
    parser.add_argument("--no-bake", action="store_true")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    meshes = {}
    for faces in args.faces:
        vertices, triangles = bumpy_sphere(faces)
        meshes[faces] = (vertices, Surface.from_mesh(vertices, triangles, fit_radius=0.5))
    results = {"threads": args.threads, "views": args.views, "rounds": args.rounds, "torch": torch.__version__,
               "visibility": [visibility_figures(surface, args.views) for _, surface in meshes.values()]}
    write(results, args.output)
    middle = sorted(meshes)[len(meshes) // 2]
    if not args.no_step:
        with torch.random.fork_rng():
            results["step"] = step_figures(meshes[middle][1], args.rounds)
        write(results, args.output)
    if not args.no_bake:
        results["bake"] = []
        for vertices, surface in meshes.values():
            results["bake"].append(bake_figures(surface, vertices))
            write(results, args.output)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
