"""A diffusers Stable Diffusion 1.x-style directory as ComfyUI's own MODEL, CLIP and VAE.

ComfyUI's diffusers loaders accept only UNets of the sizes it knows (SD 1.5, SDXL, ...). This
builds any SD 1.x-style directory (UNet2DConditionModel, CLIPTextModel, AutoencoderKL; the
layout nfsd_core's `check_layout` accepts) the way those loaders do, with ComfyUI's classes and
key maps, sizes read from the directory's configs:

- MODEL: UNetModel inside a BaseModel inside a ModelPatcher. The model config is built here
  (`DiffusersModelConfig`) and never registered in comfy.supported_models, so checkpoint
  detection for other models is unchanged. Weights are renamed by `comfy.utils.unet_to_diffusers`.
- CLIP: comfy.sd.CLIP over SD1's tokenizer and text-model classes, given the directory's
  tokenizer and text config. Its output is the last layer after the final layer norm, which
  is diffusers' `last_hidden_state`.
- VAE: comfy.sd.VAE, with the weights converted by `comfy.diffusers_convert` and the
  directory's downscale factor.

ComfyUI's classes fix three things that a small model may choose differently, and each
difference is handled explicitly. GroupNorm layers have 32 groups in ComfyUI's UNet and VAE
blocks. ComfyUI's CLIP text model always holds CLIP's 49408 token embeddings. Its diffusers VAE
conversion assumes SD's four decoder levels. Everything runs in float32: the models are small,
and the numbers then match diffusers'.
"""

from __future__ import annotations

import functools
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor

import comfy.diffusers_convert
import comfy.latent_formats
import comfy.ldm.modules.diffusionmodules.model as comfy_vae_blocks
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.ops
import comfy.sd
import comfy.sd1_clip
import comfy.supported_models_base
import comfy.utils

from ...nfsd_core import LatentToRGB, check_layout, fit_latent_to_rgb, vae_downscale_factor
from .codec import ComfyLatentCodec
from .preview import preview_factors

WEIGHT_FILES = {"unet": "diffusion_pytorch_model.safetensors", "vae": "diffusion_pytorch_model.safetensors",
                "text_encoder": "model.safetensors"}
MODEL_TYPES = {"epsilon": comfy.model_base.ModelType.EPS, "v_prediction": comfy.model_base.ModelType.V_PREDICTION}
BETA_SCHEDULES = {"scaled_linear": "linear", "linear": "sqrt_linear"}  # diffusers' name -> ComfyUI's
COMFY_GROUP_NORM_GROUPS = 32
SD_VAE_LEVELS = 4  # comfy.diffusers_convert maps decoder level i to SD's up.{3 - i}
TOKEN_EMBEDDING = "text_model.embeddings.token_embedding.weight"
TEXT_PROJECTION = "text_projection.weight"


def load_weights(directory: Path, component: str) -> dict[str, Tensor]:
    """The float32 weights of one component (`unet`, `vae`, `text_encoder`) of the directory."""
    path = directory / component / WEIGHT_FILES[component]
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the diffusers directory {directory} is incomplete")
    return {name: weight.float() for name, weight in comfy.utils.load_torch_file(str(path), safe_load=True).items()}


def check_same_keys(component: str, weights: dict[str, Tensor], expected: dict[str, Tensor]) -> None:
    """Raise if the converted `weights` do not fill exactly the parameters ComfyUI's module has."""
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise ValueError(f"the {component} weights do not fit ComfyUI's {component}: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")


def group_norm_operations(groups: int):
    """ComfyUI's layer set (comfy.ops.disable_weight_init) whose GroupNorm always has `groups` groups,
    whatever count a block asks for."""
    layers = comfy.ops.disable_weight_init
    if groups == COMFY_GROUP_NORM_GROUPS:
        return layers

    class GroupedLayers(layers):
        class GroupNorm(layers.GroupNorm):
            def __init__(self, num_groups, num_channels, *args, **kwargs):
                super().__init__(groups, num_channels, *args, **kwargs)

    return GroupedLayers


