"""Regularisers of the NeRF's renders and their weights over the run.

The losses are threestudio's:
- sparsity  mean sqrt(opacity^2 + 0.01): empty space should stay empty;
- opaque    mean binary entropy of the clamped opacity: pixels should be fully in or out;
- orient    sum of stopgrad(w) max(0, n . d)^2 / number of pixels with opacity > 0: normals
            should face the camera (DreamFusion).
Weights follow threestudio's `[start_step, start_value, end_value, end_step]` ramps, with the
steps as fractions of the run so a setting means the same for a short and a long run.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch.nn.functional as F
from torch import Tensor

from ..limits import check_ranges, real

MAX_WEIGHT = 1e6  # the largest regulariser weight (threestudio's largest default: 1000)


@dataclass(frozen=True)
class Ramp:
    """A weight that is `start` until `start_at`, `end` from `end_at`, linear in between
    (fractions of the run; start_at == end_at makes a step)."""

    start: float = real(0.0, 0.0, MAX_WEIGHT)
    end: float = real(0.0, 0.0, MAX_WEIGHT)
    start_at: float = real(0.0, 0.0, 1.0)
    end_at: float = real(0.0, 0.0, 1.0)

    def __post_init__(self):
        check_ranges(self)
        if not 0.0 <= self.start_at <= self.end_at <= 1.0:
            raise ValueError(f"a ramp needs 0 <= start_at <= end_at <= 1, got {self.start_at}, {self.end_at}")

    @classmethod
    def constant(cls, value: float) -> "Ramp":
        return cls(value, value)

    def value(self, step: int, steps: int) -> float:
        progress = step / steps
        if progress >= self.end_at:
            return self.end
        if progress <= self.start_at:
            return self.start
        return self.start + (self.end - self.start) * (progress - self.start_at) / (self.end_at - self.start_at)


@dataclass(frozen=True)
class RegularizerSettings:
    """Defaults are threestudio's ProlificDreamer stage 1 (sparsity 10; opaque 0 -> 1000 at 40%
    of the run), with DreamFusion's orientation loss available but off (renders are unshaded)."""

    sparsity: Ramp = field(default_factory=lambda: Ramp.constant(10.0))
    opaque: Ramp = field(default_factory=lambda: Ramp(0.0, 1000.0, 0.4, 0.4))
    orientation: Ramp = field(default_factory=Ramp)

    def scaled(self, factor: float) -> "RegularizerSettings":
        """Every weight times `factor`. Under AdamW (scale-free without weight decay) multiplying the
        guidance's gradient by k moves the parameters as dividing these weights by k does, so a rule run
        at k times the scale these weights were set for keeps their share of the update at `scaled(k)`."""
        return RegularizerSettings(**{name: replace(ramp, start=ramp.start * factor, end=ramp.end * factor)
                                      for name, ramp in vars(self).items()})


def sparsity_loss(opacity: Tensor) -> Tensor:
    return (opacity.pow(2) + 0.01).sqrt().mean()


def opaque_loss(opacity: Tensor) -> Tensor:
    clamped = opacity.clamp(1e-3, 1.0 - 1e-3)
    return F.binary_cross_entropy(clamped, clamped)


def orientation_loss(orientation: Tensor, opacity: Tensor) -> Tensor:
    return orientation.sum() / (opacity > 0).sum().clamp_min(1)


def regularization(
    settings: RegularizerSettings, step: int, steps: int, opacity: Tensor, orientation: Tensor | None
) -> tuple[Tensor, dict[str, float]]:
    """The weighted sum of the active regularisers, and each unweighted loss for the logs."""
    total = opacity.new_zeros(())
    stats: dict[str, float] = {}
    terms = {"sparsity": (settings.sparsity, sparsity_loss, (opacity,)),
             "opaque": (settings.opaque, opaque_loss, (opacity,))}
    if orientation is not None:
        terms["orientation"] = (settings.orientation, orientation_loss, (orientation, opacity))
    for name, (ramp, loss_fn, inputs) in terms.items():
        weight = ramp.value(step, steps)
        if weight == 0:
            continue
        loss = loss_fn(*inputs)
        total = total + weight * loss
        stats[f"loss_{name}"] = float(loss.detach())
    return total, stats


def orientation_active(settings: RegularizerSettings, step: int, steps: int) -> bool:
    return settings.orientation.value(step, steps) != 0
