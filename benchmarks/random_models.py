"""Random-weight miniature Stable Diffusion models for the timing benchmarks (nothing downloaded).

Built with the library's miniature-SD builders: SD's VAE factor 8 and a two-level UNet of
(64, 128) channels, large enough that the denoiser dominates a step as it does at full size.
"""

from __future__ import annotations

import torch

from nfsd_core import NoiseSchedule
from nfsd_core.models.diffusers import DiffusersLatentCodec, DiffusersScoreModel
from nfsd_core.priors.architecture import MiniatureSD, build_text_encoder, build_unet, build_vae
from nfsd_core.priors.tokenizer import build_tokenizer

BENCHMARK_SD = MiniatureSD(image_size=512, vae_channels=(8, 8, 16, 16), vae_norm_groups=4, unet_channels=(64, 128),
                           cross_attention=(False, True), text_width=32, max_length=128)


def byte_tokenizer():
    """A byte-level CLIP tokenizer (514 tokens), long enough for the default negative prompt."""
    return build_tokenizer([], BENCHMARK_SD.max_length)


def random_models(seed: int = 0) -> tuple[DiffusersScoreModel, DiffusersLatentCodec]:
    """The score model and VAE codec, weights drawn from `seed`."""
    torch.manual_seed(seed)
    tokenizer = byte_tokenizer()
    unet, text_encoder = build_unet(BENCHMARK_SD).eval(), build_text_encoder(BENCHMARK_SD, tokenizer).eval()
    model = DiffusersScoreModel(unet, text_encoder, tokenizer, NoiseSchedule.scaled_linear())
    return model, DiffusersLatentCodec(build_vae(BENCHMARK_SD).eval())
