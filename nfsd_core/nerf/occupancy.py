"""The occupancy grid: which cells of the bounding box hold any density, for skipping empty space.

It is nerfacc's `OccGridEstimator` (its buffers and its EMA update are plain torch), kept on
every device so a checkpoint holds the same state wherever it was written. On CUDA with the
nerfacc extension the estimator also does the sampling; elsewhere `occupied` lets the batched
renderer skip field queries in empty cells. The grid starts all-occupied and learns the real
occupancy at the first update; updates draw their random cell jitter from the step's generator,
so they are reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from nerfacc import OccGridEstimator
from torch import Tensor, nn

from ..limits import check_ranges, real, whole


@dataclass(frozen=True)
class OccupancySettings:
    """nerfacc's / threestudio's grid: 32^3 cells, refreshed every 16 steps, occupied where
    density x step size > 0.01 (an EMA with decay 0.95; every cell sampled for 256 steps)."""

    enabled: bool = True
    resolution: int = whole(32, 2, 256)
    update_every: int = whole(16, 1, 1_000_000)
    threshold: float = real(0.01, 0.0, 1e6)
    ema_decay: float = real(0.95, 0.0, 1.0)
    warmup_steps: int = whole(256, 0, 1_000_000_000)

    def __post_init__(self):
        check_ranges(self)


class OccupancyGrid(nn.Module):
    def __init__(self, settings: OccupancySettings, radius: float):
        super().__init__()
        self.settings = settings
        self.estimator = OccGridEstimator(roi_aabb=[-radius] * 3 + [radius] * 3, resolution=settings.resolution)
        self.estimator.binaries.fill_(True)

    def updates_at(self, step: int) -> bool:
        """Does `update` change the grid at `step`?"""
        return step % self.settings.update_every == 0

    @torch.no_grad()
    def update(self, step: int, density: Callable[[Tensor], Tensor], step_size: float, generator: torch.Generator) -> None:
        """Refresh the grid at every `update_every`-th step from `density(points [P, 3]) -> [P]`."""
        if not self.updates_at(step):
            return
        seed = int(torch.randint(2**62, (1,), generator=generator))
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.estimator.train()
            self.estimator.update_every_n_steps(
                step,
                occ_eval_fn=lambda points: density(points).unsqueeze(-1) * step_size,
                occ_thre=self.settings.threshold,
                ema_decay=self.settings.ema_decay,
                warmup_steps=self.settings.warmup_steps,
                n=self.settings.update_every,
            )

    def occupied(self, points: Tensor) -> Tensor:
        """Boolean [...]: is each of `points` [..., 3] in an occupied cell (points outside: False)?"""
        aabb = self.estimator.aabbs[0]
        resolution = self.estimator.resolution
        cells = ((points - aabb[:3]) / (aabb[3:] - aabb[:3]) * resolution).floor().long()
        inside = ((cells >= 0) & (cells < resolution)).all(dim=-1)
        cells = torch.minimum(cells.clamp_min(0), resolution - 1)
        return inside & self.estimator.binaries[0][cells[..., 0], cells[..., 1], cells[..., 2]]
