"""Which timestep each step distils at, and the seeded noise that goes with it.

`NoiseStream` draws the randomness of step k from a generator seeded by (seed, k) alone, so the
sequence of (t, noise) is the same for every rule under one seed (the paper's same-seed
comparisons) and a resumed run draws exactly what an uninterrupted one would.
`TimestepSchedule` turns that randomness into integer DDPM timesteps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

SCHEDULE_KINDS = ("uniform", "sqrt_anneal", "decreasing")


@dataclass(frozen=True)
class TimestepSchedule:
    """t as fractions of the diffusion length T.

    - uniform: t ~ U{t_min T, ..., t_max T}, one draw per batch row (threestudio's default);
    - sqrt_anneal: t = t_max - (t_max - t_min) sqrt(step / (steps - 1)) (HiFA), deterministic;
    - decreasing: t falls linearly from t_max to t_min, deterministic.
    With `t_max_end` set, t_max drops to that value once `step >= anneal_at * steps`
    (ProlificDreamer's 0.98 -> 0.5 at the resolution milestone).
    """

    t_min: float = 0.02
    t_max: float = 0.98
    kind: str = "uniform"
    t_max_end: float | None = None
    anneal_at: float = 0.5

    def __post_init__(self):
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(f"unknown timestep schedule {self.kind!r}; choose one of {', '.join(SCHEDULE_KINDS)}")
        if not 0.0 <= self.t_min < self.t_max <= 1.0:
            raise ValueError(f"need 0 <= t_min < t_max <= 1, got t_min={self.t_min}, t_max={self.t_max}")
        if self.t_max_end is not None and not self.t_min < self.t_max_end <= 1.0:
            raise ValueError(f"need t_min < t_max_end <= 1, got t_min={self.t_min}, t_max_end={self.t_max_end}")
        if not 0.0 <= self.anneal_at <= 1.0:
            raise ValueError(f"anneal_at is a fraction of the run in [0, 1], got {self.anneal_at}")

    def max_fraction(self, step: int, steps: int) -> float:
        if self.t_max_end is not None and step >= self.anneal_at * steps:
            return self.t_max_end
        return self.t_max

    def timesteps(self, step: int, steps: int, uniform: Tensor, num_timesteps: int = 1000) -> Tensor:
        """Integer timesteps [B] for step `step` of `steps`, from `uniform` draws in [0, 1) [B]."""
        low = min(int(self.t_min * num_timesteps), num_timesteps - 1)
        high = min(int(self.max_fraction(step, steps) * num_timesteps), num_timesteps - 1)
        if self.kind == "uniform":
            t = low + torch.floor(uniform * (high - low + 1))
            return t.clamp(low, high).long()
        progress = step / max(steps - 1, 1)
        if self.kind == "sqrt_anneal":
            progress = math.sqrt(progress)
        t = round(high - (high - low) * progress)
        return torch.full(uniform.shape, t, dtype=torch.long)


class NoiseStream:
    """Per-step randomness: uniform draws for the timesteps and Gaussian noise for x_t."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def generator(self, step: int, purpose: int = 0) -> torch.Generator:
        """A CPU generator for (seed, step, purpose); other users of per-step randomness
        (camera sampling, say) take their own `purpose` so their draws stay independent."""
        state = np.random.SeedSequence([self.seed & 0xFFFFFFFFFFFFFFFF, step, purpose]).generate_state(2, np.uint32)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def draw(self, step: int, shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        """(uniform [B] in [0, 1), noise of `shape` = [B, ...]), both float32 on the CPU."""
        generator = self.generator(step)
        uniform = torch.rand(shape[0], generator=generator)
        noise = torch.randn(shape, generator=generator)
        return uniform, noise
