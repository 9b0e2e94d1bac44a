"""The ComfyUI score-model backend: its noise predictions against ComfyUI's own model calls."""

import pytest
import torch

from comfyui_helpers import comfyui, requires_comfyui  # noqa: F401

pytestmark = requires_comfyui


def encode(comfyui, clip, text):
    return comfyui.run_node("CLIPTextEncode", clip=clip, text=text)[0]


def reference_noise(model, x_t, t, conditioning):
    """eps from a bare apply_model call: x = x_t / sqrt(ab), eps = (x - x0) / sigma."""
    import comfy.model_management

    comfy.model_management.load_models_gpu([model])
    base = model.model
    sampling = model.get_model_object("model_sampling")
    with torch.inference_mode():
        sigma = sampling.sigma(t.float())
        x = x_t * (1 + sigma**2).sqrt().view(-1, 1, 1, 1)
        context = conditioning[0][0].repeat(x.shape[0], 1, 1)
        denoised = base.apply_model(x, sigma, c_crossattn=context)
        return ((x - denoised) / sigma.view(-1, 1, 1, 1)).clone()


def raw_network_noise(model, x_t, t, conditioning, prediction_type):
    """eps from the UNet's own output in the DDPM convention (v converted with nfsd_core's formula)."""
    from nfsd_core.models import noise_from_v

    base = model.model
    sampling = model.get_model_object("model_sampling")
    schedule_ab = 1 / (1 + sampling.sigma(t.float()) ** 2)
    with torch.inference_mode():
        context = conditioning[0][0].repeat(x_t.shape[0], 1, 1)
        output = base.diffusion_model(x_t, t.float(), context=context).float()
        return output if prediction_type == "epsilon" else noise_from_v(output, x_t, schedule_ab)


@pytest.mark.parametrize("checkpoint,prediction_type,negative_rows,calls", [
    ("tiny_sd_eps.safetensors", "epsilon", [1, 2], 2),  # all rows for prompt + empty prompt, then the negative's rows
    ("tiny_sd_v.safetensors", "v_prediction", [1, 2], 2),
    ("tiny_sd_eps.safetensors", "epsilon", [0, 1, 2], 1),  # every row in order: one call of 9 rows
])
def test_predictions_equal_bare_apply_model(comfyui, checkpoint, prediction_type, negative_rows, calls):
    backend = comfyui.module("nodes.adapters.score_model")
    core = comfyui.module("nfsd_core")
    model, clip, _ = comfyui.load_checkpoint(checkpoint)
    positive, empty, negative = (encode(comfyui, clip, text) for text in ("a red apple", "", "blurry"))
    score_model = backend.ComfyScoreModel(model)
    assert score_model.prediction_type == prediction_type

    x_t = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([50, 400, 900])
    requests = [core.NoiseRequest(positive), core.NoiseRequest(empty),
                core.NoiseRequest(negative, torch.tensor(negative_rows))]
    eps_c, eps_u, eps_n = score_model.predict_noise(x_t, t, requests)

    assert score_model.forward_calls == calls
    assert score_model.evaluations == 3 + 3 + len(negative_rows)
    for eps, conditioning, rows in ((eps_c, positive, [0, 1, 2]), (eps_u, empty, [0, 1, 2]),
                                    (eps_n, negative, negative_rows)):
        assert not eps.is_inference()
        reference = reference_noise(model, x_t[rows], t[rows], conditioning)
        raw = raw_network_noise(model, x_t[rows], t[rows], conditioning, prediction_type)
        print(f"{prediction_type}: max |backend - apply_model| = {(eps - reference).abs().max():.1e}, "
              f"max |backend - UNet output in DDPM form| / max = {(eps - raw).abs().max() / raw.abs().max():.1e}")
        assert (eps - reference).abs().max() < 1e-5
        assert (eps - raw).abs().max() < 1e-4 * raw.abs().max()
    assert (eps_c - eps_u).abs().max() > 1e-4  # the prompt matters


def test_schedule_is_the_models_own(comfyui):
    backend = comfyui.module("nodes.adapters.score_model")
    core = comfyui.module("nfsd_core")
    model, _, _ = comfyui.load_checkpoint()
    schedule = backend.ComfyScoreModel(model).schedule
    sampling = model.get_model_object("model_sampling")
    t = torch.tensor([0, 199, 200, 500, 999])
    assert torch.allclose(schedule.sigma(t), sampling.sigma(t.float()), rtol=1e-5)
    assert torch.equal(schedule.timestep(sampling.sigma(t.float())), t)
    sd_schedule = core.NoiseSchedule.scaled_linear()  # SD's betas: the tiny model uses SD15 settings
    assert torch.allclose(schedule.alphas_cumprod, sd_schedule.alphas_cumprod, atol=1e-6)


@pytest.mark.parametrize("node,settings,accepted", [
    ("ModelSamplingDiscrete", {"sampling": "v_prediction", "zsnr": False}, "v_prediction"),
    ("ModelSamplingDiscrete", {"sampling": "lcm", "zsnr": False}, "epsilon"),
    ("ModelSamplingDiscrete", {"sampling": "x0", "zsnr": False}, None),
    ("ModelSamplingSD3", {"shift": 3.0}, None),
    ("ModelSamplingContinuousEDM", {"sampling": "edm", "sigma_max": 120.0, "sigma_min": 0.002}, None),
])
def test_model_types_the_rules_cannot_serve_are_refused(comfyui, node, settings, accepted):
    backend = comfyui.module("nodes.adapters.score_model")
    model, _, _ = comfyui.load_checkpoint()
    patched = comfyui.run_node(node, model=model, **settings)[0]
    if accepted:
        assert backend.ComfyScoreModel(patched).prediction_type == accepted
    else:
        with pytest.raises(backend.UnsupportedModelError, match="cannot be used for score distillation"):
            backend.ComfyScoreModel(patched)


