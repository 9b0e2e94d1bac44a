"""NFSD Demo Model: each shipped prior (digits, shapes) built with ComfyUI's classes predicts what
nfsd_core's diffusers backend predicts from the same directory, and core nodes take it like a checkpoint."""

import pytest
import torch

from comfyui_helpers import comfyui, requires_comfyui  # noqa: F401
from torchvision_stub import hide_torchvision_stub

pytestmark = requires_comfyui
pytest.importorskip("diffusers")  # the reference path; the node itself needs neither diffusers nor transformers
hide_torchvision_stub()  # before transformers imports its models

PROMPT = "a handwritten digit seven"
PRIOR_PROMPTS = {"digits": PROMPT, "shapes": "a red mug, side view"}


def load_prior(name: str):
    """(score model, codec) of a shipped prior on nfsd_core's diffusers backend."""
    from comfyui_helpers import comfy_runtime

    return comfy_runtime().module("nfsd_core").SHIPPED_PRIORS[name].load()


@pytest.fixture(scope="module")
def diffusers_prior():
    return load_prior("digits")


@pytest.fixture(scope="module", params=list(PRIOR_PROMPTS))
def shipped(request):
    """(name, its prompt, (score model, codec) on the diffusers backend) of each shipped prior."""
    return request.param, PRIOR_PROMPTS[request.param], load_prior(request.param)


def demo(comfyui, prior: str | None = None):
    """(MODEL, CLIP, VAE) as the node outputs them (`prior` None: not given, the default)."""
    return comfyui.run_node("NFSD_DemoModel", **({} if prior is None else {"prior": prior}))


def encode(comfyui, clip, text):
    return comfyui.run_node("CLIPTextEncode", clip=clip, text=text)[0]


def test_text_encoder_matches_diffusers(comfyui, shipped):
    name, prompt, (theirs, _) = shipped
    _, clip, _ = demo(comfyui, name)
    negative = comfyui.module("nfsd_core").DEFAULT_NEGATIVE_PROMPT
    for text in (prompt, "", negative):
        conditioning = encode(comfyui, clip, text)
        expected = theirs.encode_prompt(text)
        assert conditioning[0][0].shape == expected.shape == (1, 77, 64)
        assert torch.allclose(conditioning[0][0], expected, atol=1e-5), text


def test_noise_predictions_match_diffusers(comfyui, shipped):
    core = comfyui.module("nfsd_core")
    backend = comfyui.module("nodes.adapters.score_model")
    name, prompt, (theirs, _) = shipped
    model, clip, _ = demo(comfyui, name)
    texts = [prompt, "", core.DEFAULT_NEGATIVE_PROMPT]
    generator = torch.Generator().manual_seed(0)
    x_t = torch.randn(5, 4, 8, 8, generator=generator)
    t = torch.tensor([20, 199, 400, 700, 980])

    expected = theirs.predict_noise(x_t, t, [core.NoiseRequest(theirs.encode_prompt(text)) for text in texts])
    ours = backend.ComfyScoreModel(model)
    got = ours.predict_noise(x_t, t, [core.NoiseRequest(encode(comfyui, clip, text)) for text in texts])
    for text, a, b in zip(texts, got, expected):
        for row in range(len(t)):
            error = ((a[row] - b[row]).abs().max() / b[row].abs().max()).item()
            print(f"{text[:30]!r} t={t[row].item()}: max |ComfyUI - diffusers| / max |diffusers| = {error:.1e}")
            assert error < 1e-5
    assert ours.schedule.alphas_cumprod.float().allclose(theirs.schedule.alphas_cumprod.float(), rtol=1e-5)
    assert (expected[0] - expected[1]).abs().max() > 0.01  # the prompt matters


