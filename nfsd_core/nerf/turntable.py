"""Turntable previews: the NeRF rendered from cameras orbiting it at one elevation."""

from __future__ import annotations

import torch

from ..budget import Progress
from .cameras import orbit_cameras
from .rendering import concatenate
from .representation import NerfRepresentation, Render


@torch.no_grad()
def render_turntable(
    nerf: NerfRepresentation,
    frames: int = 60,
    size: int = 256,
    elevation: float | None = None,
    distance: float | None = None,
    fovy: float | None = None,
    normals: bool = False,
    chunk: int | None = None,
    progress: Progress | None = None,
) -> Render:
    """`frames` evaluation renders, starting at the front and turning once around, on the CPU.

    Elevation, distance and fovy default to the NeRF's evaluation camera settings. The result's
    `colour` is RGB [N, size', size', 3] in [0, 1] (latent NeRFs are mapped to RGB, see
    `NerfRepresentation.to_rgb`); opacity, depth [N, size, size, 1]; normals [N, size, size, 3]
    in world space (z up) when asked for. `chunk` rays are rendered at once (default: see
    `NerfRepresentation.render`); `progress(frames done, frames)` follows every frame.
    """
    settings = nerf.settings.cameras
    cameras = orbit_cameras(
        frames,
        settings.eval_elevation if elevation is None else elevation,
        settings.eval_distance if distance is None else distance,
        settings.eval_fovy if fovy is None else fovy,
    )
    renders = []
    for index in range(frames):
        frame = nerf.render(cameras.select(index), size, size, normals=normals, chunk=chunk)
        frame.colour = nerf.to_rgb(frame.colour)
        renders.append(frame)
        if progress is not None:
            progress(index + 1, frames)
    turntable = concatenate(renders)
    for name in ("colour", "opacity", "depth", "normal"):
        values = getattr(turntable, name)
        if values is not None:
            setattr(turntable, name, values.float().cpu())
    return turntable
