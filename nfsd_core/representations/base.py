"""What the optimisation loop needs of a thing being optimised (a latent canvas, a NeRF)."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor, nn


@dataclass
class GuidanceView:
    """A differentiable rendering in the score model's latent space, ready for distillation.

    `views` names each row's view for view-dependent prompts (None: one prompt for all);
    `regularization` is added to the distillation loss; `stats` are logged per step.
    """

    latents: Tensor
    views: Sequence[str] | None = None
    regularization: Tensor | float = 0.0
    stats: dict[str, float] = field(default_factory=dict)


class Representation(nn.Module, abc.ABC):
    """Parameters plus a differentiable way to turn them into latents for the score model."""

    @abc.abstractmethod
    def render_for_guidance(self, step: int, steps: int, generator: torch.Generator) -> GuidanceView:
        """The latents to distil at `step` of `steps`; `generator` is the step's own randomness."""

    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-serialisable settings that rebuild this representation (stored in checkpoints)."""

    def parameter_groups(self, lr: float) -> list[dict[str, Any]]:
        """AdamW parameter groups; override to give parts of the model their own learning rates."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]
