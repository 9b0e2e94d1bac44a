"""Latent previews: nfsd_core's `LatentToRGB` <-> ComfyUI's latent preview factors, and the
previewer NFSD Optimizer draws its progress images with.

ComfyUI maps a model-space latent pixel to factors^T latent + bias in [-1, 1] and shows
(x + 1) / 2; a LatentToRGB maps it to RGB in [0, 1] directly. The two conversions below are each
other's inverse.
"""

from __future__ import annotations

import latent_preview
import torch
from comfy.cli_args import LatentPreviewMethod, args
from PIL import Image
from torch import Tensor

from ...nfsd_core import LatentToRGB, to_pil
from .codec import ComfyLatentCodec


def latent_to_rgb(latent_format) -> LatentToRGB | None:
    """`latent_format`'s preview factors as a LatentToRGB, or None when it has none."""
    if latent_format.latent_rgb_factors is None:
        return None
    factors = torch.tensor(latent_format.latent_rgb_factors, dtype=torch.float32)  # [C, 3]
    bias = latent_format.latent_rgb_factors_bias
    bias = torch.zeros(3) if bias is None else torch.tensor(bias, dtype=torch.float32)
    return LatentToRGB(matrix=0.5 * factors.T, bias=0.5 * (bias + 1.0))


def preview_factors(preview: LatentToRGB) -> tuple[list[list[float]], list[float]]:
    """`preview` as ComfyUI's (latent_rgb_factors [C][3], latent_rgb_factors_bias [3])."""
    return (2.0 * preview.matrix).T.tolist(), (2.0 * preview.bias - 1.0).tolist()


class VAEPreviewer(latent_preview.LatentPreviewer):
    """Previews through the model's own VAE: the image the Renderer will show, for models whose VAE
    is cheap enough to decode at every preview (NFSD Demo Model's)."""

    def __init__(self, vae, latent_format):
        self.codec = ComfyLatentCodec(vae, latent_format)

    def decode_latent_to_preview(self, x0: Tensor) -> Image.Image:
        return to_pil(self.codec.decode(x0[:1])[0])


def select_previewer(latent_format, device: torch.device) -> latent_preview.LatentPreviewer | None:
    """The previewer for model latents in `latent_format` (None: the format has none).

    A latent format that carries a `preview_vae` (NFSD Demo Model's) is previewed through that VAE.
    Otherwise ComfyUI's samplers' choice (`latent_preview.get_previewer`): the user's --preview-method,
    TAESD from models/vae_approx, else the latent-to-RGB factors. The Optimizer's own `preview_every`
    says whether to preview, so ComfyUI's default method, none, counts as auto (the factors) here.
    """
    vae = getattr(latent_format, "preview_vae", None)
    if vae is not None:
        return VAEPreviewer(vae, latent_format)
    if args.preview_method == LatentPreviewMethod.NoPreviews:
        if latent_format.latent_rgb_factors is None:
            return None
        return latent_preview.Latent2RGBPreviewer(latent_format.latent_rgb_factors,
                                                  latent_format.latent_rgb_factors_bias)
    return latent_preview.get_previewer(device, latent_format)
