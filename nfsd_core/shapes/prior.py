"""The shipped 3D reference prior: a miniature Stable Diffusion of rendered objects.

`load_shapes_prior()` hands its directory to the diffusers backend like any SD model (32x32 RGB
images, 4 x 8 x 8 latents). This module is all that `import nfsd_core` loads of the shapes
package.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..models.diffusers import DiffusersLatentCodec, DiffusersScoreModel, load_diffusers

SHAPES_PRIOR_DIR = Path(__file__).resolve().parent.parent / "assets" / "shapes_prior"


def load_shapes_prior(
    device: str | torch.device = "cpu", dtype: str | torch.dtype = "fp32", directory: str | Path = SHAPES_PRIOR_DIR
) -> tuple[DiffusersScoreModel, DiffusersLatentCodec]:
    """The prior's score model and VAE codec."""
    return load_diffusers(directory, dtype, device)
