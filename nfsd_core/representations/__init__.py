"""Things score distillation optimises: a latent canvas here; the NeRF lives in nfsd_core.nerf and the
mesh texture in nfsd_core.texture, both `RenderedRepresentation`s (images from cameras)."""

from .base import GuidanceView, Representation
from .canvas import LatentCanvas, initial_latents
from .rendered import RenderedRepresentation

__all__ = ["GuidanceView", "LatentCanvas", "RenderedRepresentation", "Representation", "initial_latents"]
