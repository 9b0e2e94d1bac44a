"""`python -m nfsd_core demo3d`: text to NeRF on the 3D reference prior, on a CPU in minutes.

The prompt ("a red mug") is distilled into a small RGB NeRF with view-dependent prompts
("a red mug, side view", the prior's own captions) and the prior's VAE; then a turntable
(a PNG strip and an animated WEBP) and a GLB mesh with vertex colours are written, and the
benchmark's judge says what it sees in the turntable. Settings are sized for a CPU: 32 px
renders (the prior's images), 32 samples per ray, two cameras per step, a 12-level hash grid,
and the maximum timestep annealed from 0.98 to 0.5 half-way. The training cameras
(`shapes.data.SHAPE_CAMERAS`) all frame one half-height at the origin, so the object is seen at one
size (issue 18: cameras drawn like the prior's data make it about 1.3x too large).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from ..distillation import Prompts, ScoreDistillation
from ..nerf import NerfRepresentation, NerfSettings, export_mesh, extract_mesh, render_turntable
from ..nerf.background import BackgroundSettings
from ..nerf.field import VolumeSettings
from ..optimize import OptimizerSettings, StepRecord, optimize
from ..timesteps import TimestepSchedule
from ..usage import UsageError
from .data import SHAPE_CAMERAS

CPU_NERF = NerfSettings(
    latent_downscale=4,
    samples_per_ray=32,
    render_sizes=(32,),
    size_milestones=(),
    guidance_size=32,
    batch_size=2,
    volume=VolumeSettings(levels=12, log2_table_size=15, finest_resolution=512),
    background=BackgroundSettings(kind="random"),
    cameras=SHAPE_CAMERAS,
)
CPU_TIMESTEPS = TimestepSchedule(t_max=0.98, t_max_end=0.5, anneal_at=0.5)


@dataclass(frozen=True)
class TextToNerf:
    """One distillation run: the rule and its scale, steps, learning rate, view prompts, seed."""

    rule: str = "nfsd"
    scale: float | None = None  # the rule's default
    steps: int = 600
    lr: float = 0.01
    view_prompts: bool = True
    seed: int = 0
    nerf: NerfSettings = CPU_NERF
    timesteps: TimestepSchedule = CPU_TIMESTEPS


def text_to_nerf(model, codec, prompt: str, run: TextToNerf,
                 on_step: Callable[[StepRecord], None] | None = None) -> NerfRepresentation:
    """Distil `prompt` into a fresh NeRF; the same `run` gives the same NeRF (cameras, t and
    noise drawn from `run.seed`, the NeRF's weights from `run.nerf.seed`)."""
    prompts = Prompts.from_text(model, prompt, view_dependent=run.view_prompts)
    guidance = ScoreDistillation(model, prompts, run.rule, scale=run.scale, seed=run.seed, timesteps=run.timesteps)
    nerf = NerfRepresentation(run.nerf, codec=codec)
    optimize(nerf, guidance, run.steps, OptimizerSettings(lr=run.lr), on_step=on_step)
    return nerf


def save_turntable(nerf: NerfRepresentation, directory: Path, frames: int, size: int) -> torch.Tensor:
    """Write turntable.png (the frames side by side) and turntable.webp (animated); returns the
    frames as images [N, 3, size, size] in [0, 1]."""
    from PIL import Image

    colour = render_turntable(nerf, frames=frames, size=size).colour  # [N, H, W, 3]
    pictures = [Image.fromarray((frame.clamp(0, 1) * 255).round().byte().numpy()) for frame in colour]
    strip = Image.new("RGB", (size * frames, size))
    for index, picture in enumerate(pictures):
        strip.paste(picture, (index * size, 0))
    strip.save(directory / "turntable.png")
    pictures[0].save(directory / "turntable.webp", save_all=True, append_images=pictures[1:], duration=120, loop=0,
                     lossless=True)
    return colour.permute(0, 3, 1, 2)


def add_demo3d(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo3d", help="text to NeRF, turntable and mesh on the 3D reference prior",
                                   description=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--prompt", default="a red mug", help='an object and colour the prior knows, e.g. "a blue '
                        'house"; view suffixes are added per camera')
    parser.add_argument("--rule", default="nfsd", choices=("nfsd", "sds", "csd", "sds_negative"))
    parser.add_argument("--steps", type=int, default=TextToNerf.steps)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=16, help="turntable frames")
    parser.add_argument("--prior", type=Path, default=None, help="a prior directory (default: the shipped one)")
    parser.add_argument("--output", type=Path, default=Path("outputs/demo3d"))
    parser.set_defaults(handler=run_demo3d)


def run_demo3d(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .evaluator import load_shapes_judge
    from .prior import SHAPES_PRIOR_DIR, load_shapes_prior

    prior = SHAPES_PRIOR_DIR if args.prior is None else args.prior
    if not (prior / "model_index.json").is_file():
        raise UsageError(f"--prior: no 3D prior in {prior}; train one with "
                         "`python -m nfsd_core.shapes.training --output DIR` and pass --prior DIR")
    model, codec = load_shapes_prior(directory=prior)
    run = replace(TextToNerf(), rule=args.rule, steps=args.steps, seed=args.seed)
    args.output.mkdir(parents=True, exist_ok=True)
    with tqdm(total=run.steps, desc="text to NeRF", unit="step", dynamic_ncols=True) as bar:
        nerf = text_to_nerf(model, codec, args.prompt, run, on_step=lambda record: bar.update())
    frames = save_turntable(nerf, args.output, args.frames, size=32)
    mesh = extract_mesh(nerf, resolution=96)
    export_mesh(mesh, args.output / "mesh.glb")
    judged = load_shapes_judge(prior).predict(frames)
    report = {"prompt": args.prompt, "rule": args.rule, "steps": run.steps, "seed": run.seed,
              "judge": {name: max(set(names), key=names.count) for name, names in judged.items() if name != "view"},
              "mesh": {"vertices": len(mesh.vertices), "faces": len(mesh.faces)}}
    (args.output / "run.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report["judge"]), f"\nwrote {args.output}/turntable.png, turntable.webp, mesh.glb, run.json")
    return 0
