"""ComfyUI's VAE as an nfsd_core `LatentCodec`: a differentiable encoder, ComfyUI's own decoder.

Latents on the nfsd_core side are the score model's (scaled) latents; ComfyUI's LATENT holds the
VAE's (unscaled) ones. The MODEL's latent format converts between them, as KSampler does with
`process_latent_in`/`process_latent_out`.
"""

from __future__ import annotations

import comfy.ldm.modules.diffusionmodules.model as autoencoder_blocks
import comfy.model_management
import comfy.taesd.taesd
import torch
from torch import Tensor

from ...nfsd_core import LatentCodec, VaeShape, recompute_in_backward, vae_encode_memory
from .autograd import trainable_copy

# The decoders of ComfyUI's VAEs (AutoencoderKL, TAESD): an encode never calls them, so the trainable
# copy leaves them out.
DECODERS = ("decoder", "taesd_decoder")
# The encoder blocks whose activations are recomputed in backward rather than kept (see nfsd_core.models.recompute).
ENCODER_BLOCKS = (autoencoder_blocks.ResnetBlock, autoencoder_blocks.AttnBlock, autoencoder_blocks.Downsample,
                  comfy.taesd.taesd.Block)


def vae_shape(vae) -> VaeShape | None:
    """The shape of a VAE's encoder when it is ComfyUI's Stable Diffusion one (AutoencoderKL's
    `Encoder`: SD 1.x, 2.x, SDXL), else None."""
    encoder = getattr(vae.first_stage_model, "encoder", None)
    if type(encoder) is not autoencoder_blocks.Encoder or not isinstance(encoder.conv_in, torch.nn.Conv2d):
        return None
    return VaeShape(channels=tuple(encoder.ch * mult for mult in encoder.in_ch_mult[1:]),
                    res_blocks=encoder.num_res_blocks, latent_channels=vae.latent_channels)


def encoder_copy_bytes(vae) -> int:
    """Bytes of the trainable copy `ComfyLatentCodec` makes: the VAE without its decoder."""
    tensors = [*vae.first_stage_model.named_parameters(), *vae.first_stage_model.named_buffers()]
    return sum(tensor.numel() * tensor.element_size() for name, tensor in tensors
               if name.split(".")[0] not in DECODERS)


def encode_memory(vae, images: int, height: int, width: int) -> tuple[int, int, int]:
    """(weights, kept, backward) bytes of `ComfyLatentCodec.encode` on `images` images of height x
    width pixels (see nfsd_core's `StepMemory`): the encoder's copy, and its graph as nfsd_core's
    `vae_encode_memory` estimates it for Stable Diffusion's VAEs; for other VAEs ComfyUI's
    estimate of an encode, kept, and three times that in backward."""
    shape = vae_shape(vae)
    if shape is None:
        encode = images * int(vae.memory_used_encode([1, 3, height, width], vae.vae_dtype))
        return encoder_copy_bytes(vae), encode, 3 * encode
    kept, backward = vae_encode_memory(shape, images, height, width, comfy.model_management.dtype_size(vae.vae_dtype))
    return encoder_copy_bytes(vae), kept, backward


class ComfyLatentCodec(LatentCodec):
    """`encode` runs a private, trainable copy of the VAE's encoder (made on first use, once per
    codec), so gradients reach the images while the VAE other nodes share stays untouched; its
    blocks recompute their activations in backward instead of keeping them (the same gradients,
    a fraction of the memory). `decode` is the shared VAE's own memory-managed decode, without
    gradients."""

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
            self._encoder = trainable_copy(self.vae.first_stage_model, DECODERS).to(self.vae.device)
            recompute_in_backward(self._encoder, ENCODER_BLOCKS)
        pixels = self.vae.process_input(images.to(self.vae.device)).to(self.vae.vae_dtype)
        return self.latent_format.process_in(self._encoder.encode(pixels).float())

    def decode(self, latents: Tensor) -> Tensor:
        """model latents [B, C, h, w] -> images [B, 3, h f, w f] in [0, 1] (no gradients)."""
        with torch.inference_mode():
            images = self.vae.decode(self.latent_format.process_out(latents.detach()))
        return images.movedim(-1, 1).to(latents.device).clone()
