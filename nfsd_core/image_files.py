"""PNG in and out for the command line: image tensors [..., 3, H, W] in [0, 1] <-> files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

LABEL_HEIGHT = 14
PADDING = 2


def to_pil(image: Tensor) -> Image.Image:
    """A PIL RGB image from one tensor [3, H, W] in [0, 1]."""
    array = (image.detach().float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return Image.fromarray(array.permute(1, 2, 0).cpu().numpy(), mode="RGB")


def grid(images: Tensor) -> Tensor:
    """One image [3, R H + (R - 1) p, C W + (C - 1) p] from a grid of images [R, C, 3, H, W] (p: white padding)."""
    rows, columns, channels, height, width = images.shape
    canvas = torch.ones(channels, rows * (height + PADDING) - PADDING, columns * (width + PADDING) - PADDING)
    for r in range(rows):
        for c in range(columns):
            top, left = r * (height + PADDING), c * (width + PADDING)
            canvas[:, top : top + height, left : left + width] = images[r, c].detach().float().cpu()
    return canvas


def save_grid(
    images: Tensor,
    path: str | os.PathLike,
    column_labels: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
) -> Path:
    """Write images [R, C, 3, H, W] as one PNG, with optional labels above columns / left of rows."""
    picture = to_pil(grid(images))
    height, width = images.shape[-2:]
    left = max((8 * len(label) for label in row_labels), default=0) if row_labels else 0
    top = LABEL_HEIGHT if column_labels else 0
    labelled = Image.new("RGB", (picture.width + left, picture.height + top), "white")
    labelled.paste(picture, (left, top))
    draw = ImageDraw.Draw(labelled)
    for c, label in enumerate(column_labels or ()):
        draw.text((left + c * (width + PADDING) + 2, 1), label, fill="black")
    for r, label in enumerate(row_labels or ()):
        draw.text((1, top + r * (height + PADDING) + height // 2 - 5), label, fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    labelled.save(path)
    return path


def load_image(path: str | os.PathLike, size: tuple[int, int] | None = None) -> Tensor:
    """An image file as [1, 3, H, W] in [0, 1], resized to `size` = (width, height) if given."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        if size is not None and image.size != tuple(size):
            image = image.resize(tuple(size), Image.Resampling.BICUBIC)
        array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image file, read from its header only."""
    with Image.open(path) as image:
        return image.size
