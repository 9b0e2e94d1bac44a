"""Noise-Free Score Distillation (NFSD) and related score-distillation rules, in plain PyTorch.

The pieces, each in its own module:
- `schedule`: the DDPM noise schedule (alpha_bar, t <-> sigma);
- `models`: score models (denoisers that predict noise) and latent codecs (VAEs);
- `guidance`: the rules (NFSD, SDS, CSD, SDS with a negative prompt) and weightings;
- `timesteps`: timestep schedules and the seeded per-step noise;
- `distillation`: one distillation step, latents in, gradient out;
- `representations`: what is optimised (the latent canvas; the NeRF lives in `nerf`);
- `optimize` and `checkpoint`: the loop, with hooks, previews and resumable state.
This package never imports ComfyUI.
"""

from .checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from .distillation import DistillationStep, Prompts, ScoreDistillation, distillation_loss
from .guidance import DEFAULT_NEGATIVE_PROMPT, RULES, WEIGHTINGS, GuidanceRule, make_rule
from .models import CallableScoreModel, LatentCodec, NoiseRequest, ScoreModel
from .optimize import OptimizerSettings, RunResult, StepRecord, optimize
from .representations import GuidanceView, LatentCanvas, Representation
from .schedule import NoiseSchedule
from .timesteps import NoiseStream, TimestepSchedule

__all__ = [
    "DEFAULT_NEGATIVE_PROMPT",
    "RULES",
    "WEIGHTINGS",
    "CallableScoreModel",
    "DistillationStep",
    "GuidanceRule",
    "GuidanceView",
    "LatentCanvas",
    "LatentCodec",
    "NoiseRequest",
    "NoiseSchedule",
    "NoiseStream",
    "OptimizerSettings",
    "Prompts",
    "Representation",
    "RunResult",
    "ScoreDistillation",
    "ScoreModel",
    "StepRecord",
    "TimestepSchedule",
    "distillation_loss",
    "has_checkpoint",
    "load_checkpoint",
    "make_rule",
    "optimize",
    "save_checkpoint",
]
