"""Tiny random Stable Diffusion components, built in code and saved as a local diffusers directory.

Nothing is downloaded: the tokenizer is byte-level (256 byte tokens, 256 end-of-word tokens and
the two CLIP specials, no merges), so every model here builds in milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from torchvision_stub import hide_torchvision_stub

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
hide_torchvision_stub()  # an import-only torchvision (ComfyUI's CPU test venv) would break transformers

TEXT_WIDTH = 32
MAX_TOKENS = 128  # byte-level tokens: long enough for the default negative prompt


def tiny_tokenizer() -> "transformers.CLIPTokenizer":
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    characters = list(bytes_to_unicode().values())
    tokens = characters + [c + "</w>" for c in characters] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    return transformers.CLIPTokenizer(vocab=vocab, merges=[], model_max_length=MAX_TOKENS)


def tiny_text_encoder(seed: int = 0) -> "transformers.CLIPTextModel":
    torch.manual_seed(seed)
    config = transformers.CLIPTextConfig(
        vocab_size=514, hidden_size=TEXT_WIDTH, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=MAX_TOKENS, bos_token_id=512, eos_token_id=513,
    )
    return transformers.CLIPTextModel(config).eval()


def tiny_unet(seed: int = 0, channels: tuple[int, int] = (32, 64), layers_per_block: int = 1):
    torch.manual_seed(seed)
    return diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=channels,
        layers_per_block=layers_per_block, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=TEXT_WIDTH, attention_head_dim=8,
        norm_num_groups=8,
    ).eval()


def tiny_vae(seed: int = 0):
    """An AutoencoderKL with Stable Diffusion's factor 8 (four blocks) and 4 latent channels."""
    torch.manual_seed(seed)
    return diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 16, 16), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=4,
        scaling_factor=0.18215,
    ).eval()


def tiny_scheduler(prediction_type: str = "epsilon"):
    return diffusers.DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                   prediction_type=prediction_type, clip_sample=False)


def save_tiny_sd(directory: Path, prediction_type: str = "epsilon", seed: int = 0) -> Path:
    """Write a tiny Stable Diffusion directory (the layout save_pretrained makes) and return it."""
    directory = Path(directory)
    tiny_unet(seed).save_pretrained(directory / "unet")
    tiny_vae(seed).save_pretrained(directory / "vae")
    tiny_text_encoder(seed).save_pretrained(directory / "text_encoder")
    tiny_tokenizer().save_pretrained(directory / "tokenizer")
    tiny_scheduler(prediction_type).save_pretrained(directory / "scheduler")
    return directory


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory) -> Path:
    """A tiny epsilon-prediction SD directory shared by the whole session (treat it as read-only)."""
    return save_tiny_sd(tmp_path_factory.mktemp("tiny-sd"))
