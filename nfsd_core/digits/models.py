"""The miniature Stable Diffusion's networks: the same classes and layout as SD 1.x, scaled down.

- VAE: diffusers `AutoencoderKL`, RGB 32x32 -> 4 x 8 x 8 latents (downscale factor 4);
- denoiser: `UNet2DConditionModel`, eps-prediction, cross-attention on text at 4x4 and 2x2;
- text encoder: `CLIPTextModel` over the project's own tokenizer, 77-token context;
- schedule: SD's scaled_linear betas 0.00085..0.012 over 1000 steps.
Each builder takes the tokenizer size or nothing, so the architecture lives in one place.
"""

from __future__ import annotations

from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from .data import IMAGE_SIZE
from .tokenizer import MAX_LENGTH

LATENT_CHANNELS = 4
LATENT_SIZE = 8
TEXT_WIDTH = 64


def build_vae() -> AutoencoderKL:
    """0.7 M parameters; `scaling_factor` is set after training to 1 / std of the latents."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=8,
        sample_size=IMAGE_SIZE,
    )


def build_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=8,
    )


def build_text_encoder(tokenizer) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_WIDTH,
        intermediate_size=4 * TEXT_WIDTH,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_LENGTH,
        hidden_act="quick_gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def build_scheduler() -> DDIMScheduler:
    """SD's training schedule (what `NoiseSchedule.scaled_linear()` computes)."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
