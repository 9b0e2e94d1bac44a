"""Turntable previews: the NeRF rendered from cameras orbiting it at one elevation."""

from __future__ import annotations

import torch
from torch import Tensor

from ..budget import Progress, chunk_rays
from .cameras import Cameras, orbit_cameras
from .occupancy import OccupancyGrid
from .rays import camera_rays
from .rendering import batched_samples, concatenate
from .representation import NerfRepresentation, Render
from .settings import NerfSettings

# `queried_share` looks at this many views of this many pixels a side.
SHARE_PROBE_VIEWS = 8
SHARE_PROBE_SIZE = 64


def turntable_cameras(settings: NerfSettings, frames: int, elevation: float | None = None,
                      distance: float | None = None, fovy: float | None = None) -> Cameras:
    """The orbit of a turntable; elevation, distance and fovy default to the NeRF's evaluation camera."""
    cameras = settings.cameras
    return orbit_cameras(
        frames,
        cameras.eval_elevation if elevation is None else elevation,
        cameras.eval_distance if distance is None else distance,
        cameras.eval_fovy if fovy is None else fovy,
    )


@torch.no_grad()
def queried_share(settings: NerfSettings, weights: dict[str, Tensor], size: int, elevation: float | None = None,
                  distance: float | None = None) -> float:
    """The largest share of the samples of a render chunk of a `size` px turntable that the field is
    queried at: the rest lie in cells that the occupancy grid of `weights` (a NeRF's state_dict) marks
    empty. 1 without a grid.

    Found without querying the field, on `SHARE_PROBE_VIEWS` views of the orbit at `SHARE_PROBE_SIZE`
    px: a chunk is a band of image rows, and its share is read as the densest band of probe rows as
    tall (at least one probe row, which a thinner chunk of a larger render can exceed a little).
    """
    if not settings.occupancy.enabled:
        return 1.0
    occupancy = OccupancyGrid(settings.occupancy, settings.radius)
    prefix = "occupancy."
    occupancy.load_state_dict({name[len(prefix):]: value for name, value in weights.items() if name.startswith(prefix)})
    cameras = turntable_cameras(settings, SHARE_PROBE_VIEWS, elevation, distance)
    side, samples_per_ray = SHARE_PROBE_SIZE, settings.evaluation_samples_per_ray(size)
    band = min(side, max(1, round(side * chunk_rays(samples_per_ray) / (size * size))))
    share = 0.0
    for index in range(SHARE_PROBE_VIEWS):
        origins, directions = camera_rays(cameras.select(index), side, side)
        samples = batched_samples(origins.reshape(-1, 3), directions.reshape(-1, 3), settings.radius,
                                  samples_per_ray, occupancy, None)
        rows = samples.queried.reshape(side, side * samples_per_ray).float().mean(dim=1)
        share = max(share, float(rows.unfold(0, band, 1).mean(dim=1).max()))
    return share


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
    cameras = turntable_cameras(nerf.settings, frames, elevation, distance, fovy)
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
