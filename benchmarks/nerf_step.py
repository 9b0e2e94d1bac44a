"""Where one text-to-NeRF step spends its time: render, encode, denoiser, backward (+ AdamW).

CPU mode (default): threestudio-sized NeRF (hash grid 16 x 2^19, 64 samples per ray), renders of
64 x 64 px, encoded by a tiny random AutoencoderKL at `--guidance-size` px, guided by NFSD
through a tiny random UNet on the project's diffusers backend. It prints the median time of
each phase and the ratio (render + encode) / denoiser (target < 1).

`--full-size` (needs a CUDA GPU; written for one, not run on the CPU machines of this project):
the Stable Diffusion 2.1-base architecture (UNet, VAE, CLIP text encoder) with random weights in
fp16, and the NeRF's default schedule; it prints steps per second and peak GPU memory at the
64 px stage and at the high-resolution stage (target < 8 GB at 64 px).

    python benchmarks/nerf_step.py [--rounds 5] [--threads 1] [--colour rgb|latent] [--guidance-size 512]
    python benchmarks/nerf_step.py --full-size [--rounds 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nfsd_core import NoiseSchedule, OptimizerSettings, Prompts, ScoreDistillation  # noqa: E402
from nfsd_core.models.diffusers import DiffusersLatentCodec, DiffusersScoreModel  # noqa: E402
from nfsd_core.nerf import NerfRepresentation, NerfSettings  # noqa: E402
from nfsd_core.optimize import optimization_step  # noqa: E402
from nfsd_core.timesteps import TimestepSchedule  # noqa: E402
from random_models import byte_tokenizer, random_models  # noqa: E402

PROMPT = "a DSLR photo of a hamburger"
PHASES = ("render", "encode", "denoiser", "backward")
GPU_MEMORY_TARGET_GB = 8.0


def sd21_base_models(device: str, dtype: torch.dtype):
    """Stable Diffusion 2.1-base's UNet, VAE and text encoder architectures with random weights."""
    import diffusers
    import transformers

    unet = diffusers.UNet2DConditionModel(
        sample_size=64, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
        block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    )
    vae = diffusers.AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.18215,
    )
    text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=514, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
        max_position_embeddings=77, hidden_act="gelu", bos_token_id=512, eos_token_id=513,
    ))
    model = DiffusersScoreModel(unet, text_encoder, byte_tokenizer(), NoiseSchedule.scaled_linear(),
                                dtype=dtype, device=device)
    return model, DiffusersLatentCodec(vae, dtype=dtype, device=device)


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

    def __init__(self, nerf, guidance, synchronize):
        self.synchronize = synchronize
        self.times: dict[str, float] = {}
        self.wrapped: list[tuple[object, str]] = []
        self._wrap(nerf, "render", "render")
        self._wrap(nerf, "latents_for_guidance", "encode")
        self._wrap(guidance.model, "predict_noise", "denoiser")

    def _wrap(self, owner, method: str, phase: str) -> None:
        original = getattr(owner, method)

        def timed(*args, **kwargs):
            self.synchronize()
            start = time.perf_counter()
            output = original(*args, **kwargs)
            self.synchronize()
            self.times[phase] = self.times.get(phase, 0.0) + time.perf_counter() - start
            return output

        setattr(owner, method, timed)
        self.wrapped.append((owner, method))

    def restore(self) -> None:
        """Put the wrapped methods back (they are instance attributes shadowing the class's)."""
        for owner, method in self.wrapped:
            delattr(owner, method)

    def step(self, nerf, guidance, optimizer, step: int, steps: int) -> dict[str, float]:
        """Phase times of one step; "backward" is the rest: backward, AdamW, noise, regularisers."""
        self.times = {}
        self.synchronize()
        start = time.perf_counter()
        optimization_step(nerf, guidance, optimizer, step, steps)
        self.synchronize()
        total = time.perf_counter() - start
        return {**self.times, "backward": total - sum(self.times.values())}


