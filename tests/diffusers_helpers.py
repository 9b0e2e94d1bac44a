"""Tiny random Stable Diffusion components, built in code and saved as a local diffusers directory.

The library's miniature-SD builders at test size. Nothing is downloaded: the tokenizer is
byte-level (256 byte tokens, 256 end-of-word tokens and the two CLIP specials, no merges), so
every model here builds in milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from torchvision_stub import hide_torchvision_stub

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
hide_torchvision_stub()  # an import-only torchvision (ComfyUI's CPU test venv) would break transformers

from nfsd_core.priors.architecture import (  # noqa: E402
    MiniatureSD, build_scheduler, build_text_encoder, build_unet, build_vae,
)
from nfsd_core.priors.tokenizer import build_tokenizer  # noqa: E402

# SD's VAE factor 8 (four blocks), a two-level UNet; 128 byte-level tokens fit the default negative prompt.
TINY_SD = MiniatureSD(image_size=64, vae_channels=(8, 8, 16, 16), vae_norm_groups=4, unet_channels=(32, 64),
                      cross_attention=(False, True), text_width=32, max_length=128)


def tiny_tokenizer() -> "transformers.CLIPTokenizer":
    return build_tokenizer([], TINY_SD.max_length)


def tiny_text_encoder(seed: int = 0) -> "transformers.CLIPTextModel":
    torch.manual_seed(seed)
    return build_text_encoder(TINY_SD, tiny_tokenizer()).eval()


def tiny_unet(seed: int = 0):
    torch.manual_seed(seed)
    return build_unet(TINY_SD).eval()


def tiny_vae(seed: int = 0):
    torch.manual_seed(seed)
    return build_vae(TINY_SD).eval()


def tiny_scheduler(prediction_type: str = "epsilon"):
    return build_scheduler(prediction_type)


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
