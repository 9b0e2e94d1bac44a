"""A Stable Diffusion score model and VAE from a local diffusers model directory.

The directory is the layout `StableDiffusionPipeline.save_pretrained` writes:

    <model>/unet/          UNet2DConditionModel (config.json + weights)
    <model>/vae/           AutoencoderKL
    <model>/text_encoder/  CLIPTextModel
    <model>/tokenizer/     CLIPTokenizer
    <model>/scheduler/     scheduler_config.json (betas and prediction type; no weights)

diffusers and transformers are an optional extra (`pip install ".[diffusers]"`): nothing here
imports them until `load_diffusers` runs, and nothing ever reaches the network.
Latents stay float32 outside; the networks may run in float16 or bfloat16, and every tensor
is cast at the network boundary and handed back in the caller's dtype.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..schedule import NoiseSchedule
from .base import PREDICTION_TYPES, FlatBatchScoreModel, LatentCodec
from .recompute import recompute_in_backward

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CONFIG_FILES = {
    "unet": "config.json",
    "vae": "config.json",
    "text_encoder": "config.json",
    "scheduler": "scheduler_config.json",
}
INSTALL_HINT = (
    'install the optional extra: pip install "noise-free-score-distillation[diffusers]" (".[diffusers]" in a checkout)'
)


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """torch dtype from "fp32" / "fp16" / "bf16" (or a torch dtype among those)."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"unsupported dtype {dtype!r}; choose one of {', '.join(DTYPES)}")


def vae_dtype(config: dict[str, Any], dtype: str | torch.dtype) -> torch.dtype:
    """The VAE's dtype: float32 instead of float16 when its config asks for `force_upcast`."""
    dtype = parse_dtype(dtype)
    return torch.float32 if dtype == torch.float16 and config.get("force_upcast", False) else dtype


def _frozen(module: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """`module` on `device` in `dtype`, in eval mode, without gradients (cast only if needed)."""
    if next(module.parameters()).dtype != dtype:
        module = module.to(dtype=dtype)
    return module.to(device).eval().requires_grad_(False)


class DiffusersScoreModel(FlatBatchScoreModel):
    """A text-conditioned UNet2DConditionModel: conditions are cached CLIP embeddings [1, L, D]."""

    def __init__(
        self,
        unet: nn.Module,
        text_encoder: nn.Module,
        tokenizer: Any,
        schedule: NoiseSchedule,
        prediction_type: str = "epsilon",
        dtype: str | torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ):
        super().__init__(schedule, prediction_type)
        self.dtype = parse_dtype(dtype)
        self._device = torch.device(device)
        self.unet = _frozen(unet, self._device, self.dtype)
        self.text_encoder = _frozen(text_encoder, self._device, self.dtype)
        self.tokenizer = tokenizer
        self._prompt_cache: dict[str, Tensor] = {}

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.in_channels)

    def encode_prompt(self, text: str) -> Tensor:
        """The CLIP embedding [1, L, D] of `text`, computed once per distinct text."""
        if text not in self._prompt_cache:
            self._prompt_cache[text] = self._encode_text(text)
        return self._prompt_cache[text]

    @torch.no_grad()
    def _encode_text(self, text: str) -> Tensor:
        max_length = min(self.tokenizer.model_max_length, self.text_encoder.config.max_position_embeddings)
        tokens = self.tokenizer(text, padding="max_length", max_length=max_length, truncation=True,
                                return_tensors="pt")
        if len(self.tokenizer(text, verbose=False).input_ids) > max_length:
            warnings.warn(f"prompt {text!r} is longer than the text encoder's {max_length} tokens; the rest is cut off")
        use_mask = getattr(self.text_encoder.config, "use_attention_mask", False)
        mask = tokens.attention_mask.to(self._device) if use_mask else None
        return self.text_encoder(tokens.input_ids.to(self._device), attention_mask=mask)[0]

    def denoise(self, x_t: Tensor, t: Tensor, segments: Sequence[tuple[Tensor, int]]) -> Tensor:
        hidden = torch.cat([condition.expand(count, -1, -1) for condition, count in segments])
        output = self.unet(x_t.to(self.dtype), t.to(self._device), encoder_hidden_states=hidden).sample
        return output.to(x_t.dtype)


