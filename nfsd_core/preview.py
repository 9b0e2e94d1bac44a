"""Fast previews: a linear map from latents to RGB, fitted once to a codec's decoder.

Decoding with the VAE costs seconds per image on a CPU; a C -> 3 matrix plus a bias, applied
per latent pixel, costs nothing and shows colours and layout well enough to watch a run
(the same idea as the latent previewers of ComfyUI and other UIs, fitted here rather than
hard-coded, so it follows whatever VAE the model ships).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .models.base import LatentCodec


@dataclass(frozen=True)
class LatentToRGB:
    """rgb = matrix @ latent + bias at every latent pixel; `matrix` [3, C], `bias` [3]."""

    matrix: Tensor
    bias: Tensor

    def __call__(self, latents: Tensor, upscale: int = 1) -> Tensor:
        """Images [B, 3, h * upscale, w * upscale] in [0, 1] from latents [B, C, h, w]."""
        matrix = self.matrix.to(device=latents.device, dtype=latents.dtype)
        rgb = torch.einsum("oc,bchw->bohw", matrix, latents) + self.bias.to(matrix).view(1, 3, 1, 1)
        if upscale > 1:
            rgb = F.interpolate(rgb, scale_factor=upscale, mode="nearest")
        return rgb.clamp(0.0, 1.0)


def calibration_latents(codec: LatentCodec, count: int = 4, size: int = 128, seed: int = 0) -> Tensor:
    """Latents [count, C, size / f, size / f] of smooth random colour fields, encoded by `codec`.

    Smooth colours keep the latents in the range the decoder sees for real images.
    """
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, 4, 4, generator=generator)
    images = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0.0, 1.0)
    with torch.no_grad():
        return codec.encode(images)


def fit_latent_to_rgb(codec: LatentCodec, latents: Tensor | None = None) -> LatentToRGB:
    """Least-squares fit of `codec.decode(latents)`, averaged over each latent pixel's f x f block.

    `latents` [B, C, h, w] default to `calibration_latents(codec)`.
    """
    if latents is None:
        latents = calibration_latents(codec)
    with torch.no_grad():
        images = codec.decode(latents)
    targets = F.adaptive_avg_pool2d(images.float(), latents.shape[-2:])
    inputs = latents.float().permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    inputs = torch.cat([inputs, torch.ones_like(inputs[:, :1])], dim=1)
    outputs = targets.permute(0, 2, 3, 1).reshape(-1, 3)
    solution = torch.linalg.lstsq(inputs.double().cpu(), outputs.double().cpu()).solution
    return LatentToRGB(matrix=solution[:-1].T.float(), bias=solution[-1].float())
