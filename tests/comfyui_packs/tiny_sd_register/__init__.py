"""TEST ONLY: teaches a stock ComfyUI to load micro Stable Diffusion checkpoints.

No real model config matches a UNet this small (SD15 needs 320 channels and a 768-wide
context), so this pack registers `TinySD1`: the SD15 configuration with 32 channels, a
32-wide context and a 2-layer CLIP-L. The integration tests drop it into their temporary
custom_nodes folder next to the NFSD pack; stock `CheckpointLoaderSimple` then loads the
checkpoints `write_micro_checkpoint` makes, in eps or v-prediction flavour.

`TinySDXL` does the same for SDXL: ComfyUI's SDXL configuration (model class `model_base.SDXL`
with its ADM size conditioning, latent format SDXL, SDXL's tokenizer and dual text encoder) with
a 32-channel UNet and 3-layer CLIP-L and CLIP-G (context 32 + 64 wide, pooled output 64 wide).
ComfyUI's own SDXL detection cannot be met at a tiny size: it wants a UNet of 320 channels, a
2048-wide context, 2816 ADM inputs and 2+2+10+10 transformer blocks (134 M parameters at the
least), and it always builds the full CLIP-L and CLIP-G bigG (818 M parameters, 1.6 GB in fp16).
"""

import torch
from safetensors.torch import save_file

import comfy.cldm.cldm
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.ops
import comfy.sd
import comfy.sd1_clip
import comfy.sdxl_clip
import comfy.supported_models
import comfy.supported_models_base
import comfy.taesd.taesd

TINY_CLIP = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2,
             "projection_dim": 32}
# SDXL reads both encoders' penultimate layer: 3 layers each. CLIP-G is wider; its pooled output
# (projected, hidden_size wide in ComfyUI's CLIP) starts SDXL's ADM vector.
TINY_CLIP_L = {**TINY_CLIP, "num_hidden_layers": 3}
TINY_CLIP_G = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2, "num_hidden_layers": 3}
TINY_UNET = {"image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 32,
             "num_res_blocks": [1, 1], "channel_mult": [1, 2], "transformer_depth": [1, 1],
             "transformer_depth_output": [1, 1, 1, 1], "transformer_depth_middle": 1, "context_dim": 32,
             "use_linear_in_transformer": False, "adm_in_channels": None, "use_spatial_transformer": True,
             "legacy": False, "use_checkpoint": False, "use_temporal_resblock": False,
             "use_temporal_attention": False}

SDXL_SIZE_EMBEDDING = 6 * 256  # model_base.SDXL.encode_adm: height, width, crop_h, crop_w, target h and w, 256 each
TINY_SDXL_UNET = {**TINY_UNET, "transformer_depth": [0, 1], "transformer_depth_output": [0, 0, 1, 1],
                  "context_dim": TINY_CLIP_L["hidden_size"] + TINY_CLIP_G["hidden_size"],  # CLIP-L || CLIP-G
                  "use_linear_in_transformer": True, "num_classes": "sequential",
                  "adm_in_channels": TINY_CLIP_G["hidden_size"] + SDXL_SIZE_EMBEDDING}


class TinyClipModel(comfy.sd1_clip.SD1ClipModel):
    def __init__(self, device="cpu", dtype=None, model_options={}, **kwargs):
        super().__init__(device=device, dtype=dtype, model_options={**model_options, "clip_l_model_config": TINY_CLIP},
                         **kwargs)


class TinySD1(comfy.supported_models.SD15):
    unet_config = {"context_dim": 32, "model_channels": 32, "use_linear_in_transformer": False,
                   "adm_in_channels": None, "use_temporal_attention": False}

    def model_type(self, state_dict, prefix=""):
        return comfy.model_base.ModelType.V_PREDICTION if "v_pred" in state_dict else comfy.model_base.ModelType.EPS

    def clip_target(self, state_dict={}):
        return comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, TinyClipModel)


