"""The 2D case: the parameters are the latent image itself."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base import GuidanceView, Representation


def initial_latents(shape: tuple[int, int, int, int], seed: int) -> Tensor:
    """Standard-normal latents [B, C, H, W] from `seed`, identical on every machine (CPU draw)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(int(seed)))


class LatentCanvas(Representation):
    """A batch of latents [B, C, H, W] optimised directly (SDS-Bridge / threestudio 2D playground)."""

    def __init__(self, latents: Tensor):
        super().__init__()
        if latents.dim() != 4:
            raise ValueError(f"latents must be [batch, channels, height, width], got shape {tuple(latents.shape)}")
        self.latents = nn.Parameter(latents.detach().clone().float())

    @classmethod
    def random(cls, batch: int, channels: int, height: int, width: int, seed: int = 0) -> "LatentCanvas":
        """A canvas of `height` x `width` latents (pixel size / the VAE's downscale factor)."""
        for name, value in (("batch", batch), ("channels", channels), ("height", height), ("width", width)):
            if value < 1:
                raise ValueError(f"canvas {name} must be at least 1, got {value}")
        return cls(initial_latents((batch, channels, height, width), seed))

    def render_for_guidance(self, step: int, steps: int, generator: torch.Generator) -> GuidanceView:
        """The latents as they are, with their RMS logged: about 1 for real images in SD's scaled
        latent space, and the first sign of a saturating run (README: "Why NFSD saturates with uniform t")."""
        latent_rms = self.latents.detach().pow(2).mean().sqrt().item()
        return GuidanceView(self.latents, stats={"latent_rms": latent_rms})

    def config(self) -> dict[str, Any]:
        return {"type": "latent_canvas", "shape": list(self.latents.shape)}
