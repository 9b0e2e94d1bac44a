"""What the NeRF and the mesh texture share: images rendered from cameras, in RGB or in latents.

An RGB render reaches the score model through the codec (the VAE), with gradient, after resizing
to `guidance_size` pixels; a latent render (Latent-NeRF, Latent-Paint) is resized to
guidance_size / latent_downscale latents and handed over as it is. The codec, the latent-to-RGB
map and the interrupt check are tools, not state: they are kept out of the module tree, so they
are neither optimised, moved by `.to()`, nor written into checkpoints.
"""

from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor

from ..models.base import LatentCodec
from ..preview import LatentToRGB
from .base import Representation


class RenderedRepresentation(Representation):
    """A representation seen through rendered images. Subclasses set `self.settings`, which has
    `colour` ("rgb" or "latent"), `latent_channels`, `latent_downscale` and `guidance_size`."""

    noun = "representation"  # what the messages call it
    codec: LatentCodec | None
    latent_rgb: LatentToRGB | None
    check_interrupt: Callable[[], None] | None

    def attach(self, codec: LatentCodec | None = None, latent_rgb: LatentToRGB | None = None,
               check_interrupt: Callable[[], None] | None = None):
        """Set the codec, the latent-to-RGB map and/or the interrupt check given (kept outside the
        module tree, see the module doc); returns the representation."""
        if codec is not None and self.latent_colour and codec.latent_channels != self.settings.latent_channels:
            raise ValueError(
                f"the codec makes {codec.latent_channels}-channel latents but this {self.noun} renders "
                f"{self.settings.latent_channels}; set latent_channels={codec.latent_channels} in its settings"
            )
        for name, tool in (("codec", codec), ("latent_rgb", latent_rgb), ("check_interrupt", check_interrupt)):
            if tool is not None or name not in self.__dict__:
                self.__dict__[name] = tool
        return self

    @property
    def latent_colour(self) -> bool:
        return self.settings.colour == "latent"

    def to_rgb(self, colour: Tensor) -> Tensor:
        """RGB [B, H', W', 3] in [0, 1] of rendered colours [B, H, W, C] (latents: through
        `latent_rgb`, else decoded by the codec, at its resolution)."""
        if not self.latent_colour:
            return colour.clamp(0.0, 1.0)
        latents = colour.permute(0, 3, 1, 2)
        if self.latent_rgb is not None:
            return self.latent_rgb(latents).permute(0, 2, 3, 1)
        if self.codec is not None:
            return self.codec.decode(latents).permute(0, 2, 3, 1).clamp(0.0, 1.0)
        raise ValueError("latent renders need a latent_rgb map (nfsd_core.preview) or a codec to become RGB; "
                         "attach one")

    def latents_for_guidance(self, colour: Tensor) -> Tensor:
        """Score-model latents [B, C, h, w] of rendered colours [B, H, W, C], differentiably."""
        images = colour.permute(0, 3, 1, 2)
        if self.latent_colour:
            return resize(images, self.settings.guidance_size // self.settings.latent_downscale)
        if self.codec is None:
            raise ValueError(f"an RGB {self.noun} needs a codec (the VAE) to reach the score model's "
                             "latents; attach one")
        return self.codec.encode(resize(images, self.settings.guidance_size))


def resize(images: Tensor, size: int) -> Tensor:
    """Bilinear resize of [B, C, H, W] to size x size (threestudio's interpolation), if needed."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, (size, size), mode="bilinear", align_corners=False)
