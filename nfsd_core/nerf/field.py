"""The implicit volume: density and colour at any point of a bounding box [-radius, radius]^3.

threestudio's `implicit-volume` geometry in plain PyTorch: a hash-grid encoding of the point,
then one small MLP for the density and one for the colour. The density is
softplus(raw + blob(x)) with Magic3D's blob bias blob(x) = scale (1 - |x| / std), which starts
every run from a soft ball at the centre instead of empty space. The colour is RGB in [0, 1]
(sigmoid), or C latent channels with no activation (Latent-NeRF style, rendered straight into
the score model's latent space).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..limits import check_ranges, real, whole
from .hashgrid import HashGrid, level_resolutions


@dataclass(frozen=True)
class HashGridSettings:
    """A hash-grid encoding and the MLP on it; the defaults are threestudio's (16 levels x 2
    features, table 2^19, base resolution 16, finest 4096; one hidden layer of 64)."""

    levels: int = whole(16, 1, 32)
    features_per_level: int = whole(2, 1, 8)
    log2_table_size: int = whole(19, 4, 24)
    base_resolution: int = whole(16, 2, 4096)
    finest_resolution: int = whole(4096, 2, 65536)
    hidden_width: int = whole(64, 1, 1024)
    hidden_layers: int = whole(1, 0, 8)

    def __post_init__(self):
        check_ranges(self)
        level_resolutions(self.levels, self.base_resolution, self.finest_resolution)  # refuses an inverted range


@dataclass(frozen=True)
class VolumeSettings(HashGridSettings):
    """Field settings: the hash grid and MLPs, and Magic3D's density blob (threestudio's 10, 0.5)."""

    blob_scale: float = real(10.0, -1000.0, 1000.0)
    blob_std: float = real(0.5, 0.001, 1e12)


@dataclass
class FieldSamples:
    """The field at P points: `density` [P] (>= 0), `colour` [P, C], `normal` [P, 3] or None."""

    density: Tensor
    colour: Tensor
    normal: Tensor | None = None


def mlp(inputs: int, width: int, hidden_layers: int, outputs: int) -> nn.Sequential:
    """A ReLU MLP without biases, like tiny-cuda-nn's fully fused MLP that threestudio uses."""
    layers: list[nn.Module] = []
    for index in range(hidden_layers):
        layers += [nn.Linear(inputs if index == 0 else width, width, bias=False), nn.ReLU()]
    layers.append(nn.Linear(width if hidden_layers else inputs, outputs, bias=False))
    return nn.Sequential(*layers)


def magic3d_blob(points: Tensor, scale: float, std: float) -> Tensor:
    """Density bias [P] at `points` [P, 3]: scale (1 - |x| / std)."""
    return scale * (1.0 - points.norm(dim=-1) / std)


def density_normals(density: Tensor, points: Tensor, create_graph: bool) -> Tensor:
    """Unit normals [P, 3] = -grad density / |grad density| at `points` [P, 3] (which need grad)."""
    (gradient,) = torch.autograd.grad(density.sum(), points, create_graph=create_graph)
    return -F.normalize(gradient, dim=-1)


class ImplicitVolume(nn.Module):
    """Density and colour of points [P, 3] in world units inside [-radius, radius]^3."""

    def __init__(self, settings: VolumeSettings, colour_channels: int, latent_colour: bool, radius: float):
        super().__init__()
        self.settings = settings
        self.radius = float(radius)
        self.latent_colour = latent_colour
        self.encoding = HashGrid(
            settings.levels,
            settings.features_per_level,
            settings.log2_table_size,
            settings.base_resolution,
            settings.finest_resolution,
        )
        dims = self.encoding.output_dims
        self.density_net = mlp(dims, settings.hidden_width, settings.hidden_layers, 1)
        self.colour_net = mlp(dims, settings.hidden_width, settings.hidden_layers, colour_channels)

    def _encode(self, points: Tensor) -> Tensor:
        return self.encoding((points + self.radius) / (2.0 * self.radius))

    def _density(self, points: Tensor, encoded: Tensor) -> Tensor:
        raw = self.density_net(encoded).squeeze(-1)
        return F.softplus(raw + magic3d_blob(points, self.settings.blob_scale, self.settings.blob_std))

    def _colour(self, encoded: Tensor) -> Tensor:
        colour = self.colour_net(encoded)
        return colour if self.latent_colour else torch.sigmoid(colour)

    def density(self, points: Tensor) -> Tensor:
        """Density [P] at `points` [P, 3]."""
        return self._density(points, self._encode(points))

    def colour(self, points: Tensor) -> Tensor:
        """Colour [P, C] at `points` [P, 3]."""
        return self._colour(self._encode(points))

    def forward(self, points: Tensor, normals: bool = False, create_graph: bool = False) -> FieldSamples:
        """Density, colour and (with `normals`) density-gradient normals at `points` [P, 3].

        `create_graph` keeps the normals differentiable (for the orientation loss).
        """
        if not normals:
            encoded = self._encode(points)
            return FieldSamples(self._density(points, encoded), self._colour(encoded))
        with torch.enable_grad():
            points = points.detach().requires_grad_(True)
            encoded = self._encode(points)
            density = self._density(points, encoded)
            normal = density_normals(density, points, create_graph)
            colour = self._colour(encoded)
        if not create_graph:
            normal = normal.detach()
        return FieldSamples(density, colour, normal)
