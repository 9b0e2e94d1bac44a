"""How close a distilled NeRF is to the object its prompt names: geometry, colour and views.

All functions take plain tensors in the NeRF's world frame (z up, front +x) and the analytic
object of `objects`, so they measure any NeRF, mesh or render:

- `occupancy_iou`: volumetric IoU of "density above a threshold" against "inside the object";
- `volume_ratio`, `rescaled_fit`, `nearest_object`: the occupied volume against the object's, the
  IoU the occupancy would reach with the object uniformly rescaled, and which object it is closest to;
- `mesh_chamfer`: symmetric Chamfer distance between an extracted mesh and the object's surface;
- `level_set_coverage`: which pixels of a set of cameras see density above a level (the silhouettes
  of the mesh at that level), to compare with the rendered opacity;
- `colour_error`, `saturation`: the object pixels' mean colour against the true colour, in
  chromaticity (lighting scales brightness, not hue) and in saturation;
- `janus_rate`: the share of frames the judge calls "front" although the camera is not in front.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..nerf.cameras import Cameras
from ..nerf.rays import camera_rays, ray_box_intersection
from .objects import COLOURS, OBJECTS, grid_points, object_mesh, object_sdf

RAY_SAMPLES = 256  # points per ray through the density grid in `level_set_coverage`


def inside_object(shape: str, points: Tensor, scale: float = 1.0) -> Tensor:
    """Boolean [P]: is each of `points` [P, 3] inside `shape` uniformly scaled by `scale` about the origin?"""
    distances, _ = object_sdf(shape, points / scale)
    return distances < 0


def occupancy_iou(density: Tensor, threshold: float, shape: str, radius: float, scale: float = 1.0) -> float:
    """IoU of `density` [R, R, R] > `threshold` (a grid over [-radius, radius]^3) and the inside of `shape`
    (scaled by `scale`)."""
    inside = inside_object(shape, grid_points(density.shape[0], radius), scale).view(density.shape)
    occupied = density > threshold
    return float((inside & occupied).sum() / (inside | occupied).sum().clamp_min(1))


def volume_ratio(density: Tensor, threshold: float, shape: str, radius: float) -> float:
    """The volume where `density` [R, R, R] > `threshold` over the volume of `shape` (same grid)."""
    inside = inside_object(shape, grid_points(density.shape[0], radius))
    return float((density > threshold).sum() / inside.sum().clamp_min(1))


RESCALES = tuple(round(0.5 + 0.05 * step, 2) for step in range(31))  # 0.5 to 2.0


def rescaled_fit(density: Tensor, threshold: float, shape: str, radius: float,
                 scales: tuple[float, ...] = RESCALES) -> tuple[float, float]:
    """(best IoU, its scale) of the occupancy against `shape` scaled by each of `scales`: how well the
    occupancy would fit the object at another size."""
    return max((occupancy_iou(density, threshold, shape, radius, scale), scale) for scale in scales)


def nearest_object(density: Tensor, threshold: float, radius: float) -> str:
    """The object of `OBJECTS` whose inside has the highest IoU with `density` > `threshold`."""
    return max(OBJECTS, key=lambda shape: occupancy_iou(density, threshold, shape, radius))


@torch.no_grad()
def ray_maxima(density: Tensor, radius: float, cameras: Cameras, size: int, chunk: int = 4096) -> Tensor:
    """The largest density [N, size, size] along each pixel's ray of `cameras`, read trilinearly from the
    grid `density` [R, R, R] over [-radius, radius]^3 (as `nerf.mesh.density_grid` samples it) at
    RAY_SAMPLES evenly spaced points between where the ray enters and leaves the box."""
    origins, directions = camera_rays(cameras.to("cpu"), size, size)
    o, d = origins.reshape(-1, 3), directions.reshape(-1, 3)
    near, far = ray_box_intersection(o, d, radius)
    fractions = (torch.arange(RAY_SAMPLES) + 0.5) / RAY_SAMPLES
    points = o[:, None] + d[:, None] * (near[:, None] + (far - near)[:, None] * fractions)[..., None]  # [P, S, 3]
    volume = density.permute(2, 1, 0)[None, None].float()  # grid_sample reads (x, y, z) as (W, H, D)
    maxima = [F.grid_sample(volume, (part / radius)[None, :, :, None], align_corners=True)[0, 0, :, :, 0].amax(dim=1)
              for part in points.split(chunk)]
    return torch.cat(maxima).view(len(cameras), size, size)


def level_set_coverage(density: Tensor, level: float, radius: float, cameras: Cameras, size: int) -> Tensor:
    """Boolean [N, size, size]: the pixels whose ray meets density above `level` (the mesh's silhouettes)."""
    return ray_maxima(density, radius, cameras, size) > level


def surface_points(shape: str, resolution: int = 96) -> Tensor:
    """Points [P, 3] on the surface of `shape` (the vertices of its marching-cubes mesh)."""
    return object_mesh(shape, resolution)[0]


def nearest_distances(points: Tensor, targets: Tensor, chunk: int = 4096) -> Tensor:
    """Distance [N] from each of `points` [N, 3] to the nearest of `targets` [M, 3]."""
    return torch.cat([torch.cdist(part, targets).amin(dim=1) for part in points.split(chunk)])


def mesh_chamfer(vertices: Tensor, shape: str) -> float:
    """Symmetric Chamfer distance (mean of both directions' mean nearest distance) between mesh
    `vertices` [N, 3] in the NeRF frame and the surface of `shape`."""
    if vertices.numel() == 0:
        return float("inf")
    surface = surface_points(shape)
    return float(0.5 * (nearest_distances(vertices, surface).mean() + nearest_distances(surface, vertices).mean()))


def object_colour(colour: Tensor, opacity: Tensor) -> Tensor:
    """Mean RGB [3] of the pixels of renders `colour` [N, H, W, 3] whose `opacity` [N, H, W, 1] exceeds 0.5."""
    covered = opacity[..., 0] > 0.5
    if not covered.any():
        return torch.zeros(3)
    return colour[covered].mean(dim=0)


def colour_error(mean_colour: Tensor, colour: str) -> float:
    """Distance between unit-length RGB directions of `mean_colour` [3] and the named colour (0: same hue and
    saturation at any brightness; sqrt(2): orthogonal, e.g. red against green)."""
    truth = torch.tensor(COLOURS[colour])
    return float((F.normalize(mean_colour, dim=0) - F.normalize(truth, dim=0)).norm())


def saturation(rgb: Tensor) -> float:
    """HSV saturation (max - min) / max of an RGB colour [3]."""
    return float((rgb.max() - rgb.min()) / rgb.max().clamp_min(1e-6))


def janus_rate(judged_views: list[str], true_views: list[str]) -> float:
    """The share of frames not seen from the front that the judge nevertheless calls "front"."""
    away = [judged for judged, truth in zip(judged_views, true_views) if truth != "front"]
    return sum(judged == "front" for judged in away) / max(len(away), 1)
