"""The shipped digits prior: a miniature Stable Diffusion directory inside the package.

`load_digits_prior()` hands the directory to the diffusers backend like any SD model, so the
prior runs wherever diffusers and transformers are installed (no scikit-learn, no download).
This module is all that `import nfsd_core` loads of the digits package: the training, the
evaluator and the benchmark's metrics are imported only by those who use them.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..models.diffusers import DiffusersLatentCodec, DiffusersScoreModel, load_diffusers

DIGITS_PRIOR_DIR = Path(__file__).resolve().parent.parent / "assets" / "digits_prior"


def load_digits_prior(
    device: str | torch.device = "cpu", dtype: str | torch.dtype = "fp32", directory: str | Path = DIGITS_PRIOR_DIR
) -> tuple[DiffusersScoreModel, DiffusersLatentCodec]:
    """The prior's score model and VAE codec (latents [B, 4, 8, 8] <-> images [B, 3, 32, 32])."""
    return load_diffusers(directory, dtype, device)