class TinySDXLClipModel(comfy.sdxl_clip.SDXLClipModel):
    def __init__(self, device="cpu", dtype=None, model_options={}):
        super().__init__(device=device, dtype=dtype, model_options={
            **model_options, "clip_l_model_config": TINY_CLIP_L, "clip_g_model_config": TINY_CLIP_G})


class TinySDXL(comfy.supported_models.SDXL):
    unet_config = {key: TINY_SDXL_UNET[key] for key in comfy.supported_models.SDXL.unet_config}

    def clip_target(self, state_dict={}):
        return comfy.supported_models_base.ClipTarget(comfy.sdxl_clip.SDXLTokenizer, TinySDXLClipModel)


for tiny_config in (TinySD1, TinySDXL):
    if not any(config.__name__ == tiny_config.__name__ for config in comfy.supported_models.models):
        comfy.supported_models.models.insert(0, tiny_config)


def init_random_(module: torch.nn.Module, std: float = 0.02, seed: int = 0) -> torch.nn.Module:
    """Fill weights in place (comfy.ops layers are created empty): normal(0, std), norms at 1, biases 0."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            weight, bias = getattr(m, "weight", None), getattr(m, "bias", None)
            if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
                if weight is not None:
                    weight.fill_(1.0)
            elif isinstance(weight, torch.nn.Parameter):
                weight.copy_(torch.randn(weight.shape, generator=generator) * std)
            if isinstance(bias, torch.nn.Parameter):
                bias.zero_()
    return module


def build_micro_model(v_prediction: bool = False, seed: int = 0, sdxl: bool = False):
    """(MODEL, CLIP, VAE) of TinySD1 (or TinySDXL) with random weights; the VAE is a TAESD (detected
    from its keys: 8 pixels per latent, 4 channels, as SD's and SDXL's)."""
    taesd = init_random_(comfy.taesd.taesd.TAESD(), std=0.1, seed=seed)
    taesd.vae_scale.data.fill_(1.0)
    taesd.vae_shift.data.zero_()
    vae = comfy.sd.VAE(sd=taesd.state_dict())
    config = TinySDXL(TINY_SDXL_UNET) if sdxl else TinySD1(TINY_UNET)
    config.set_inference_dtype(torch.float32, None)
    model_type = comfy.model_base.ModelType.V_PREDICTION if v_prediction else comfy.model_base.ModelType.EPS
    model_class = comfy.model_base.SDXL if sdxl else comfy.model_base.BaseModel
    base = model_class(config, model_type=model_type, device=torch.device("cpu"))
    init_random_(base.diffusion_model, seed=seed + 1)
    model = comfy.model_patcher.ModelPatcher(base, load_device=comfy.model_management.get_torch_device(),
                                             offload_device=comfy.model_management.unet_offload_device())
    clip = comfy.sd.CLIP(config.clip_target(), model_options={"dtype": torch.float32})
    init_random_(clip.cond_stage_model, seed=seed + 2)
    return model, clip, vae


def write_micro_checkpoint(path: str, v_prediction: bool = False, seed: int = 0, sdxl: bool = False) -> str:
    """Save a micro checkpoint (about 20 MiB; SDXL 33 MiB) that stock CheckpointLoaderSimple loads."""
    model, clip, vae = build_micro_model(v_prediction, seed, sdxl)
    comfy.sd.save_checkpoint(path, model, clip, vae)
    return path


def write_tiny_controlnet(path: str, seed: int = 0) -> str:
    """Save a ControlNet for TinySD1 (3-channel hint at 8x the latent size) that ControlNetLoader loads."""
    config = {**TinySD1(TINY_UNET).unet_config, "hint_channels": 3}
    config.pop("out_channels")
    control = comfy.cldm.cldm.ControlNet(**config, device=torch.device("cpu"), operations=comfy.ops.disable_weight_init)
    init_random_(control, std=0.05, seed=seed)  # random zero-convs too, so the control is felt
    save_file({k: v.contiguous() for k, v in control.state_dict().items()}, path)
    return path


NODE_CLASS_MAPPINGS = {}
