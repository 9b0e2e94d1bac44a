"""Lambertian shading: colours lit by their surface normals (DreamFusion's shaded renders).

The idea: shading shows the geometry to the score model. An unshaded NeRF can paint a cube's lit and
dark faces onto a round blob; a shaded one has to grow the faces. On the 3D reference prior it made the
objects larger and no shape nearer (README "Object size"), so NeRFs are unshaded by default. The default
light is the one the shapes prior's images were rendered with (`nfsd_core.shapes.render.LIGHT` before
normalising).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

SHADINGS = ("albedo", "lambertian")
DEFAULT_LIGHT = (0.5, 0.35, 1.0)  # world frame (z up, front +x): from the front right, mostly above
DEFAULT_AMBIENT = 0.45


def check_shading(colour: str, shading: str, light: tuple[float, float, float]) -> None:
    """Refuse a zero `light` and a shaded latent colour space (settings of NeRFs and mesh textures)."""
    if len(light) != 3 or not any(light):
        raise ValueError(f"light must be a direction (x, y, z), not zero, got {light}")
    if colour == "latent" and shading != "albedo":
        raise ValueError("shading lights RGB colours; latent colours are shown as they are: use shading "
                         "'albedo' with colour 'latent'")


def lambertian(albedo: Tensor, normal: Tensor, light: Tensor, ambient: float) -> Tensor:
    """`albedo` [..., C] lit by unit `light` directions [..., 3] at unit `normal`s [..., 3] (broadcast):
    albedo (ambient + (1 - ambient) max(0, normal . light))."""
    lambert = (normal * light).sum(-1, keepdim=True).clamp_min(0.0)
    return albedo * (ambient + (1.0 - ambient) * lambert)


@dataclass(frozen=True)
class Light:
    """A light fixed in the world: unit `direction` [3] and the `ambient` share of the colour."""

    direction: Tensor
    ambient: float

    @classmethod
    def from_direction(cls, direction: tuple[float, float, float], ambient: float, device=None) -> "Light":
        return cls(F.normalize(torch.tensor(direction, dtype=torch.float32, device=device), dim=0), ambient)

    def shade(self, albedo: Tensor, normal: Tensor) -> Tensor:
        """`albedo` [..., C] at unit `normal`s [..., 3] under this light."""
        return lambertian(albedo, normal, self.direction, self.ambient)
