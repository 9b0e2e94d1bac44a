"""The negative prompt's training images and captions, shared by every prior the project builds.

Degraded copies of a prior's images (blurred, low in contrast, dimmed) are captioned with phrases
of the paper's default negative prompt, so that prompt as a whole comes to mean "a degraded
image" of whatever the prior knows, as it does for Stable Diffusion.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# The paper's default negative prompt, phrase by phrase, plus synonyms that describe the same images.
NEGATIVE_PHRASES = (
    "unrealistic", "blurry", "low quality", "out of focus", "ugly", "low contrast", "dull", "dark",
    "low-resolution", "gloomy", "faded", "smudged", "washed out",
)
# How often a degraded image keeps its negative caption (else: empty caption).
NEGATIVE_CAPTION_PROBABILITY = 0.9


def gaussian_blur(images: Tensor, sigma: Tensor) -> Tensor:
    """Blur each image [B, C, H, W] with its own Gaussian of std `sigma` [B] pixels (reflect padding)."""
    radius = int(torch.ceil(3 * sigma.max()).item())
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernels = torch.exp(-0.5 * (offsets / sigma.view(-1, 1)) ** 2)
    kernels = kernels / kernels.sum(dim=1, keepdim=True)  # [B, K]
    batch, channels, height, width = images.shape
    flat = F.pad(images.reshape(1, batch * channels, height, width), (radius,) * 4, mode="reflect")
    weights = kernels.repeat_interleave(channels, dim=0)  # [B*C, K]
    flat = F.conv2d(flat, weights.view(-1, 1, 1, 2 * radius + 1), groups=batch * channels)
    flat = F.conv2d(flat, weights.view(-1, 1, 2 * radius + 1, 1), groups=batch * channels)
    return flat.view(batch, channels, height, width)


def degrade(images: Tensor, generator: torch.Generator) -> Tensor:
    """The negative prompt's images: blurred (sigma 1.6..4 px at 32x32) and low in contrast.

    Contrast is pulled toward each image's mean by a factor 0.25..0.6, and the result dimmed by
    0.6..1, so the set covers "blurry", "low contrast", "dull" and "dark" at once.
    """
    batch = images.shape[0]
    scale = images.shape[-1] / 16.0

    def uniform(low: float, high: float) -> Tensor:
        return low + (high - low) * torch.rand(batch, generator=generator)

    blurred = gaussian_blur(images, uniform(0.8, 2.0) * scale)
    mean = blurred.mean(dim=(1, 2, 3), keepdim=True)
    contrast = uniform(0.25, 0.6).view(-1, 1, 1, 1)
    brightness = uniform(0.6, 1.0).view(-1, 1, 1, 1)
    return ((mean + contrast * (blurred - mean)) * brightness).clamp(0.0, 1.0)


def negative_caption(generator: torch.Generator) -> str:
    """A random caption for a degraded image: 1 to all negative phrases, in order or shuffled."""
    if torch.rand((), generator=generator).item() >= NEGATIVE_CAPTION_PROBABILITY:
        return ""
    count = int(torch.randint(1, len(NEGATIVE_PHRASES) + 1, (), generator=generator))
    chosen = torch.randperm(len(NEGATIVE_PHRASES), generator=generator)[:count]
    if torch.rand((), generator=generator).item() < 0.5:
        chosen = chosen.sort().values
    return ", ".join(NEGATIVE_PHRASES[i] for i in chosen.tolist())
