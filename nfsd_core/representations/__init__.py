"""Things score distillation optimises: a latent canvas here; the NeRF lives in nfsd_core.nerf."""

from .base import GuidanceView, Representation
from .canvas import LatentCanvas, initial_latents

__all__ = ["GuidanceView", "LatentCanvas", "Representation", "initial_latents"]
