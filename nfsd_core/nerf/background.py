"""What a ray sees when it leaves the volume.

- "random": one random solid RGB colour per image while training (so the object cannot hide in
  the background), a fixed `eval_colour` when evaluating;
- "environment": threestudio's neural environment map, a small MLP on the view direction, with
  threestudio's `random_aug` (a random solid colour instead, per image, with probability
  `random_probability`, RGB only). In latent colour mode it outputs latents, unbounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..bounded_text import excerpt
from ..limits import check_ranges, real, whole
from .field import mlp

BACKGROUND_KINDS = ("random", "environment")
# Frequencies of the view-direction encoding of the environment map: dir, sin(2^k pi dir), cos(2^k pi dir).
DIRECTION_FREQUENCIES = 2


@dataclass(frozen=True)
class BackgroundSettings:
    kind: str = "environment"
    hidden_width: int = whole(16, 1, 1024)
    hidden_layers: int = whole(2, 0, 8)
    random_probability: float = real(0.5, 0.0, 1.0)
    eval_colour: tuple[float, float, float] = real((1.0, 1.0, 1.0), 0.0, 1.0)

    def __post_init__(self):
        if self.kind not in BACKGROUND_KINDS:
            raise ValueError(f"unknown background {excerpt(self.kind)}; choose one of {', '.join(BACKGROUND_KINDS)}")
        check_ranges(self)
        if len(self.eval_colour) != 3:
            raise ValueError(f"eval_colour must be an RGB triple, got {self.eval_colour}")


def encode_direction(directions: Tensor) -> Tensor:
    """[..., 3] unit directions to [..., 3 (1 + 2 DIRECTION_FREQUENCIES)] features."""
    scaled = torch.cat([directions * (torch.pi * 2**k) for k in range(DIRECTION_FREQUENCIES)], dim=-1)
    return torch.cat([directions, torch.sin(scaled), torch.cos(scaled)], dim=-1)


class Background(nn.Module):
    def __init__(self, settings: BackgroundSettings, channels: int, latent_colour: bool):
        super().__init__()
        self.settings = settings
        self.channels = channels
        self.latent_colour = latent_colour
        self.net = None
        if settings.kind == "environment":
            self.net = mlp(3 * (1 + 2 * DIRECTION_FREQUENCIES), settings.hidden_width, settings.hidden_layers, channels)

    def forward(self, directions: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Background [B, ..., C] for ray `directions` [B, ..., 3] (B images).

        With a `generator` (training) random solid colours are drawn from it, one per image.
        """
        batch, shape = directions.shape[0], directions.shape[:-1] + (self.channels,)
        per_image = (batch,) + (1,) * (directions.dim() - 1)  # broadcasts one value per image
        if self.net is None:
            if generator is None:
                return torch.tensor(self.settings.eval_colour, device=directions.device).expand(shape)
            return self._solid(batch, generator, directions.device).view(per_image[:-1] + (-1,)).expand(shape)
        colour = self.net(encode_direction(directions))
        if self.latent_colour:
            return colour
        colour = torch.sigmoid(colour)
        if generator is None or self.settings.random_probability == 0:
            return colour
        replace = torch.rand(batch, generator=generator).to(directions.device) < self.settings.random_probability
        solid = self._solid(batch, generator, directions.device).view(per_image[:-1] + (-1,))
        return torch.where(replace.view(per_image), solid.expand(shape), colour)

    def _solid(self, batch: int, generator: torch.Generator, device: torch.device) -> Tensor:
        """Random RGB colours [B, 3] from `generator`."""
        return torch.rand(batch, self.channels, generator=generator).to(device)
