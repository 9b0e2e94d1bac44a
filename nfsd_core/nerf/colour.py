"""Latent colours to RGB without the VAE: a linear map, as ComfyUI's latent previews do.

ComfyUI's `latent_format.latent_rgb_factors` [C, 3] (and optional `latent_rgb_factors_bias`
[3]) map a latent to RGB in about [-1, 1]; `(rgb + 1) / 2` clamped gives colours in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class LatentToRGB:
    """`factors` [C, 3] and `bias` [3] (zeros if None) of the linear map latent -> RGB in [-1, 1]."""

    factors: Tensor
    bias: Tensor | None = None

    def __post_init__(self):
        factors = torch.as_tensor(self.factors, dtype=torch.float32)
        if factors.dim() != 2 or factors.shape[1] != 3:
            raise ValueError(f"latent-to-RGB factors must be [latent channels, 3], got shape {tuple(factors.shape)}")
        object.__setattr__(self, "factors", factors)
        bias = torch.zeros(3) if self.bias is None else torch.as_tensor(self.bias, dtype=torch.float32).flatten()
        if bias.shape != (3,):
            raise ValueError(f"latent-to-RGB bias must have 3 values, got shape {tuple(bias.shape)}")
        object.__setattr__(self, "bias", bias)

    def __call__(self, latents: Tensor) -> Tensor:
        """RGB [..., 3] in [0, 1] of latents [..., C] (channels last)."""
        if latents.shape[-1] != self.factors.shape[0]:
            raise ValueError(
                f"latents have {latents.shape[-1]} channels but the latent-to-RGB map expects {self.factors.shape[0]}"
            )
        rgb = latents @ self.factors.to(latents) + self.bias.to(latents)
        return ((rgb + 1.0) / 2.0).clamp(0.0, 1.0)
