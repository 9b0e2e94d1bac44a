"""Rendering the objects of `objects` through the NeRF trainer's own cameras and rays.

Rays come from `nfsd_core.nerf.rays.camera_rays`, so a render here and a NeRF render from the
same `Cameras` see the same pixels. Each ray is sphere-traced to the object's surface, shaded
with a fixed world light (Lambertian plus ambient: the same colour from every view, as a NeRF
without view dependence can represent it), and laid over a solid background colour, like the
NeRF's "random" background. Pixels are averaged over `supersample`^2 rays (anti-aliasing).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..nerf.cameras import Cameras, make_cameras
from ..nerf.rays import camera_rays, ray_box_intersection
from .objects import BOUND, COLOURS, OBJECTS, object_sdf

LIGHT = F.normalize(torch.tensor([0.5, 0.35, 1.0]), dim=0)  # from the front right, mostly above
AMBIENT = 0.45
TRACE_STEPS = 64
HIT_DISTANCE = 1e-3
NORMAL_STEP = 1e-3
# One camera per view name, in the middle of the training cameras' ranges (elevation -10..45,
# distance 1..1.5, fovy 40..70): where `render_view` shows an object from.
VIEW_AZIMUTHS = {"front": 0.0, "side": 90.0, "back": 180.0}
VIEW_ELEVATION, VIEW_DISTANCE, VIEW_FOVY = 15.0, 1.25, 55.0


@dataclass(frozen=True)
class Scene:
    """One object to render: its `shape` and `colour` names and the background RGB in [0, 1]."""

    shape: str
    colour: str
    background: tuple[float, float, float]


@dataclass
class ShapeRender:
    """`image` [B, 3, H, W] in [0, 1] with the background, `mask` [B, 1, H, W] the object's coverage
    in [0, 1], `depth` [B, 1, H, W] distance along the ray to the surface (0 where it misses)."""

    image: Tensor
    mask: Tensor
    depth: Tensor


def sphere_trace(shape: str, origins: Tensor, directions: Tensor) -> tuple[Tensor, Tensor]:
    """Distances [R] along rays [R, 3] to the surface of `shape`, and whether each ray hits it [R]."""
    near, far = ray_box_intersection(origins, directions, BOUND)
    t = near.clone()
    hit = torch.zeros_like(t, dtype=torch.bool)
    active = far > near
    for _ in range(TRACE_STEPS):
        if not active.any():
            break
        distance, _ = object_sdf(shape, origins[active] + directions[active] * t[active, None])
        t[active] += distance
        index = active.nonzero().squeeze(-1)
        hit[index] = distance < HIT_DISTANCE
        active[index] = (distance >= HIT_DISTANCE) & (t[index] < far[index])
    return t, hit


def surface_normals(shape: str, points: Tensor) -> Tensor:
    """Unit normals [P, 3] from central differences of the SDF."""
    offsets = torch.eye(3, dtype=points.dtype) * NORMAL_STEP
    gradient = torch.stack([object_sdf(shape, points + offset)[0] - object_sdf(shape, points - offset)[0]
                            for offset in offsets], dim=-1)
    return F.normalize(gradient, dim=-1)


def shade(shape: str, colour: str, points: Tensor) -> Tensor:
    """RGB [P, 3] of surface points: the part's albedo times the colour, lit by LIGHT."""
    _, albedo = object_sdf(shape, points)
    lambert = (surface_normals(shape, points) @ LIGHT).clamp_min(0.0)
    return torch.tensor(COLOURS[colour]) * (albedo * (AMBIENT + (1.0 - AMBIENT) * lambert)).unsqueeze(-1)


def render_scenes(scenes: list[Scene], cameras: Cameras, size: int, supersample: int = 2) -> ShapeRender:
    """Render scene b from camera b, `size` x `size` pixels (CPU)."""
    if len(scenes) != len(cameras):
        raise ValueError(f"one camera per scene: {len(scenes)} scenes, {len(cameras)} cameras")
    fine = size * supersample
    origins, directions = camera_rays(cameras.to("cpu"), fine, fine)  # [B, H, W, 3]
    colour = torch.zeros(len(scenes), fine, fine, 3)
    mask = torch.zeros(len(scenes), fine, fine)
    depth = torch.zeros(len(scenes), fine, fine)
    for index, scene in enumerate(scenes):
        o, d = origins[index].reshape(-1, 3), directions[index].reshape(-1, 3)
        t, hit = sphere_trace(scene.shape, o, d)
        rgb = torch.tensor(scene.background).expand(len(t), 3).clone()
        rgb[hit] = shade(scene.shape, scene.colour, o[hit] + d[hit] * t[hit, None])
        colour[index] = rgb.view(fine, fine, 3)
        mask[index] = hit.float().view(fine, fine)
        depth[index] = torch.where(hit, t, torch.zeros_like(t)).view(fine, fine)

    def pooled(values: Tensor) -> Tensor:
        return F.avg_pool2d(values, supersample)

    coverage = pooled(mask.unsqueeze(1))
    return ShapeRender(
        image=pooled(colour.permute(0, 3, 1, 2)).clamp(0.0, 1.0),
        mask=coverage,
        depth=pooled(depth.unsqueeze(1)) / coverage.clamp_min(1e-6),
    )


def view_cameras(views: list[str]) -> Cameras:
    """One camera per view name ("front", "side", "back"), each at the middle of the training ranges."""
    unknown = sorted(set(views) - set(VIEW_AZIMUTHS))
    if unknown:
        raise ValueError(f"unknown view(s) {unknown}; choose from {', '.join(VIEW_AZIMUTHS)}")
    count = len(views)
    return make_cameras(torch.full((count,), VIEW_ELEVATION), torch.tensor([VIEW_AZIMUTHS[v] for v in views]),
                        torch.full((count,), VIEW_DISTANCE), torch.full((count,), VIEW_FOVY))


def render_view(shape: str, colour: str, view: str, size: int,
                background: tuple[float, float, float] = (0.5, 0.5, 0.5)) -> ShapeRender:
    """Object `shape` in `colour` seen from `view`'s camera (`view_cameras`), `size` pixels square."""
    for kind, name, known in (("object", shape, OBJECTS), ("colour", colour, COLOURS)):
        if name not in known:
            raise ValueError(f"unknown {kind} {name!r}; choose from {', '.join(known)}")
    return render_scenes([Scene(shape, colour, background)], view_cameras([view]), size)
