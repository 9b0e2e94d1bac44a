"""A score model around a plain function: analytic priors, test doubles, hand-written denoisers."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from torch import Tensor

from ..schedule import NoiseSchedule
from .base import FlatBatchScoreModel

DenoiseFn = Callable[[Tensor, Tensor, list[Any]], Tensor]


class CallableScoreModel(FlatBatchScoreModel):
    """Wraps `fn(x_t [N, C, H, W], t [N], conditions: list of N) -> eps or v [N, C, H, W]`.

    Text prompts are their own conditions, so `encode_prompt` returns the string unchanged.
    """

    def __init__(self, fn: DenoiseFn, schedule: NoiseSchedule | None = None, prediction_type: str = "epsilon"):
        super().__init__(schedule or NoiseSchedule.scaled_linear(), prediction_type)
        self.fn = fn

    def denoise(self, x_t: Tensor, t: Tensor, segments: Sequence[tuple[Any, int]]) -> Tensor:
        conditions = [condition for condition, count in segments for _ in range(count)]
        return self.fn(x_t, t, conditions)

    def encode_prompt(self, text: str) -> str:
        return text
