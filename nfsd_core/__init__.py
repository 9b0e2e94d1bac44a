"""Noise-Free Score Distillation (NFSD) and related score-distillation rules, in plain PyTorch.

The pieces, each in its own module:
- `schedule`: the DDPM noise schedule (alpha_bar, t <-> sigma);
- `models`: score models (denoisers that predict noise) and latent codecs (VAEs);
- `guidance`: the rules (NFSD, SDS, CSD, SDS with a negative prompt) and weightings;
- `timesteps`: timestep schedules and the seeded per-step noise;
- `distillation`: one distillation step, latents in, gradient out;
- `representations`: what is optimised (the latent canvas; the NeRF lives in `nerf`);
- `optimize` and `checkpoint`: the loop, with hooks, previews and resumable state;
- `identity`: a run's identity (every setting that decides its result), which a checkpoint must match;
- `models.diffusers`: Stable Diffusion from a local diffusers directory (optional extra);
- `preview`: a fitted linear latent -> RGB map for fast previews;
- `decomposition`: the NFSD paper's score decomposition view (delta_C, delta_D, noise);
- `sampling`: DDIM sampling with classifier-free guidance (the reference for distillation);
- `digits`: the bundled miniature Stable Diffusion on handwritten digits, and its benchmark;
- `cli` (`python -m nfsd_core`): generate, decompose and the offline demo from the command line.
This package never imports ComfyUI.
"""

from .checkpoint import (CheckpointError, claim_checkpoint_dir, has_checkpoint, load_checkpoint, read_checkpoint,
                         save_checkpoint)
from .decomposition import ScoreDecomposition, decompose_score, decomposition_images
from .digits.prior import load_digits_prior
from .distillation import DistillationStep, Prompts, ScoreDistillation, distillation_loss
from .guidance import (
    DEFAULT_NEGATIVE_PROMPT, DEFAULT_WEIGHTING, NFSD_THRESHOLD, RULES, WEIGHTINGS, GuidanceRule, make_rule,
)
from .identity import identity_digest, run_identity
from .models import (
    SD_LATENT_CHANNELS, SD_PIXELS_PER_LATENT, CallableScoreModel, LatentCodec, NoiseRequest, ScoreModel,
)
from .models.diffusers import DiffusersLatentCodec, DiffusersScoreModel, load_diffusers
from .optimize import OptimizerSettings, RunResult, StepRecord, history_columns, optimize
from .preview import LatentToRGB, fit_latent_to_rgb
from .representations import GuidanceView, LatentCanvas, Representation
from .sampling import ddim_sample
from .schedule import NoiseSchedule
from .timesteps import NoiseStream, TimestepSchedule

__all__ = [
    "DEFAULT_NEGATIVE_PROMPT",
    "DEFAULT_WEIGHTING",
    "NFSD_THRESHOLD",
    "RULES",
    "SD_LATENT_CHANNELS",
    "SD_PIXELS_PER_LATENT",
    "WEIGHTINGS",
    "CallableScoreModel",
    "CheckpointError",
    "DiffusersLatentCodec",
    "DiffusersScoreModel",
    "DistillationStep",
    "GuidanceRule",
    "GuidanceView",
    "LatentCanvas",
    "LatentCodec",
    "LatentToRGB",
    "NoiseRequest",
    "NoiseSchedule",
    "NoiseStream",
    "OptimizerSettings",
    "Prompts",
    "Representation",
    "RunResult",
    "ScoreDecomposition",
    "ScoreDistillation",
    "ScoreModel",
    "StepRecord",
    "TimestepSchedule",
    "claim_checkpoint_dir",
    "ddim_sample",
    "decompose_score",
    "decomposition_images",
    "distillation_loss",
    "fit_latent_to_rgb",
    "has_checkpoint",
    "history_columns",
    "identity_digest",
    "load_checkpoint",
    "load_digits_prior",
    "load_diffusers",
    "make_rule",
    "optimize",
    "read_checkpoint",
    "run_identity",
    "save_checkpoint",
]
