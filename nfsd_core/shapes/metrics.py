"""How close a distilled NeRF is to the object its prompt names: geometry, colour and views.

All functions take plain tensors in the NeRF's world frame (z up, front +x) and the analytic
object of `objects`, so they measure any NeRF, mesh or render:

- `occupancy_iou`: volumetric IoU of "density above a threshold" against "inside the object";
- `mesh_chamfer`: symmetric Chamfer distance between an extracted mesh and the object's surface;
- `colour_error`, `saturation`: the object pixels' mean colour against the true colour, in
  chromaticity (lighting scales brightness, not hue) and in saturation;
- `janus_rate`: the share of frames the judge calls "front" although the camera is not in front.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .objects import COLOURS, grid_points, object_mesh, object_sdf


def occupancy_iou(density: Tensor, threshold: float, shape: str, radius: float) -> float:
    """IoU of `density` [R, R, R] > `threshold` (a grid over [-radius, radius]^3) and the inside of `shape`."""
    distances, _ = object_sdf(shape, grid_points(density.shape[0], radius))
    inside = distances.view(density.shape) < 0
    occupied = density > threshold
    return float((inside & occupied).sum() / (inside | occupied).sum().clamp_min(1))


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
