"""Rays through pixel centres, their entry and exit of the bounding box, and stratified samples.

Pixel (i, j) (column i, row j, row 0 at the top) of an H x W image has its centre at
(i + 0.5, j + 0.5); the principal point is (W / 2, H / 2), so the optical axis, which passes
through the origin for `look_at_origin` cameras, hits the exact centre of the image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .cameras import Cameras


def camera_rays(cameras: Cameras, height: int, width: int) -> tuple[Tensor, Tensor]:
    """World-space ray origins and unit directions, both [B, H, W, 3], on the cameras' device."""
    device = cameras.c2w.device
    focal = cameras.focal_length(height).view(-1, 1, 1)  # [B, 1, 1]
    rows, columns = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float32) + 0.5,
        torch.arange(width, device=device, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    x = (columns - width / 2) / focal
    y = -(rows - height / 2) / focal
    camera_directions = torch.stack([x, y, -torch.ones_like(x)], dim=-1)  # [B, H, W, 3]
    directions = F.normalize(torch.einsum("bij,bhwj->bhwi", cameras.c2w[:, :3, :3], camera_directions), dim=-1)
    origins = cameras.c2w[:, :3, 3].view(-1, 1, 1, 3).expand_as(directions)
    return origins, directions


def ray_box_intersection(origins: Tensor, directions: Tensor, radius: float) -> tuple[Tensor, Tensor]:
    """Where rays [R, 3] enter and leave the box [-radius, radius]^3: `near`, `far` [R], near >= 0.

    Rays that miss the box get near == far.
    """
    safe = torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9), directions)
    t0 = (-radius - origins) / safe
    t1 = (radius - origins) / safe
    near = torch.minimum(t0, t1).amax(dim=-1).clamp_min(0.0)
    far = torch.maximum(t0, t1).amin(dim=-1)
    return near, torch.maximum(far, near)


def stratified_samples(
    near: Tensor, far: Tensor, samples: int, generator: torch.Generator | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Split [near, far] of each of R rays into `samples` equal intervals.

    Returns `t_starts`, `t_ends` [R, S] (the intervals, which tile [near, far] exactly) and
    `t_points` [R, S], where the field is evaluated: uniformly jittered inside each interval
    with draws from `generator`, or the interval midpoints when `generator` is None.
    """
    fractions = torch.linspace(0.0, 1.0, samples + 1, device=near.device)
    edges = near.unsqueeze(-1) + (far - near).unsqueeze(-1) * fractions  # [R, S + 1]
    t_starts, t_ends = edges[:, :-1], edges[:, 1:]
    if generator is None:
        jitter = torch.full_like(t_starts, 0.5)
    else:
        jitter = torch.rand(t_starts.shape, generator=generator).to(near.device)
    return t_starts, t_ends, t_starts + (t_ends - t_starts) * jitter
