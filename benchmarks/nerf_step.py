"""Where one text-to-NeRF step spends its time: render, encode, denoiser, backward (+ AdamW).

CPU mode (default): threestudio-sized NeRF (hash grid 16 x 2^19, 64 samples per ray), renders of
64 x 64 px, encoded by a tiny random AutoencoderKL at `--guidance-size` px, guided by NFSD
through a tiny random UNet on the project's diffusers backend. It prints the median time of
each phase and the ratio (render + encode) / denoiser (target < 1).

Real sizes (SD 1.5, 2.1, SDXL; memory and time per stage) are benchmarks/real_size.py's.

`--recompute both` alternates steps with the render recomputed in backward (NerfRepresentation.recompute,
what bounds the render's memory at real sizes) and with its activations kept, and prints the ratio of
their medians: both see the same machine at the same time, so a shared CPU's noise falls on both.

    python benchmarks/nerf_step.py [--rounds 5] [--threads 1] [--colour rgb|latent] [--guidance-size 512] \
        [--recompute on|off|both]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from torchvision_stub import hide_torchvision_stub  # noqa: E402

hide_torchvision_stub()  # an import-only torchvision (this CPU venv's) would break diffusers' imports

from nfsd_core import OptimizerSettings, Prompts, ScoreDistillation  # noqa: E402
from nfsd_core.nerf import NerfRepresentation, NerfSettings  # noqa: E402
from nfsd_core.optimize import optimization_step  # noqa: E402
from nfsd_core.timesteps import TimestepSchedule  # noqa: E402
from random_models import random_models  # noqa: E402

PROMPT = "a DSLR photo of a hamburger"
PHASES = ("render", "encode", "denoiser", "backward")


def make_run(model, codec, settings: NerfSettings, device: str):
    nerf = NerfRepresentation(settings, codec=codec).to(device)
    prompts = Prompts.from_text(model, PROMPT, view_dependent=True)
    # t >= 200 on every step: NFSD's dearest case, with the negative prompt evaluated.
    guidance = ScoreDistillation(model, prompts, "nfsd", timesteps=TimestepSchedule(t_min=0.2, t_max=0.98))
    optimizer = torch.optim.AdamW(nerf.parameter_groups(OptimizerSettings.lr), betas=OptimizerSettings.betas,
                                  eps=OptimizerSettings.eps)
    return nerf, guidance, optimizer


class PhaseTimer:
    """Times the phases of the real `optimization_step` by wrapping the calls that make them."""

    def __init__(self, nerf, guidance):
        self.times: dict[str, float] = {}
        self._wrap(nerf, "render", "render")
        self._wrap(nerf, "latents_for_guidance", "encode")
        self._wrap(guidance.model, "predict_noise", "denoiser")

    def _wrap(self, owner, method: str, phase: str) -> None:
        original = getattr(owner, method)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            output = original(*args, **kwargs)
            self.times[phase] = self.times.get(phase, 0.0) + time.perf_counter() - start
            return output

        setattr(owner, method, timed)

    def step(self, nerf, guidance, optimizer, step: int, steps: int) -> dict[str, float]:
        """Phase times of one step; "backward" is the rest: backward, AdamW, noise, regularisers."""
        self.times = {}
        start = time.perf_counter()
        optimization_step(nerf, guidance, optimizer, step, steps)
        total = time.perf_counter() - start
        return {**self.times, "backward": total - sum(self.times.values())}


def cpu_benchmark(args) -> None:
    torch.set_num_threads(args.threads)
    model, codec = random_models()
    settings = NerfSettings(colour=args.colour, render_sizes=(args.size,), size_milestones=(),
                            guidance_size=args.guidance_size)
    nerf, guidance, optimizer = make_run(model, codec, settings, "cpu")
    timer = PhaseTimer(nerf, guidance)
    modes = {"on": (True,), "off": (False,), "both": (True, False)}[args.recompute]
    steps = (args.rounds + 2) * len(modes)
    step = 0
    for _ in range(2):  # warm-up (the first occupancy update and first autograd calls)
        for recompute in modes:
            nerf.recompute = recompute
            timer.step(nerf, guidance, optimizer, step, steps)
            step += 1
    rounds: dict[bool, list[dict[str, float]]] = {recompute: [] for recompute in modes}
    for _ in range(args.rounds):  # the modes alternate, step after step
        for recompute in modes:
            nerf.recompute = recompute
            rounds[recompute].append(timer.step(nerf, guidance, optimizer, step, steps))
            step += 1
    latent = settings.guidance_size // 8
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.colour} NeRF rendered at {args.size}x{args.size}, "
          f"{settings.samples_per_ray} samples/ray, codec at {settings.guidance_size} px -> latents 4x{latent}x{latent}; "
          f"tiny random UNet/VAE; NFSD (3 rows); median of {args.rounds} steps (wall seconds)")
    medians = {}
    for recompute, measured in rounds.items():
        median = medians[recompute] = {phase: statistics.median(r[phase] for r in measured) for phase in PHASES}
        print(f"  render recomputed in backward: {'yes' if recompute else 'no '}  "
              + "  ".join(f"{phase} {median[phase]:.3f}" for phase in PHASES) + f"  total {sum(median.values()):.3f}")
        ratio = (median["render"] + median["encode"]) / median["denoiser"]
        print(f"    (render + encode) / denoiser = {ratio:.2f} (target < 1: {'OK' if ratio < 1 else 'ABOVE TARGET'})")
    if len(medians) == 2:
        print("  recomputed / kept: " + "  ".join(
            f"{phase} {medians[True][phase] / medians[False][phase]:.2f}" for phase in ("render", "backward"))
              + f"  step {sum(medians[True].values()) / sum(medians[False].values()):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--colour", choices=("rgb", "latent"), default="rgb")
    parser.add_argument("--size", type=int, default=64, help="render size in pixels")
    parser.add_argument("--guidance-size", type=int, default=512, help="pixels the codec encodes")
    parser.add_argument("--recompute", choices=("on", "off", "both"), default="on",
                        help="the render recomputed in backward (the default), its activations kept, or both, alternating")
    args = parser.parse_args()
    cpu_benchmark(args)


if __name__ == "__main__":
    main()