POOLED = 32
TINY_SDXL_UNET = {"image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 32, "num_res_blocks": [1, 1],
                  "channel_mult": [1, 2], "transformer_depth": [0, 1], "transformer_depth_output": [0, 0, 1, 1],
                  "transformer_depth_middle": 1, "context_dim": 32, "use_linear_in_transformer": True,
                  "adm_in_channels": POOLED + 6 * 256, "num_classes": "sequential", "use_spatial_transformer": True,
                  "legacy": False, "use_checkpoint": False, "use_temporal_resblock": False,
                  "use_temporal_attention": False}


def tiny_sdxl(runtime, v_prediction):
    """An SDXL-architecture MODEL (pooled text + size conditioning through `y`) with random weights."""
    from comfy import model_base, model_management, model_patcher, supported_models

    config = supported_models.SDXL(TINY_SDXL_UNET)
    config.set_inference_dtype(torch.float32, None)
    model_type = model_base.ModelType.V_PREDICTION if v_prediction else model_base.ModelType.EPS
    with torch.inference_mode():  # weights made as ComfyUI's loaders make them: inference tensors
        base = model_base.SDXL(config, model_type=model_type, device=torch.device("cpu"))
        runtime.tiny.init_random_(base.diffusion_model, seed=3)
    return model_patcher.ModelPatcher(base, load_device=model_management.get_torch_device(),
                                      offload_device=model_management.unet_offload_device())


@pytest.mark.parametrize("v_prediction", [False, True])
def test_sdxl_gets_its_pooled_and_size_conditioning(comfyui, v_prediction):
    import comfy.model_management as model_management

    backend = comfyui.module("nodes.adapters.score_model")
    core = comfyui.module("nfsd_core")
    model = tiny_sdxl(comfyui, v_prediction)
    generator = torch.Generator().manual_seed(2)
    text, pooled = torch.randn(1, 77, 32, generator=generator), torch.randn(1, POOLED, generator=generator)
    default_size = [[text, {"pooled_output": pooled}]]  # size from the latent: 8 x 8 latents = 64 x 64 pixels
    explicit_size = [[text, {"pooled_output": pooled, "width": 1024, "height": 768, "crop_w": 16}]]
    x_t = torch.randn(2, 4, 8, 8, generator=generator)
    t = torch.tensor([300, 700])
    score_model = backend.ComfyScoreModel(model)
    got = score_model.predict_noise(x_t, t, [core.NoiseRequest(default_size), core.NoiseRequest(explicit_size)])

    model_management.load_models_gpu([model])
    sampling = model.get_model_object("model_sampling")
    with torch.inference_mode():
        sigma = sampling.sigma(t.float())
        x = x_t * (1 + sigma**2).sqrt().view(-1, 1, 1, 1)
        for eps, size in zip(got, [{"width": 64, "height": 64}, {"width": 1024, "height": 768, "crop_w": 16}]):
            y = model.model.encode_adm(pooled_output=pooled, **size).repeat(2, 1)
            denoised = model.model.apply_model(x, sigma, c_crossattn=text.repeat(2, 1, 1), y=y)
            reference = (x - denoised) / sigma.view(-1, 1, 1, 1)
            assert (eps - reference).abs().max() < 1e-5
    assert (got[0] - got[1]).abs().max() > 1e-4  # the size conditioning reaches the model


def tiny_sd2(runtime, v_prediction):
    """An SD 2.x-config MODEL (no pooled conditioning) with random weights."""
    from comfy import model_base, model_management, model_patcher, supported_models

    unet = {**TINY_SDXL_UNET, "adm_in_channels": None, "num_classes": None}
    config = supported_models.SD20(unet)
    config.set_inference_dtype(torch.float32, None)
    model_type = model_base.ModelType.V_PREDICTION if v_prediction else model_base.ModelType.EPS
    with torch.inference_mode():
        base = model_base.BaseModel(config, model_type=model_type, device=torch.device("cpu"))
    return model_patcher.ModelPatcher(base, load_device=model_management.get_torch_device(),
                                      offload_device=model_management.unet_offload_device())


@pytest.mark.parametrize("family, v_prediction, pixels", [
    ("sd1", False, 512), ("sd1", True, 512), ("sd2", False, 512), ("sd2", True, 768), ("sdxl", False, 1024),
    ("sdxl", True, 1024)])
def test_the_models_own_image_size_and_pixels_per_latent(comfyui, family, v_prediction, pixels):
    """What a NeRF's guidance_size 0 becomes: SD 1.x and 2.x-base 512, SD 2.x-768 (v-prediction) 768, SDXL 1024;
    SD's latents are 8 pixels wide (NFSD Demo Model's 32 and 4: tests/test_comfyui_new_user.py)."""
    backend = comfyui.module("nodes.adapters.score_model")
    if family == "sd1":
        model = comfyui.load_checkpoint("tiny_sd_v.safetensors" if v_prediction else "tiny_sd_eps.safetensors")[0]
    else:
        model = (tiny_sd2 if family == "sd2" else tiny_sdxl)(comfyui, v_prediction)
    score_model = backend.ComfyScoreModel(model)
    assert score_model.prediction_type == ("v_prediction" if v_prediction else "epsilon")
    assert (score_model.native_image_size, score_model.pixels_per_latent) == (pixels, 8)
