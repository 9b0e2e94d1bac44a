"""The colour on the surface: a hash grid over the mesh's bounding cube and a small MLP.

A field rather than a UV image: it needs no unwrapping while it learns, every point of the
surface has a colour (also where no camera looked, from the coarse levels its neighbours
trained), and colours bleed across no seam. It is the NeRF's colour network without the density.

A start colour per point (the mesh's vertex colours, interpolated) is added before the output
activation: RGB fields output sigmoid(logit(start) + mlp), latent fields start + mlp. The MLP's
output begins near zero (the hash tables start within +-1e-4), so the texture starts as the mesh
was coloured, or mid grey (RGB) / zero latents without colours.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..nerf.field import mlp
from ..nerf.hashgrid import HashGrid
from ..preview import LatentToRGB
from .settings import ColourFieldSettings

# Start colours are kept this far inside (0, 1), where the logit is finite.
START_MARGIN = 1e-3
# The field's cube is the mesh's bounding cube grown by this fraction, so no surface point sits on its faces.
CUBE_MARGIN = 0.02


def bounding_cube(points: Tensor) -> tuple[Tensor, float]:
    """Centre [3] and half side of the cube around `points` [N, 3] (with CUBE_MARGIN)."""
    low, high = points.amin(0), points.amax(0)
    half = float((high - low).max()) / 2 * (1 + CUBE_MARGIN)
    return (low + high) / 2, max(half, 1e-6)


def rgb_to_latents(latent_rgb: LatentToRGB, rgb: Tensor) -> Tensor:
    """Latents [N, C] whose linear RGB preview is `rgb` [N, 3] (the least-norm solution)."""
    solution = torch.linalg.lstsq(latent_rgb.matrix.double(), (rgb.double() - latent_rgb.bias.double()).T).solution
    return solution.T.float()


class ColourField(nn.Module):
    """Colours [P, C] of surface points [P, 3] inside the cube (`centre`, `half`)."""

    def __init__(self, settings: ColourFieldSettings, channels: int, latent_colour: bool, centre: Tensor, half: float):
        super().__init__()
        self.latent_colour = latent_colour
        self.encoding = HashGrid(settings.levels, settings.features_per_level, settings.log2_table_size,
                                 settings.base_resolution, settings.finest_resolution)
        self.net = mlp(self.encoding.output_dims, settings.hidden_width, settings.hidden_layers, channels)
        self.register_buffer("low", centre - half, persistent=False)
        self.side = 2.0 * half

    def forward(self, points: Tensor, start: Tensor | None = None) -> Tensor:
        """Colours of `points` [P, 3]; `start` [P, C] the start colour at each point (RGB in [0, 1] or latents)."""
        raw = self.net(self.encoding((points - self.low) / self.side))
        if self.latent_colour:
            return raw if start is None else raw + start
        if start is not None:
            raw = raw + torch.logit(start.clamp(START_MARGIN, 1.0 - START_MARGIN))
        return torch.sigmoid(raw)
