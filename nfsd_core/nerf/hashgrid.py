"""A multiresolution hash-grid encoding (Instant-NGP) in plain PyTorch: no tiny-cuda-nn, any device.

Level l is a grid of N_l = floor(base * b^l) vertices per axis, with b chosen so that the finest
level has `finest_resolution` vertices. A level whose N_l^3 vertices fit in the table indexes it
densely; a finer level hashes its vertices into a table of 2^log2_table_size entries with the
Instant-NGP primes. Each level trilinearly interpolates the features of a point's 8 cell corners;
the encoding is the concatenation over levels. Everything is differentiable with respect to the
table and to the points (the density gradient gives the normals).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

# Instant-NGP's spatial hash: xor of the integer coordinates times these primes, modulo the table size.
HASH_PRIMES = (1, 2654435761, 805459861)


def level_resolutions(levels: int, base_resolution: int, finest_resolution: int) -> list[int]:
    """Vertices per axis of each level: base * b^l, b = (finest / base)^(1 / (levels - 1))."""
    if levels < 1 or base_resolution < 2 or finest_resolution < base_resolution:
        raise ValueError(
            f"need levels >= 1 and 2 <= base_resolution <= finest_resolution, got levels={levels}, "
            f"base_resolution={base_resolution}, finest_resolution={finest_resolution}"
        )
    if levels == 1:
        return [base_resolution]
    per_level_scale = math.exp((math.log(finest_resolution) - math.log(base_resolution)) / (levels - 1))
    return [int(math.floor(base_resolution * per_level_scale**level + 1e-6)) for level in range(levels)]


class HashGrid(nn.Module):
    """Encodes points [P, 3] in [0, 1]^3 as features [P, levels * features_per_level].

    Level l has its own table `tables[l]` [min(N_l^3, 2^log2_table_size), features_per_level]
    (one parameter per level keeps each level's gradient the size of its own table),
    initialised uniformly in +-init_scale (Instant-NGP's 1e-4).
    """

    def __init__(
        self,
        levels: int = 16,
        features_per_level: int = 2,
        log2_table_size: int = 19,
        base_resolution: int = 16,
        finest_resolution: int = 4096,
        init_scale: float = 1e-4,
    ):
        super().__init__()
        self.resolutions = level_resolutions(levels, base_resolution, finest_resolution)
        table_size = 2**log2_table_size
        self.dense = [resolution**3 <= table_size for resolution in self.resolutions]
        self.tables = nn.ParameterList(
            nn.Parameter(torch.empty(min(r**3, table_size), features_per_level).uniform_(-init_scale, init_scale))
            for r in self.resolutions
        )
        self.features_per_level = features_per_level
        self.register_buffer("primes", torch.tensor(HASH_PRIMES).view(1, 3, 1), persistent=False)

    @property
    def output_dims(self) -> int:
        return len(self.resolutions) * self.features_per_level

    def forward(self, points: Tensor) -> Tensor:
        """Features [P, levels * features_per_level] of `points` [P, 3]; points are clamped to [0, 1]."""
        points = points.clamp(0.0, 1.0)
        return torch.cat([self._level(points, level) for level in range(len(self.resolutions))], dim=-1)

    def _level(self, points: Tensor, level: int) -> Tensor:
        """Trilinear interpolation [P, F] of one level's features at the 8 corners of each point's cell."""
        resolution = self.resolutions[level]
        position = points * (resolution - 1)
        cell = position.detach().floor().clamp(0, resolution - 2)
        fraction = position - cell  # [P, 3]: the gradient with respect to the points flows through it
        corner = cell.long().unsqueeze(-1) + torch.arange(2, device=points.device)  # [P, 3, 2]: low, high per axis
        weight = torch.stack([1.0 - fraction, fraction], dim=-1)  # [P, 3, 2]
        weights = weight[:, 0, :, None, None] * weight[:, 1, None, :, None] * weight[:, 2, None, None, :]
        rows = self._rows(corner, level)  # [P, 2, 2, 2], like `weights`
        table = self.tables[level]
        features = table.index_select(0, rows.reshape(-1)).view(-1, 8, self.features_per_level)
        return (weights.reshape(-1, 8, 1) * features).sum(dim=1)

    def _rows(self, corner: Tensor, level: int) -> Tensor:
        """Table rows [P, 2, 2, 2] of the cell corners from per-axis vertex coordinates [P, 3, 2]."""
        if self.dense[level]:
            resolution = self.resolutions[level]
            x, y, z = corner.unbind(1)
            return x[:, :, None, None] + resolution * (y[:, None, :, None] + resolution * z[:, None, None, :])
        x, y, z = (corner * self.primes).unbind(1)
        hashed = x[:, :, None, None] ^ y[:, None, :, None] ^ z[:, None, None, :]
        return hashed & (self.tables[level].shape[0] - 1)  # the table size is a power of two
