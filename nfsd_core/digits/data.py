"""scikit-learn's bundled handwritten digits as Stable-Diffusion-style training images.

`load_digits()` ships 1797 real 8x8 digits (ink 0..16) inside scikit-learn, so nothing is
downloaded. Images here are [B, 3, 32, 32] in [0, 1]: the 8x8 grey values upsampled bilinearly
and repeated in the three RGB channels, ink bright on a dark background. `to_digits` maps any
such image back to 8x8 by 4x4 average pooling, the space the evaluator works in.
scikit-learn is imported only by `load_digit_split`, which training and tests use; nothing
that runs the shipped prior needs it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

IMAGE_SIZE = 32
DIGIT_SIZE = 8
SPLIT_SEED = 0
HELD_OUT_FRACTION = 0.25


@dataclass(frozen=True)
class DigitSplit:
    """Digits [N, 8, 8] in [0, 1] and labels [N], split per class into training and held-out sets."""

    train_digits: Tensor
    train_labels: Tensor
    held_out_digits: Tensor
    held_out_labels: Tensor


def load_digit_split(seed: int = SPLIT_SEED, held_out_fraction: float = HELD_OUT_FRACTION) -> DigitSplit:
    """The fixed stratified split the prior, the classifier and the benchmark all use."""
    from sklearn.datasets import load_digits

    data = load_digits()
    digits = torch.from_numpy(data.images / 16.0).float()
    labels = torch.from_numpy(data.target).long()
    rng = np.random.default_rng(seed)
    held_out = np.zeros(len(labels), dtype=bool)
    for digit in range(10):
        members = np.flatnonzero(data.target == digit)
        held_out[rng.choice(members, size=round(held_out_fraction * len(members)), replace=False)] = True
    held_out_t = torch.from_numpy(held_out)
    return DigitSplit(digits[~held_out_t], labels[~held_out_t], digits[held_out_t], labels[held_out_t])


def to_images(digits: Tensor, size: int = IMAGE_SIZE) -> Tensor:
    """8x8 digits [B, 8, 8] in [0, 1] -> RGB images [B, 3, size, size] in [0, 1] (bilinear)."""
    images = F.interpolate(digits.unsqueeze(1).float(), size=(size, size), mode="bilinear", align_corners=False)
    return images.clamp(0.0, 1.0).repeat(1, 3, 1, 1)


def to_digits(images: Tensor) -> Tensor:
    """RGB images [B, 3, H, W] in [0, 1] (H, W multiples of 8) -> grey 8x8 digits [B, 8, 8]."""
    grey = images.float().mean(dim=1, keepdim=True)
    return F.adaptive_avg_pool2d(grey, DIGIT_SIZE).squeeze(1)