class DiffusersLatentCodec(LatentCodec):
    """AutoencoderKL: images [B, 3, H, W] in [0, 1] <-> scaled latents [B, C, H / f, W / f].

    Latents are (posterior mean - shift_factor) * scaling_factor, as the UNet was trained on.
    Inputs move to the VAE's device and dtype; outputs come back on the caller's.
    A VAE whose config asks for `force_upcast` runs in float32 when float16 is requested.
    The encoder's blocks recompute their activations in backward rather than keep them
    (`recompute_in_backward`: the same gradients for a fraction of the memory; the VAE given is
    changed in place, which only matters while autograd records).
    """

    def __init__(self, vae: nn.Module, dtype: str | torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        from diffusers.models.attention_processor import Attention
        from diffusers.models.downsampling import Downsample2D
        from diffusers.models.resnet import ResnetBlock2D

        self.dtype = vae_dtype(vae.config, dtype)
        self.device = torch.device(device)
        self.vae = _frozen(vae, self.device, self.dtype)
        recompute_in_backward(self.vae.encoder, (ResnetBlock2D, Downsample2D, Attention))
        self.scaling_factor = float(vae.config.scaling_factor)
        self.shift_factor = float(vae.config.get("shift_factor") or 0.0)
        self.latent_channels = int(vae.config.latent_channels)
        self.downscale_factor = 2 ** (len(vae.config.block_out_channels) - 1)

    def encode(self, images: Tensor) -> Tensor:
        pixels = (images * 2.0 - 1.0).to(device=self.device, dtype=self.dtype)
        latents = (self.vae.encode(pixels).latent_dist.mean - self.shift_factor) * self.scaling_factor
        return latents.to(device=images.device, dtype=images.dtype)

    def decode(self, latents: Tensor) -> Tensor:
        vae_latents = (latents / self.scaling_factor + self.shift_factor).to(device=self.device, dtype=self.dtype)
        images = (self.vae.decode(vae_latents).sample + 1.0) / 2.0
        return images.to(device=latents.device, dtype=latents.dtype).clamp(0.0, 1.0)


def read_component_config(path: str | os.PathLike, component: str) -> dict[str, Any]:
    """The JSON config of one component (`unet`, `vae`, ...) of a diffusers SD directory.

    Reads only the config file, so callers can check sizes before loading any weights.
    Raises FileNotFoundError / ValueError that name the directory and the fix.
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"model directory {str(root)!r} does not exist; pass the folder that "
                                "StableDiffusionPipeline.save_pretrained wrote (with unet/, vae/, text_encoder/, ...)")
    if not root.is_dir():
        raise ValueError(f"model {str(root)!r} is a file, not a diffusers directory; convert single-file checkpoints "
                         "with diffusers' StableDiffusionPipeline.from_single_file(...).save_pretrained(folder)")
    if (root / "transformer").is_dir() or (root / "text_encoder_2").is_dir():
        raise ValueError(f"{str(root)!r} is not a Stable Diffusion 1.x/2.x layout (it has transformer/ or "
                         "text_encoder_2/: SD3, Flux or SDXL); this backend loads UNet2DConditionModel + CLIP models")
    config_file = root / component / CONFIG_FILES[component]
    if not config_file.is_file():
        raise FileNotFoundError(f"{str(root)!r} is not a diffusers Stable Diffusion directory: {component}/"
                                f"{CONFIG_FILES[component]} is missing (expected subfolders: "
                                f"{', '.join(CONFIG_FILES)}, tokenizer)")
    try:
        return json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_file} is not valid JSON ({error}); re-save or re-download the model") from error


def vae_downscale_factor(path: str | os.PathLike) -> int:
    """Pixels per latent of the model at `path`, read from vae/config.json without loading weights."""
    return 2 ** (len(read_component_config(path, "vae")["block_out_channels"]) - 1)


def check_layout(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """All component configs of the SD directory at `path`; raises if anything is missing or foreign."""
    configs = {component: read_component_config(path, component) for component in CONFIG_FILES}
    if not (Path(path) / "tokenizer").is_dir():
        raise FileNotFoundError(f"{str(path)!r} is not a diffusers Stable Diffusion directory: tokenizer/ is missing")
    unet, vae = configs["unet"], configs["vae"]
    unet_class, extra_embedding = unet.get("_class_name"), unet.get("addition_embed_type")
    if unet_class != "UNet2DConditionModel" or extra_embedding is not None:
        raise ValueError(f"{str(path)!r}: unet/ holds a {unet_class} with addition_embed_type={extra_embedding!r}; "
                         "this backend needs a plain Stable Diffusion 1.x/2.x UNet2DConditionModel")
    prediction_type = configs["scheduler"].get("prediction_type", "epsilon")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"{str(path)!r}: scheduler prediction_type {prediction_type!r} is not supported; "
                         f"supported: {', '.join(PREDICTION_TYPES)}")
    if unet.get("in_channels") != vae.get("latent_channels"):
        raise ValueError(f"{str(path)!r}: the UNet takes {unet.get('in_channels')} channels but the VAE makes "
                         f"{vae.get('latent_channels')} (inpainting or depth models are not supported)")
    return configs


def _import_backends():
    try:
        import diffusers
        import transformers
    except ImportError as error:
        message = f"loading a diffusers model needs diffusers and transformers ({error}); {INSTALL_HINT}"
        raise ImportError(message) from error
    return diffusers, transformers


def load_diffusers(
    path: str | os.PathLike, dtype: str | torch.dtype = "fp32", device: str | torch.device = "cpu"
) -> tuple[DiffusersScoreModel, DiffusersLatentCodec]:
    """The score model and the VAE codec of the Stable Diffusion directory at `path`, offline."""
    configs = check_layout(path)
    dtype = parse_dtype(dtype)
    diffusers, transformers = _import_backends()
    local = {"local_files_only": True}  # never reach the network, whatever HF_HUB_OFFLINE says
    weights = {**local, "low_cpu_mem_usage": diffusers.utils.is_accelerate_available()}
    scheduler_class = getattr(diffusers, configs["scheduler"].get("_class_name", ""), diffusers.DDPMScheduler)
    scheduler = scheduler_class.from_pretrained(path, subfolder="scheduler", **local)
    # Zero-terminal-SNR schedules end at alpha_bar = 0, where eps and x_t coincide; keep it invertible.
    schedule = NoiseSchedule(scheduler.alphas_cumprod.double().clamp(min=2.0**-24))
    model = DiffusersScoreModel(
        unet=diffusers.UNet2DConditionModel.from_pretrained(path, subfolder="unet", torch_dtype=dtype, **weights),
        text_encoder=transformers.CLIPTextModel.from_pretrained(path, subfolder="text_encoder", **local),
        tokenizer=transformers.CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", **local),
        schedule=schedule,
        prediction_type=scheduler.config.get("prediction_type", "epsilon"),
        dtype=dtype,
        device=device,
    )
    vae = diffusers.AutoencoderKL.from_pretrained(
        path, subfolder="vae", torch_dtype=vae_dtype(configs["vae"], dtype), **weights
    )
    codec = DiffusersLatentCodec(vae, dtype, device)
    return model, codec