def test_vae_matches_the_diffusers_codec(comfyui, shipped):
    name, _, (_, codec) = shipped
    model, _, vae = demo(comfyui, name)
    latent_format = model.get_model_object("latent_format")
    assert vae.spacial_compression_encode() == vae.spacial_compression_decode() == codec.downscale_factor == 4
    assert latent_format.latent_channels == vae.latent_channels == 4
    assert latent_format.scale_factor == codec.scaling_factor
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    images = codec.decode(latents)
    with torch.inference_mode():
        decoded = vae.decode(latent_format.process_out(latents))  # [B, 32, 32, 3]
        encoded = latent_format.process_in(vae.encode(images.movedim(1, -1)))
    assert decoded.shape == (2, 32, 32, 3)
    assert (decoded.movedim(-1, 1) - images).abs().max() < 1e-5
    assert (encoded - codec.encode(images)).abs().max() < 1e-4


def test_latent_previews_show_the_decoded_digit(comfyui, diffusers_prior):
    """The fitted preview factors follow the decoded brightness as far as a linear map can (r = 0.82 on
    held-out digits, 0.14 mean error), in ComfyUI's convention; SD 1.5's factors, say, would not."""
    import comfy.latent_formats

    _, codec = diffusers_prior
    model, _, _ = demo(comfyui)
    to_preview = comfyui.module("nodes.adapters.preview").latent_to_rgb
    digits = comfyui.module("nfsd_core.digits.evaluator").load_digits_evaluator().split.held_out_digits[:32]
    latents = codec.encode(comfyui.module("nfsd_core.digits.data").to_images(digits))
    decoded = torch.nn.functional.avg_pool2d(codec.decode(latents), 4).mean(dim=1).flatten()

    def agreement(latent_format) -> tuple[float, float]:
        shown = to_preview(latent_format)(latents).mean(dim=1).flatten()  # grey, one value per latent pixel
        return torch.corrcoef(torch.stack([shown, decoded]))[0, 1].item(), (shown - decoded).abs().mean().item()

    ours, our_error = agreement(model.get_model_object("latent_format"))
    sd15, sd15_error = agreement(comfy.latent_formats.SD15())
    print(f"preview vs decoded: fitted r {ours:.2f}, error {our_error:.2f}; SD 1.5's r {sd15:.2f}, error {sd15_error:.2f}")
    assert ours > 0.75 and ours > sd15 + 0.2
    assert our_error < 0.2 and our_error < 0.7 * sd15_error


def test_optimizer_previews_through_the_vae_what_the_renderer_shows(comfyui, monkeypatch):
    """On the demo model the Optimizer's previews are its VAE's decodes, so the last one is the result;
    KSampler keeps ComfyUI's latent-to-RGB previews (one pixel per latent)."""
    import numpy as np
    from comfy.cli_args import LatentPreviewMethod, args

    from comfyui_helpers import progress_hook, text_to_image_prompt

    prompt = text_to_image_prompt(size=32, steps=4, preview_every=2)
    prompt["1"] = {"class_type": "NFSD_DemoModel", "inputs": {}}
    prompt["5"]["inputs"]["vae"] = ["1", 2]
    prompt["10"] = {"class_type": "KSampler", "inputs": {
        "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["6", 1], "seed": 0,
        "steps": 1, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 0.5}}
    prompt["11"] = {"class_type": "PreviewAny", "inputs": {"source": ["10", 0]}}
    monkeypatch.setattr(args, "preview_method", LatentPreviewMethod.Auto)  # KSampler's, off by default
    previews = []
    with progress_hook(lambda value, total, preview, node_id: previews.append((node_id, value, preview))):
        result = comfyui.execute(prompt)
    assert result.success, result.error_message
    ours = [(value, preview[1]) for node_id, value, preview in previews if node_id == "6" and preview]
    assert [(value, image.size) for value, image in ours] == [(2, (32, 32)), (4, (32, 32))]
    rendered = np.asarray(result.values["7"][0][0].numpy() * 255.0)
    assert np.abs(np.asarray(ours[-1][1], dtype=float) - rendered).max() <= 1.0  # uint8 rounding only
    assert np.abs(np.asarray(ours[0][1], dtype=float) - rendered).max() > 1.0  # an earlier state
    sampler = [preview[1] for node_id, value, preview in previews if node_id is None and preview]  # KSampler names none
    assert [image.size for image in sampler] == [(8, 8)]


