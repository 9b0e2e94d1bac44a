"""Miniature Stable Diffusion networks: SD 1.x's classes and layout, scaled down by a config.

`MiniatureSD` names every size that differs between the miniatures this project builds (the
digits prior, the test and benchmark models); the builders turn it into diffusers and
transformers modules, so an architecture lives in one place:

- VAE: `AutoencoderKL`, RGB `image_size` -> `latent_channels` x `latent_size`^2, one 2x downscale
  per VAE block after the first;
- denoiser: eps-prediction `UNet2DConditionModel`, cross-attention on text at the levels
  `cross_attention` marks;
- text encoder: `CLIPTextModel` over the prior's tokenizer, `max_length`-token context;
- schedule: SD's scaled_linear betas 0.00085..0.012 over 1000 steps.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel


@dataclass(frozen=True)
class MiniatureSD:
    """Sizes of a miniature SD; the defaults are the shipped digits prior's."""

    image_size: int = 32
    vae_channels: tuple[int, ...] = (16, 32, 64)
    vae_norm_groups: int = 8
    latent_channels: int = 4
    unet_channels: tuple[int, ...] = (32, 64, 64)
    cross_attention: tuple[bool, ...] = (False, True, True)
    unet_norm_groups: int = 8
    attention_head_dim: int = 8
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 4
    max_length: int = 77
    scaling_factor: float = 0.18215  # SD's; training replaces it with 1 / std of the real latents

    def __post_init__(self):
        if len(self.cross_attention) != len(self.unet_channels):
            raise ValueError(f"cross_attention needs one flag per UNet level ({len(self.unet_channels)}), "
                             f"got {len(self.cross_attention)}")
        if self.image_size % self.downscale:
            raise ValueError(f"image_size {self.image_size} is not a multiple of the VAE's factor {self.downscale}")

    @property
    def downscale(self) -> int:
        """Pixels per latent."""
        return 2 ** (len(self.vae_channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.image_size // self.downscale


def build_vae(architecture: MiniatureSD) -> AutoencoderKL:
    blocks = len(architecture.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        block_out_channels=architecture.vae_channels,
        layers_per_block=1,
        latent_channels=architecture.latent_channels,
        norm_num_groups=architecture.vae_norm_groups,
        sample_size=architecture.image_size,
        scaling_factor=architecture.scaling_factor,
    )


def build_unet(architecture: MiniatureSD) -> UNet2DConditionModel:
    down = tuple("CrossAttnDownBlock2D" if cross else "DownBlock2D" for cross in architecture.cross_attention)
    up = tuple("CrossAttnUpBlock2D" if cross else "UpBlock2D" for cross in reversed(architecture.cross_attention))
    return UNet2DConditionModel(
        sample_size=architecture.latent_size,
        in_channels=architecture.latent_channels,
        out_channels=architecture.latent_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=architecture.unet_channels,
        layers_per_block=1,
        norm_num_groups=architecture.unet_norm_groups,
        cross_attention_dim=architecture.text_width,
        attention_head_dim=architecture.attention_head_dim,
    )


def build_text_encoder(architecture: MiniatureSD, tokenizer) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=architecture.text_width,
        intermediate_size=4 * architecture.text_width,
        num_hidden_layers=architecture.text_layers,
        num_attention_heads=architecture.text_heads,
        max_position_embeddings=architecture.max_length,
        hidden_act="quick_gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def build_scheduler(prediction_type: str = "epsilon") -> DDIMScheduler:
    """SD's training schedule (what `NoiseSchedule.scaled_linear()` computes)."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type=prediction_type,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
