"""Simple 3D objects as signed distance functions, centred in the NeRF's box, in its world frame.

World frame as in `nfsd_core.nerf.cameras`: z up, the front faces +x (where the azimuth-0
camera stands), +y is to the right in the front view. Every object fits in a ball of radius
0.36 around the origin, so the NeRF's closest, narrowest training camera (distance 1, fovy 40)
still sees all of it.

Two objects have a front: the house's door faces +x, and the mug's handle points to +y (right
in the front view, left from the back, hidden or in profile from the sides). An object is a
union of parts; each part has an albedo factor (the door is dark, the roof darker than the
walls), so the object keeps one colour name while its details stay visible.

Each SDF takes points [P, 3] and returns distances [P] that never exceed the true distance
(some are bounds rather than exact distances), which is what sphere tracing needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from skimage.measure import marching_cubes
from torch import Tensor

SDF = Callable[[Tensor], Tensor]
BOUND = 0.5  # every object lies inside [-BOUND, BOUND]^3

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.10),
    "green": (0.15, 0.70, 0.20),
    "blue": (0.12, 0.30, 0.90),
    "yellow": (0.95, 0.85, 0.10),
    "purple": (0.55, 0.20, 0.75),
    "white": (0.92, 0.92, 0.92),
}


def sphere(points: Tensor, radius: float) -> Tensor:
    return points.norm(dim=-1) - radius


def box(points: Tensor, half_size: tuple[float, float, float]) -> Tensor:
    q = points.abs() - torch.tensor(half_size, dtype=points.dtype)
    return q.clamp_min(0).norm(dim=-1) + q.amax(dim=-1).clamp_max(0)


def cylinder(points: Tensor, radius: float, half_height: float) -> Tensor:
    """Axis z."""
    d = torch.stack([points[:, :2].norm(dim=-1) - radius, points[:, 2].abs() - half_height], dim=-1)
    return d.clamp_min(0).norm(dim=-1) + d.amax(dim=-1).clamp_max(0)


def cone(points: Tensor, radius: float, bottom: float, top: float) -> Tensor:
    """Axis z, base disc of `radius` at z = `bottom`, apex at z = `top` (a bound: max of the planes)."""
    height = top - bottom
    slant = math.hypot(radius, height)
    side = (points[:, :2].norm(dim=-1) * height + (points[:, 2] - top) * radius) / slant
    return torch.maximum(side, bottom - points[:, 2])


def torus(points: Tensor, major: float, minor: float) -> Tensor:
    """Lying flat: the ring in the xy plane."""
    q = torch.stack([points[:, :2].norm(dim=-1) - major, points[:, 2]], dim=-1)
    return q.norm(dim=-1) - minor


def shifted(sdf: SDF, offset: tuple[float, float, float]) -> SDF:
    return lambda points: sdf(points - torch.tensor(offset, dtype=points.dtype))


@dataclass(frozen=True)
class Part:
    """One piece of an object: its SDF and how much of the object's colour it reflects."""

    sdf: SDF
    albedo: float = 1.0


def mug_body(points: Tensor) -> Tensor:
    outer = cylinder(points, 0.2, 0.24)
    inner = cylinder(points - torch.tensor([0.0, 0.0, 0.06]), 0.165, 0.24)  # open at the top
    return torch.maximum(outer, -inner)


def mug_handle(points: Tensor) -> Tensor:
    """A half ring in the yz plane on the +y side of the body."""
    local = points - torch.tensor([0.0, 0.2, 0.0])
    ring = torch.stack([local[:, 1:].norm(dim=-1) - 0.12, local[:, 0]], dim=-1).norm(dim=-1) - 0.035
    return torch.maximum(ring, -local[:, 1])


def roof(points: Tensor) -> Tensor:
    """A gable roof, ridge along y at z = 0.3, eaves at z = 0.06 overhanging the walls (a bound)."""
    slope = math.hypot(0.26, 0.24)
    sides = (points[:, 0].abs() * 0.24 + (points[:, 2] - 0.30) * 0.26) / slope
    return torch.stack([sides, 0.06 - points[:, 2], points[:, 1].abs() - 0.27], dim=-1).amax(dim=-1)


OBJECTS: dict[str, tuple[Part, ...]] = {
    "sphere": (Part(lambda p: sphere(p, 0.3)),),
    "cube": (Part(lambda p: box(p, (0.23, 0.23, 0.23))),),
    "cylinder": (Part(lambda p: cylinder(p, 0.2, 0.28)),),
    "cone": (Part(lambda p: cone(p, 0.27, -0.26, 0.32)),),
    "torus": (Part(lambda p: torus(p, 0.22, 0.09)),),
    "mug": (Part(mug_body), Part(mug_handle)),
    "house": (
        Part(shifted(lambda p: box(p, (0.2, 0.24, 0.17)), (0.0, 0.0, -0.11))),
        Part(roof, albedo=0.6),
        Part(shifted(lambda p: box(p, (0.02, 0.06, 0.11)), (0.2, 0.0, -0.17)), albedo=0.3),  # the door, on +x
    ),
}
FRONTED = ("mug", "house")  # objects whose front, back and sides look different


def object_sdf(name: str, points: Tensor) -> tuple[Tensor, Tensor]:
    """Distances [P] to object `name` and each point's albedo factor [P] (of its nearest part)."""
    parts = OBJECTS[name]
    distances = torch.stack([part.sdf(points) for part in parts], dim=-1)  # [P, parts]
    nearest = distances.argmin(dim=-1)
    albedo = torch.tensor([part.albedo for part in parts], dtype=points.dtype)[nearest]
    return distances.amin(dim=-1), albedo


def grid_points(resolution: int, radius: float) -> Tensor:
    """Vertices [R^3, 3] of a grid over [-radius, radius]^3, ordered as `nerf.mesh.density_grid` (x, y, z)."""
    axis = torch.linspace(-radius, radius, resolution)
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)


def object_mesh(name: str, resolution: int = 64) -> tuple[Tensor, Tensor]:
    """Marching cubes of object `name`'s SDF on a resolution^3 grid: vertices [N, 3] (world frame: z up,
    front +x) and faces [F, 3] int64, wound counter-clockwise seen from outside. No colours: the
    shape alone, as a mesh generator makes it."""
    if name not in OBJECTS:
        raise ValueError(f"unknown object {name!r}; choose one of {', '.join(OBJECTS)}")
    if not 8 <= resolution <= 512:
        raise ValueError(f"resolution must be from 8 to 512, got {resolution}")
    distances = torch.cat([object_sdf(name, part)[0] for part in grid_points(resolution, BOUND).split(2**18)])
    spacing = 2 * BOUND / (resolution - 1)
    vertices, faces, _, _ = marching_cubes(distances.view(resolution, resolution, resolution).numpy(), 0.0,
                                           spacing=(spacing,) * 3, gradient_direction="descent")
    # "descent": the distance grows outwards, so faces wind counter-clockwise seen from outside
    return (torch.from_numpy(np.ascontiguousarray(vertices)).float() - BOUND,
            torch.from_numpy(faces.astype(np.int64)))
