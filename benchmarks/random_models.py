"""Random-weight Stable Diffusion models for the timing benchmarks (nothing downloaded).

`random_models`: built with the library's miniature-SD builders, SD's VAE factor 8 and a two-level
UNet of (64, 128) channels, large enough that the denoiser dominates a step as it does at full
size. `sd21_base_models`: Stable Diffusion 2.1-base's own architectures in diffusers' classes.
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


SD_TOKENS = 77  # CLIP's context: SD 2.1's text encoder has this many positions


def sd21_base_models(device: str, dtype: torch.dtype) -> tuple[DiffusersScoreModel, DiffusersLatentCodec]:
    """Stable Diffusion 2.1-base's UNet, VAE and text encoder architectures with random weights."""
    import diffusers
    import transformers

    unet = diffusers.UNet2DConditionModel(
        sample_size=64, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
        block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    )
    vae = diffusers.AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.18215,
    )
    text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=514, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
        max_position_embeddings=SD_TOKENS, hidden_act="gelu", bos_token_id=512, eos_token_id=513,
    ))
    model = DiffusersScoreModel(unet, text_encoder, build_tokenizer([], SD_TOKENS), NoiseSchedule.scaled_linear(),
                                dtype=dtype, device=device)
    return model, DiffusersLatentCodec(vae, dtype=dtype, device=device)
