"""Noise-Free Score Distillation (NFSD) and related score-distillation rules, in plain PyTorch.

The pieces, each in its own module:
- `schedule`: the DDPM noise schedule (alpha_bar, t <-> sigma);
- `models`: score models (denoisers that predict noise) and latent codecs (VAEs);
- `guidance`: the rules (NFSD, SDS, CSD, SDS with a negative prompt; DDS and NFSD-edit for editing
  an image) and weightings;
- `timesteps`: timestep schedules and the seeded per-step noise;
- `distillation`: one distillation step, latents in, gradient out;
- `representations`: what is optimised (the latent canvas; the NeRF lives in `nerf`, the mesh texture in
  `texture`);
- `optimize` and `checkpoint`: the loop, with hooks, previews and resumable state, signed
  (`signing`) and locked while a run uses it (`folder_lock`);
- `run_folders`: a folder of many runs' checkpoints kept small (finished runs removed, the newest few kept);
- `identity`: a run's identity (every setting that decides its result), which a checkpoint must match;
- `models.diffusers`: Stable Diffusion from a local diffusers directory (optional extra);
- `preview`: a fitted linear latent -> RGB map for fast previews;
- `decomposition`: the NFSD paper's score decomposition view (delta_C, delta_D, noise);
- `sampling`: DDIM sampling with classifier-free guidance (the reference for distillation);
- `budget`, `limits`, `usage`: memory estimates, bounds of settings, errors that name the fix;
- `bounded_text`: untrusted text (JSON settings, prompts) checked and parsed within bounds;
- `image_files`: tensors to PNGs and labelled grids; `plots`: a run's curves as one picture (PIL only);
- `shipped_priors`: the miniature Stable Diffusions that ship with the package (`digits`, `shapes`);
- `digits`, `shapes`: how those priors are built and judged, and their benchmarks (not imported here);
- `cli` (`python -m nfsd_core`): generate, decompose and the offline demo from the command line.
This package never imports ComfyUI.
"""

from .bounded_text import check_text, excerpt, first_lone_surrogate, parse_json
from .budget import (StepMemory, UNetShape, VaeShape, address_space_left, bake_bytes, canvas_bytes, check_budget,
                     largest_fitting, mesh_bytes, model_call_memory, nerf_step_memory, nerf_training_bytes,
                     texture_step_memory, texture_training_bytes, texture_turntable_bytes, turntable_bytes,
                     unet_activation_bytes, vae_encode_memory)
from .checkpoint import (CheckpointError, checkpoint_key, claim_checkpoint_dir, has_checkpoint, hold_checkpoint_dir,
                         load_checkpoint, read_checkpoint, save_checkpoint)
from .decomposition import (COMPONENTS as DECOMPOSITION_COMPONENTS, ScoreDecomposition, decompose_score,
                            decomposition_image_bytes, decomposition_images)
from .digits.prior import load_digits_prior
from .distillation import (VIEW_SUFFIXES, DistillationStep, Prompts, ScoreDistillation, distillation_loss,
                           latent_mask)
from .guidance import (
    DEFAULT_NEGATIVE_PROMPT, DEFAULT_WEIGHTING, EDIT_RULES, NFSD_THRESHOLD, RULES, WEIGHTINGS, GuidanceRule,
    make_rule,
)
from .identity import identity_digest, run_identity
from .image_files import to_pil
from .limits import json_ready, setting_bounds
from .models import (
    SD_LATENT_CHANNELS, SD_PIXELS_PER_LATENT, CallableScoreModel, LatentCodec, NoiseRequest, ScoreModel,
)
from .models.diffusers import (DiffusersLatentCodec, DiffusersScoreModel, check_layout, load_diffusers,
                               vae_downscale_factor)
from .models.recompute import recompute_in_backward
from .optimize import NonFiniteParameters, OptimizerSettings, RunResult, StepRecord, history_columns, optimize
from .plots import run_curves
from .preview import LatentToRGB, fit_latent_to_rgb
from .representations import GuidanceView, LatentCanvas, RenderedRepresentation, Representation, initial_latents
from .run_folders import keep_newest_checkpoints, remove_checkpoint
from .sampling import ddim_sample
from .schedule import NoiseSchedule
from .shapes.objects import OBJECTS as SHAPE_OBJECTS, object_mesh
from .shapes.prior import load_shapes_prior
from .shipped_priors import SHIPPED_PRIORS, ShippedPrior, render_shape, shape_choices
from .timesteps import SCHEDULE_KINDS, NoiseStream, TimestepSchedule

__all__ = [
    "DECOMPOSITION_COMPONENTS",
    "DEFAULT_NEGATIVE_PROMPT",
    "DEFAULT_WEIGHTING",
    "EDIT_RULES",
    "NFSD_THRESHOLD",
    "RULES",
    "SCHEDULE_KINDS",
    "SD_LATENT_CHANNELS",
    "SD_PIXELS_PER_LATENT",
    "SHAPE_OBJECTS",
    "SHIPPED_PRIORS",
    "VIEW_SUFFIXES",
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
    "NonFiniteParameters",
    "OptimizerSettings",
    "Prompts",
    "RenderedRepresentation",
    "Representation",
    "RunResult",
    "ScoreDecomposition",
    "ScoreDistillation",
    "ScoreModel",
    "ShippedPrior",
    "StepMemory",
    "StepRecord",
    "TimestepSchedule",
    "UNetShape",
    "VaeShape",
    "address_space_left",
    "bake_bytes",
    "canvas_bytes",
    "check_budget",
    "check_layout",
    "check_text",
    "checkpoint_key",
    "claim_checkpoint_dir",
    "ddim_sample",
    "decompose_score",
    "decomposition_image_bytes",
    "decomposition_images",
    "distillation_loss",
    "excerpt",
    "first_lone_surrogate",
    "fit_latent_to_rgb",
    "has_checkpoint",
    "history_columns",
    "hold_checkpoint_dir",
    "identity_digest",
    "initial_latents",
    "json_ready",
    "keep_newest_checkpoints",
    "largest_fitting",
    "latent_mask",
    "load_checkpoint",
    "load_diffusers",
    "load_digits_prior",
    "load_shapes_prior",
    "make_rule",
    "mesh_bytes",
    "model_call_memory",
    "nerf_step_memory",
    "nerf_training_bytes",
    "object_mesh",
    "optimize",
    "parse_json",
    "read_checkpoint",
    "recompute_in_backward",
    "remove_checkpoint",
    "render_shape",
    "run_curves",
    "run_identity",
    "save_checkpoint",
    "setting_bounds",
    "shape_choices",
    "texture_step_memory",
    "texture_training_bytes",
    "texture_turntable_bytes",
    "to_pil",
    "turntable_bytes",
    "unet_activation_bytes",
    "vae_downscale_factor",
    "vae_encode_memory",
]