# ----------------------------------------------------------------------------------------- MODEL

def unet_config(config: dict) -> dict:
    """ComfyUI UNetModel arguments for a diffusers UNet2DConditionModel config of SD 1.x/2.x layout."""
    channels, layers = config["block_out_channels"], config["layers_per_block"]
    depth = config["transformer_layers_per_block"]
    if not isinstance(layers, int) or not isinstance(depth, int):
        raise ValueError("per-block layers_per_block / transformer_layers_per_block lists are not supported")
    attends_down = ["CrossAttn" in kind for kind in config["down_block_types"]]
    attends_up = ["CrossAttn" in kind for kind in reversed(config["up_block_types"])]  # finest level first
    return {
        "image_size": config["sample_size"], "in_channels": config["in_channels"],
        "out_channels": config["out_channels"], "model_channels": channels[0],
        "channel_mult": [width // channels[0] for width in channels], "num_res_blocks": [layers] * len(channels),
        "transformer_depth": [depth if attends else 0 for attends in attends_down for _ in range(layers)],
        "transformer_depth_output": [depth if attends else 0 for attends in attends_up for _ in range(layers + 1)],
        "transformer_depth_middle": depth, "context_dim": config["cross_attention_dim"],
        # diffusers' SD 1.x naming: without num_attention_heads, "attention_head_dim" counts the heads
        "num_heads": config.get("num_attention_heads") or config["attention_head_dim"], "num_head_channels": -1,
        "use_linear_in_transformer": config["use_linear_projection"], "adm_in_channels": None,
        "use_spatial_transformer": True, "legacy": False, "use_checkpoint": False,
        "use_temporal_resblock": False, "use_temporal_attention": False,
    }


def sampling_settings(scheduler: dict) -> dict:
    """ComfyUI's discrete-sampling settings for a diffusers scheduler config."""
    schedule = scheduler.get("beta_schedule", "linear")
    if schedule not in BETA_SCHEDULES or scheduler.get("trained_betas"):
        raise ValueError(f"beta schedule {schedule!r} is not supported; supported: {', '.join(BETA_SCHEDULES)}")
    return {"beta_schedule": BETA_SCHEDULES[schedule], "linear_start": scheduler["beta_start"],
            "linear_end": scheduler["beta_end"], "timesteps": scheduler["num_train_timesteps"],
            "zsnr": bool(scheduler.get("rescale_betas_zero_snr", False))}


class DiffusersLatentFormat(comfy.latent_formats.LatentFormat):
    """The VAE's latents: `channels` of them, each `pixels_per_latent` pixels wide, scaled by its
    `scaling_factor` for the UNet. The pixels per latent are `spacial_downscale_ratio`, the name newer
    ComfyUI's latent formats give them, so the Optimizer can check a canvas against the MODEL.

    `latent_rgb_factors` [C][3] and `latent_rgb_factors_bias` [3] are None until `set_preview`.
    `preview_vae`: a VAE cheap enough to decode every preview with; NFSD Optimizer then previews
    through it (see preview.select_previewer), others use the factors."""

    preview_vae = None

    def __init__(self, scale_factor: float, channels: int, pixels_per_latent: int):
        self.scale_factor = scale_factor
        self.latent_channels = channels
        self.spacial_downscale_ratio = pixels_per_latent

    def set_preview(self, preview: LatentToRGB) -> None:
        """Use `preview` (model latents -> RGB in [0, 1]) as the latent preview factors."""
        self.latent_rgb_factors, self.latent_rgb_factors_bias = preview_factors(preview)


class DiffusersModelConfig(comfy.supported_models_base.BASE):
    """A supported_models-style config for one directory, built in code and never registered.

    `native_image_size`: pixels per side of the images the model was trained on (the UNet's
    sample_size in latents, times the latents' pixels), which ComfyUI's own configs do not record."""

    unet_extra_config = {}  # the heads are in the UNet config already
    memory_usage_factor = 1.0

    def __init__(self, unet: dict, latent_format: DiffusersLatentFormat, sampling: dict, operations):
        super().__init__(unet)
        self.latent_format = latent_format
        self.sampling_settings = sampling
        self.custom_operations = operations
        self.native_image_size = unet["image_size"] * latent_format.spacial_downscale_ratio
        self.set_inference_dtype(torch.float32, None)


def build_model(directory: Path, configs: dict, latent_format: DiffusersLatentFormat):
    """The UNet as a ComfyUI MODEL (ModelPatcher)."""
    unet = configs["unet"]
    layout = unet_config(unet)
    model_config = DiffusersModelConfig(layout, latent_format, sampling_settings(configs["scheduler"]),
                                        group_norm_operations(unet["norm_num_groups"]))
    offload = comfy.model_management.unet_offload_device()
    base = comfy.model_base.BaseModel(model_config, model_type=MODEL_TYPES[configs["scheduler"].get(
        "prediction_type", "epsilon")], device=offload)
    key_map = comfy.utils.unet_to_diffusers(layout)  # diffusers name -> ComfyUI name
    weights = load_weights(directory, "unet")
    converted = {key_map.get(name, name): weight for name, weight in weights.items()}
    check_same_keys("UNet", converted, base.diffusion_model.state_dict())
    base.diffusion_model.load_state_dict(converted)
    return comfy.model_patcher.ModelPatcher(base, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=offload)


# ------------------------------------------------------------------------------------------ CLIP

def build_clip(directory: Path, text_config: dict) -> comfy.sd.CLIP:
    """The text encoder and tokenizer as a ComfyUI CLIP, the way CLIPTextEncode uses SD 1.x's."""
    width, length = text_config["hidden_size"], text_config["max_position_embeddings"]
    tokenizer = functools.partial(comfy.sd1_clip.SD1Tokenizer, tokenizer=functools.partial(
        comfy.sd1_clip.SDTokenizer, tokenizer_path=str(directory / "tokenizer"), max_length=length,
        pad_with_end=True, embedding_size=width, embedding_key="clip_l"))
    special_tokens = {"start": text_config["bos_token_id"], "end": text_config["eos_token_id"],
                      "pad": text_config["pad_token_id"]}
    text_model = functools.partial(comfy.sd1_clip.SDClipModel, textmodel_json_config=dict(text_config),
                                   max_length=length, special_tokens=special_tokens, layer="last",
                                   return_projected_pooled=False)
    target = comfy.supported_models_base.ClipTarget(tokenizer, functools.partial(comfy.sd1_clip.SD1ClipModel,
                                                                                 clip_model=text_model))
    clip = comfy.sd.CLIP(target, model_options={"dtype": torch.float32})
    expected = clip.cond_stage_model.clip_l.transformer.state_dict()
    weights = {name if name.startswith("text_model.") else f"text_model.{name}": weight
               for name, weight in load_weights(directory, "text_encoder").items()}
    weights.pop("text_model.embeddings.position_ids", None)
    vocabulary = weights[TOKEN_EMBEDDING]  # ComfyUI's table has CLIP's 49408 rows; ours fill its top
    weights[TOKEN_EMBEDDING] = torch.cat([vocabulary, vocabulary.new_zeros(
        expected[TOKEN_EMBEDDING].shape[0] - vocabulary.shape[0], width)])
    weights[TEXT_PROJECTION] = torch.eye(width)  # CLIPTextModel has none; SD 1.x conditioning never uses it
    check_same_keys("text encoder", weights, expected)
    clip.load_sd(weights)
    return clip


# ------------------------------------------------------------------------------------------- VAE

@contextmanager
def vae_block_layers(layers) -> Iterator[None]:
    """ComfyUI's VAE Encoder and Decoder take their layers from the module-level `ops` of
    comfy.ldm.modules.diffusionmodules.model, with no argument to pass others: while the VAE is
    built (milliseconds), that name points at `layers`, and at ComfyUI's own again after."""
    original = comfy_vae_blocks.ops
    comfy_vae_blocks.ops = layers
    try:
        yield
    finally:
        comfy_vae_blocks.ops = original


def vae_weights(weights: dict[str, Tensor], levels: int) -> dict[str, Tensor]:
    """AutoencoderKL weights in ComfyUI's names, by ComfyUI's own conversion. That conversion numbers
    decoder levels for SD's four, so a VAE with fewer has its up blocks numbered as the last ones."""
    if levels > SD_VAE_LEVELS:
        raise ValueError(f"a VAE with {levels} levels is not supported (at most {SD_VAE_LEVELS})")
    shift = SD_VAE_LEVELS - levels
    renamed = {re.sub(r"^decoder\.up_blocks\.(\d+)\.", lambda m: f"decoder.up_blocks.{int(m[1]) + shift}.", name):
               weight for name, weight in weights.items()}
    return comfy.diffusers_convert.convert_vae_state_dict(renamed)


def build_vae(directory: Path, config: dict) -> comfy.sd.VAE:
    """The AutoencoderKL as a ComfyUI VAE (images [B, H, W, 3] <-> unscaled latents)."""
    channels = config["block_out_channels"]
    ddconfig = {"double_z": True, "z_channels": config["latent_channels"], "resolution": config["sample_size"],
                "in_channels": config["in_channels"], "out_ch": config["out_channels"], "ch": channels[0],
                "ch_mult": [width // channels[0] for width in channels], "num_res_blocks": config["layers_per_block"],
                "attn_resolutions": [], "dropout": 0.0}
    params = {"ddconfig": ddconfig, "embed_dim": config["latent_channels"]}
    weights = vae_weights(load_weights(directory, "vae"), len(channels))
    with vae_block_layers(group_norm_operations(config["norm_num_groups"])):
        vae = comfy.sd.VAE(sd=weights, config={"params": params}, dtype=torch.float32)
    check_same_keys("VAE", weights, vae.first_stage_model.state_dict())
    vae.downscale_ratio = vae.upscale_ratio = vae_downscale_factor(directory)
    vae.latent_channels = config["latent_channels"]
    return vae


# -------------------------------------------------------------------------------------- together

def load_diffusers_sd(directory: str | Path, calibration_images: Tensor | None = None,
                      preview_through_vae: bool = False):
    """(MODEL, CLIP, VAE) of the diffusers SD directory, built with ComfyUI's classes.

    `calibration_images` [B, 3, H, W] in [0, 1], typical of the model's images, fit the latent
    preview factors (KSampler's previews, and NFSD Optimizer's unless `preview_through_vae`);
    without them there are none. `preview_through_vae`: NFSD Optimizer previews through the VAE
    (for a VAE as small as the demo model's).
    """
    directory = Path(directory)
    configs = check_layout(directory)
    vae_config = configs["vae"]
    if vae_config.get("shift_factor"):
        raise ValueError(f"{directory}: VAEs with a shift_factor are not supported")
    vae = build_vae(directory, vae_config)
    latent_format = DiffusersLatentFormat(float(vae_config["scaling_factor"]), vae.latent_channels,
                                          vae.spacial_compression_encode())
    if calibration_images is not None:
        codec = ComfyLatentCodec(vae, latent_format)
        latents = latent_format.process_in(vae.encode(calibration_images.movedim(1, -1)))
        latent_format.set_preview(fit_latent_to_rgb(codec, latents))
    if preview_through_vae:
        latent_format.preview_vae = vae
    return build_model(directory, configs, latent_format), build_clip(directory, configs["text_encoder"]), vae
