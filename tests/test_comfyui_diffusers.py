"""The ComfyUI backend and nfsd_core's diffusers backend agree on the same weights.

A tiny diffusers UNet2DConditionModel is converted to ComfyUI's UNet with ComfyUI's own key map
(`comfy.utils.unet_to_diffusers`) and wrapped like a loaded checkpoint; both backends then predict
the noise for the same x_t, t and text embeddings.
"""

import pytest
import torch

from comfyui_helpers import comfyui, requires_comfyui  # noqa: F401
from torchvision_stub import hide_torchvision_stub

pytestmark = requires_comfyui
diffusers = pytest.importorskip("diffusers")
hide_torchvision_stub()  # before transformers imports its models

CONTEXT = 32
# ComfyUI's UNet description of the diffusers model below (one cross-attention level, 8 heads).
UNET_CONFIG = {"image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 32, "num_res_blocks": [1, 1],
               "channel_mult": [1, 2], "transformer_depth": [0, 1], "transformer_depth_output": [0, 0, 1, 1],
               "transformer_depth_middle": 1, "context_dim": CONTEXT, "use_linear_in_transformer": False,
               "adm_in_channels": None, "use_spatial_transformer": True, "legacy": False, "use_checkpoint": False,
               "use_temporal_resblock": False, "use_temporal_attention": False}


def diffusers_unet(seed=0):
    torch.manual_seed(seed)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=CONTEXT, attention_head_dim=8, norm_num_groups=32,  # ComfyUI's UNet uses 32 groups
    ).eval()
    with torch.no_grad():  # diffusers zero-initialises some output layers; make every weight count
        for parameter in unet.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return unet


def comfy_model(runtime, unet, v_prediction):
    """The diffusers weights as a ComfyUI MODEL (ModelPatcher), through ComfyUI's diffusers key map."""
    from comfy import model_base, model_management, model_patcher, utils

    config = runtime.tiny.TinySD1(UNET_CONFIG)
    config.set_inference_dtype(torch.float32, None)
    model_type = model_base.ModelType.V_PREDICTION if v_prediction else model_base.ModelType.EPS
    with torch.inference_mode():
        base = model_base.BaseModel(config, model_type=model_type, device=torch.device("cpu"))
        weights = unet.state_dict()
        key_map = {theirs: ours for theirs, ours in utils.unet_to_diffusers(UNET_CONFIG).items() if theirs in weights}
        assert set(key_map) == set(weights)  # every diffusers weight has its place
        base.diffusion_model.load_state_dict({ours: weights[theirs] for theirs, ours in key_map.items()}, strict=True)
    return model_patcher.ModelPatcher(base, load_device=model_management.get_torch_device(),
                                      offload_device=model_management.unet_offload_device())


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_comfyui_and_diffusers_backends_agree(comfyui, prediction_type):
    from diffusers_helpers import tiny_text_encoder, tiny_tokenizer

    core = comfyui.module("nfsd_core")
    backend = comfyui.module("nodes.adapters.score_model")
    unet = diffusers_unet()
    theirs = core.DiffusersScoreModel(unet, tiny_text_encoder(), tiny_tokenizer(), core.NoiseSchedule.scaled_linear(),
                                      prediction_type)
    ours = backend.ComfyScoreModel(comfy_model(comfyui, unet, prediction_type == "v_prediction"))
    generator = torch.Generator().manual_seed(1)
    embeddings = [torch.randn(1, 77, CONTEXT, generator=generator) for _ in range(2)]
    x_t = torch.randn(3, 4, 8, 8, generator=generator)
    t = torch.tensor([20, 450, 980])

    expected = theirs.predict_noise(x_t, t, [core.NoiseRequest(e) for e in embeddings])
    got = ours.predict_noise(x_t, t, [core.NoiseRequest([[e, {}]]) for e in embeddings])
    for a, b in zip(got, expected):
        error = (a - b).abs().max() / b.abs().max()
        print(f"{prediction_type}: max |ComfyUI - diffusers| / max |diffusers| = {error:.2e}")
        assert error < 1e-4
    assert (expected[0] - expected[1]).abs().max() > 1e-3  # the text embedding matters