def cpu_benchmark(args) -> None:
    torch.set_num_threads(args.threads)
    model, codec = random_models()
    settings = NerfSettings(colour=args.colour, render_sizes=(args.size,), size_milestones=(),
                            guidance_size=args.guidance_size)
    nerf, guidance, optimizer = make_run(model, codec, settings, "cpu")
    timer = PhaseTimer(nerf, guidance, lambda: None)
    steps = args.rounds + 2
    for step in range(2):  # warm-up (the first occupancy update and first autograd calls)
        timer.step(nerf, guidance, optimizer, step, steps)
    rounds = [timer.step(nerf, guidance, optimizer, step, steps) for step in range(2, steps)]
    median = {phase: statistics.median(r[phase] for r in rounds) for phase in PHASES}
    latent = settings.guidance_size // 8
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.colour} NeRF rendered at {args.size}x{args.size}, "
          f"{settings.samples_per_ray} samples/ray, codec at {settings.guidance_size} px -> latents 4x{latent}x{latent}; "
          f"tiny random UNet/VAE; NFSD (3 rows); median of {args.rounds} steps (wall seconds)")
    print("  " + "  ".join(f"{phase} {median[phase]:.3f}" for phase in PHASES)
          + f"  total {sum(median.values()):.3f}")
    ratio = (median["render"] + median["encode"]) / median["denoiser"]
    print(f"  (render + encode) / denoiser = {ratio:.2f} (target < 1: {'OK' if ratio < 1 else 'ABOVE TARGET'})")


def gpu_benchmark(args) -> None:
    if not torch.cuda.is_available():
        raise SystemExit("--full-size needs a CUDA GPU (the full SD 2.1-base models in fp16)")
    model, codec = sd21_base_models("cuda", torch.float16)
    settings = NerfSettings(colour=args.colour)
    steps = 1000
    stages = {f"{size} px": round(milestone * steps)
              for size, milestone in zip(settings.render_sizes, (0.0,) + settings.size_milestones)}
    print(f"{torch.cuda.get_device_name()}, SD 2.1-base architecture, random weights, fp16; {args.colour} NeRF with "
          f"default settings ({settings.samples_per_ray} samples/ray, codec at {settings.guidance_size} px); NFSD")
    for stage, first_step in stages.items():
        nerf, guidance, optimizer = make_run(model, codec, settings, "cuda")
        timer = PhaseTimer(nerf, guidance, torch.cuda.synchronize)
        for step in range(first_step, first_step + 2):  # warm-up
            timer.step(nerf, guidance, optimizer, step, steps)
        torch.cuda.reset_peak_memory_stats()
        rounds = [timer.step(nerf, guidance, optimizer, step, steps)
                  for step in range(first_step + 2, first_step + 2 + args.rounds)]
        median = {phase: statistics.median(r[phase] for r in rounds) for phase in PHASES}
        peak = torch.cuda.max_memory_allocated() / 2**30
        line = "  ".join(f"{phase} {median[phase] * 1000:.1f} ms" for phase in PHASES)
        verdict = "" if first_step else f" (target < {GPU_MEMORY_TARGET_GB:g} GB: " + (
            "OK)" if peak < GPU_MEMORY_TARGET_GB else "ABOVE TARGET)")
        print(f"  {stage}: {1 / sum(median.values()):.2f} steps/s  peak {peak:.2f} GB{verdict}  [{line}]")
        timer.restore()
        del nerf, guidance, optimizer, timer
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the CPU mode")
    parser.add_argument("--colour", choices=("rgb", "latent"), default="rgb")
    parser.add_argument("--size", type=int, default=64, help="render size in pixels (CPU mode)")
    parser.add_argument("--guidance-size", type=int, default=512, help="pixels the codec encodes (CPU mode)")
    parser.add_argument("--full-size", action="store_true", help="SD 2.1-base architecture on a CUDA GPU")
    args = parser.parse_args()
    (gpu_benchmark if args.full_size else cpu_benchmark)(args)


if __name__ == "__main__":
    main()
