"""ComfyUI's VAE as an nfsd_core `LatentCodec`: a differentiable encoder, ComfyUI's own decoder.

Latents on the nfsd_core side are the score model's (scaled) latents; ComfyUI's LATENT holds the
VAE's (unscaled) ones. The MODEL's latent format converts between them, as KSampler does with
`process_latent_in`/`process_latent_out`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...nfsd_core import LatentCodec
from .autograd import trainable_copy


class ComfyLatentCodec(LatentCodec):
    """`encode` runs a private, trainable copy of the VAE (made on first use, once per codec), so
    gradients reach the images while the VAE other nodes share stays untouched; `decode` is the
    shared VAE's own memory-managed decode, without gradients."""

    def __init__(self, vae, latent_format):
        vae.throw_exception_if_invalid()
        self.vae = vae
        self.latent_format = latent_format
        self.latent_channels = vae.latent_channels
        self.downscale_factor = vae.spacial_compression_encode()
        self._encoder = None

    def encode(self, images: Tensor) -> Tensor:
        """images [B, 3, H, W] in [0, 1] -> model latents [B, C, H/f, W/f], differentiable."""
        if images.shape[-2] % self.downscale_factor or images.shape[-1] % self.downscale_factor:
            raise ValueError(f"image size {tuple(images.shape[-2:])} is not a multiple of the VAE's "
                             f"downscale factor {self.downscale_factor}")
        if self._encoder is None:
            self._encoder = trainable_copy(self.vae.first_stage_model).to(self.vae.device)
        pixels = self.vae.process_input(images.to(self.vae.device)).to(self.vae.vae_dtype)
        return self.latent_format.process_in(self._encoder.encode(pixels).float())

    def decode(self, latents: Tensor) -> Tensor:
        """model latents [B, C, h, w] -> images [B, 3, h f, w f] in [0, 1] (no gradients)."""
        with torch.inference_mode():
            images = self.vae.decode(self.latent_format.process_out(latents.detach()))
        return images.movedim(-1, 1).to(latents.device).clone()