def test_built_once_with_comfyuis_classes_and_registered_nowhere(comfyui):
    import comfy.ldm.modules.diffusionmodules.model
    import comfy.model_base
    import comfy.model_patcher
    import comfy.ops
    import comfy.sd
    import comfy.supported_models
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    model, clip, vae = demo(comfyui)
    again = demo(comfyui, "digits")  # the default
    assert isinstance(model, comfy.model_patcher.ModelPatcher) and isinstance(model.model, comfy.model_base.BaseModel)
    assert isinstance(model.model.diffusion_model, UNetModel)
    assert isinstance(clip, comfy.sd.CLIP) and isinstance(vae, comfy.sd.VAE)
    assert again[0].model is model.model and again[1].cond_stage_model is clip.cond_stage_model and again[2] is vae
    assert again[0] is not model  # a clone per use: patches on one never reach the other
    assert type(model.model.model_config) not in comfy.supported_models.models
    assert comfy.ldm.modules.diffusionmodules.model.ops is comfy.ops.disable_weight_init  # restored after the build


def test_core_nodes_sample_encode_and_decode_with_it(comfyui):
    prompt = {
        "1": {"class_type": "NFSD_DemoModel", "inputs": {}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": PROMPT}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 2}},  # /8: 8x8
        "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0],
                                                   "latent_image": ["4", 0], "seed": 0, "steps": 4, "cfg": 5.0,
                                                   "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "VAEEncode", "inputs": {"pixels": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
        "9": {"class_type": "PreviewAny", "inputs": {"source": ["7", 0]}},
    }
    result = comfyui.execute(prompt)
    assert result.success, result.error_message
    assert result.values["6"][0].shape == (2, 32, 32, 3)
    assert result.values["7"][0]["samples"].shape == (2, 4, 8, 8)


def test_canvas_takes_its_size_from_the_vae(comfyui):
    _, _, vae = demo(comfyui)
    canvas = comfyui.run_node("NFSD_LatentCanvas", width=32, height=48, batch_size=2, seed=0, vae=vae)[0]
    assert canvas.latent_shape == (2, 4, 12, 8)
    with pytest.raises(ValueError, match="multiples of 4 pixels"):
        comfyui.run_node("NFSD_LatentCanvas", width=30, height=32, batch_size=1, seed=0, vae=vae)
    sd_sized = comfyui.run_node("NFSD_LatentCanvas", width=32, height=32, batch_size=1, seed=0,
                                initial_latent={"samples": torch.zeros(1, 4, 4, 4)})[0]
    with pytest.raises(ValueError, match="sized for a VAE of 8 pixels per latent and 4 latent channels, but the VAE "
                                         "has 4 and 4"):
        comfyui.run_node("NFSD_Renderer", representation=sd_sized, vae=vae)


def test_rgb_nerf_on_demo_model_takes_its_factor_or_names_the_one_to_set(comfyui):
    """The demo VAE shrinks 4x, SD's 8x: a NeRF that leaves the factor to the model takes 4; one told 8 in
    `advanced` says which setting fits this VAE."""
    import json

    from comfyui_helpers import TINY_NERF, text_to_nerf_prompt

    prompt = text_to_nerf_prompt(steps=1)
    prompt["1"] = {"class_type": "NFSD_DemoModel", "inputs": {"prior": "shapes"}}
    result = comfyui.execute(prompt)
    assert result.success, result.error_message
    statistics = json.loads(result.values["6"][2])
    assert statistics["pixels_per_latent"] == 4 and statistics["latents"] == [1, 4, 16, 16]  # guidance_size 64
    told = json.loads(TINY_NERF["advanced"])
    prompt["5"]["inputs"]["advanced"] = json.dumps({**told, "latent_downscale": 8})
    result = comfyui.execute(prompt)
    assert not result.success
    assert "shrinks images 4x but the NeRF expects 8x" in result.error_message
    assert '{"latent_downscale": 4}' in result.error_message
