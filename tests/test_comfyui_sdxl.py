"""SDXL end to end through real ComfyUI, on micro SDXL checkpoints that stock CheckpointLoaderSimple
loads as SDXL (tests/comfyui_packs/tiny_sd_register: ComfyUI's SDXL config, model class, latent format
and dual CLIP-L + CLIP-G text encoder, at micro size).

What SDXL adds to SD is its ADM vector `y`: CLIP-G's pooled output, then the image's size, crop and
target size. These tests record what the model receives in a KSampler run and in the NFSD nodes'
runs, and check both against ComfyUI's own `encode_adm` for the latents' pixel size.
"""

import json

import pytest
import torch

from comfyui_helpers import GUIDANCE_DEFAULTS, REPO, TINY_NERF, comfyui, requires_comfyui  # noqa: F401
from comfyui_workflow import ui_to_api

pytestmark = requires_comfyui

SDXL = "tiny_sdxl.safetensors"
SDXL_SCALE = 0.13025  # SDXL's latent scale factor (SD 1.x/2.x: 0.18215)


def encode(comfyui, clip, text):
    return comfyui.run_node("CLIPTextEncode", clip=clip, text=text)[0]


def recording(model):
    """A clone of MODEL that records each model call: its input, sigma, conditions (c_crossattn, y) and
    output, one row of the batch per entry."""
    rows = []

    def wrapper(apply_model, args):
        output = apply_model(args["input"], args["timestep"], **args["c"])
        c = args["c"]
        for r in range(output.shape[0]):
            rows.append({"x": args["input"][r:r + 1].clone(), "sigma": args["timestep"][r:r + 1].clone(),
                         "context": c["c_crossattn"][r].clone(), "y": c["y"][r].clone(),
                         "output": output[r:r + 1].clone()})
        return output

    patched = model.clone()
    patched.set_model_unet_function_wrapper(wrapper)
    return patched, rows


def text_of(row, prompts: dict) -> str:
    """Which of `prompts` (text -> CONDITIONING) the row's cross-attention context is."""
    (text,) = [text for text, conditioning in prompts.items() if torch.equal(row["context"], conditioning[0][0][0])]
    return text


def adm(model, conditioning, **size):
    """SDXL's ADM vector [adm_in_channels] for a CONDITIONING, by ComfyUI's own encode_adm."""
    return model.model.encode_adm(pooled_output=conditioning[0][1]["pooled_output"], **size)[0]


def run_canvas(comfyui, model, clip, positive, width, height, batch=2, steps=2):
    """Guidance (NFSD; the empty and negative prompts encoded by the node from `clip`) -> Latent Canvas ->
    Optimizer (previews every step, through SDXL's latent-to-RGB factors); the Optimizer's outputs."""
    (nfsd,) = comfyui.run_node("NFSD_ScoreDistillationGuidance", model=model, positive=positive, clip=clip,
                               **GUIDANCE_DEFAULTS)
    (canvas,) = comfyui.run_node("NFSD_LatentCanvas", width=width, height=height, batch_size=batch, seed=0)
    return comfyui.run_node("NFSD_Optimizer", guidance=nfsd, representation=canvas, steps=steps, learning_rate=0.05,
                            seed=3, preview_every=1)


def test_tiny_checkpoint_loads_as_comfyuis_sdxl(comfyui):
    import comfy.latent_formats
    import comfy.model_base
    import comfy.sdxl_clip
    import comfy.supported_models

    tiny = comfyui.tiny
    model, clip, vae = comfyui.load_checkpoint(SDXL)
    assert type(model.model) is comfy.model_base.SDXL
    assert isinstance(model.model.model_config, comfy.supported_models.SDXL)
    latent_format = model.get_model_object("latent_format")
    assert type(latent_format) is comfy.latent_formats.SDXL and latent_format.scale_factor == SDXL_SCALE
    assert isinstance(clip.cond_stage_model, comfy.sdxl_clip.SDXLClipModel)
    [[context, options]] = encode(comfyui, clip, "a red apple")
    widths = tiny.TINY_CLIP_L["hidden_size"], tiny.TINY_CLIP_G["hidden_size"]
    assert context.shape == (1, 77, sum(widths))  # CLIP-L's and CLIP-G's penultimate layers side by side
    assert options["pooled_output"].shape == (1, widths[1])  # CLIP-G's projected pooled output
    assert model.model.diffusion_model.label_emb[0][0].in_features == widths[1] + tiny.SDXL_SIZE_EMBEDDING
    assert (vae.spacial_compression_encode(), vae.latent_channels) == (8, 4)
    v_model = comfyui.load_checkpoint("tiny_sdxl_v.safetensors")[0]
    assert comfyui.module("nodes.adapters.score_model").ComfyScoreModel(v_model).prediction_type == "v_prediction"


def test_encoded_prompts_are_clip_text_encodes_with_pooled_outputs(comfyui):
    model, clip, _ = comfyui.load_checkpoint(SDXL)
    core = comfyui.module("nfsd_core")
    positive = encode(comfyui, clip, "a red apple")
    (guidance,) = comfyui.run_node("NFSD_ScoreDistillationGuidance", model=model, positive=positive, clip=clip,
                                   **GUIDANCE_DEFAULTS)
    for made, text in ((guidance.prompts.unconditional, ""), (guidance.prompts.negative, core.DEFAULT_NEGATIVE_PROMPT)):
        [[context, options]], [[expected_context, expected_options]] = made, encode(comfyui, clip, text)
        assert torch.equal(context, expected_context)
        assert set(options) == set(expected_options) == {"pooled_output"}
        assert torch.equal(options["pooled_output"], expected_options["pooled_output"])

    (views,) = comfyui.run_node("NFSD_ViewPrompts", clip=clip, text="a red apple", overhead_view=True)
    assert len(views) == len(core.VIEW_SUFFIXES)
    for (context, options), (view, suffix) in zip(views, core.VIEW_SUFFIXES.items()):
        [[expected_context, expected_options]] = encode(comfyui, clip, f"a red apple, {suffix}")
        assert options["nfsd_view"] == view
        assert torch.equal(context, expected_context)
        assert torch.equal(options["pooled_output"], expected_options["pooled_output"])
    assert not torch.equal(views[0][1]["pooled_output"], views[2][1]["pooled_output"])  # front and back differ


def test_the_model_gets_ksamplers_size_conditioning(comfyui):
    """A 64x48 canvas (8x6 latents, batch 2): every call the Optimizer makes carries the ADM vector
    KSampler gives the same prompts for latents of that size (width 64, height 48, no crop, target the
    same), and its output is a bare apply_model's for the CLIPTextEncode conditioning and that vector."""
    import comfy.model_management

    model, clip, _ = comfyui.load_checkpoint(SDXL)
    core = comfyui.module("nfsd_core")
    prompts = {text: encode(comfyui, clip, text) for text in ("a red apple", "", core.DEFAULT_NEGATIVE_PROMPT)}
    size = {"width": 64, "height": 48}

    ksampler_model, ksampler_rows = recording(model)
    comfyui.run_node("KSampler", model=ksampler_model, seed=0, steps=1, cfg=7.5, sampler_name="euler",
                     scheduler="normal", positive=prompts["a red apple"], negative=prompts[""],
                     latent_image={"samples": torch.zeros(2, 4, 6, 8)}, denoise=1.0)
    nfsd_model, nfsd_rows = recording(model)
    _, latent, statistics, _ = run_canvas(comfyui, nfsd_model, clip, prompts["a red apple"], **size)
    assert latent["samples"].shape == (2, 4, 6, 8)
    assert json.loads(statistics)["steps_done"] == 2

    ksampler_y = {text_of(row, prompts): row["y"] for row in ksampler_rows}
    assert set(ksampler_y) == {"a red apple", ""}
    seen = set()
    comfy.model_management.load_models_gpu([model])
    for row in nfsd_rows:
        text = text_of(row, prompts)
        seen.add(text)
        expected_y = adm(model, prompts[text], **size)
        assert torch.equal(row["y"], expected_y), text
        if text in ksampler_y:
            assert torch.equal(row["y"], ksampler_y[text]), text
        with torch.inference_mode():
            denoised = model.model.apply_model(row["x"], row["sigma"], c_crossattn=prompts[text][0][0],
                                               y=expected_y[None])
        assert (denoised - row["output"]).abs().max() <= 1e-5 * row["output"].abs().max(), text
    assert seen == set(prompts)
    assert not torch.equal(adm(model, prompts[""], width=48, height=64), ksampler_y[""])  # width and height in order


def test_encoded_prompts_take_an_sdxl_positives_size(comfyui):
    """A CLIPTextEncodeSDXL positive (1024 px, cropped) on a 64 px canvas: the empty and negative prompts the
    Guidance encodes get its size conditioning too (as diffusers' SDXL pipeline gives its negative), not
    the canvas's."""
    model, clip, _ = comfyui.load_checkpoint(SDXL)
    core = comfyui.module("nfsd_core")
    size = {"width": 1024, "height": 1024, "crop_w": 16, "crop_h": 0, "target_width": 1024, "target_height": 1024}
    (positive,) = comfyui.run_node("CLIPTextEncodeSDXL", clip=clip, text_g="a red apple", text_l="a red apple",
                                   **size)
    prompts = {text: encode(comfyui, clip, text) for text in ("", core.DEFAULT_NEGATIVE_PROMPT)}
    prompts["a red apple"] = positive
    recorded, rows = recording(model)
    run_canvas(comfyui, recorded, clip, positive, width=64, height=64, batch=1, steps=4)
    y_of = {text_of(row, prompts): row["y"] for row in rows}
    assert set(y_of) == set(prompts)
    for text, y in y_of.items():
        assert torch.equal(y, adm(model, prompts[text], **size)), text
        assert not torch.equal(y, adm(model, prompts[text], width=64, height=64)), text


@pytest.mark.parametrize("checkpoint,prediction_type", [(SDXL, "epsilon"), ("tiny_sdxl_v.safetensors", "v_prediction")])
def test_noise_predictions_equal_bare_apply_model(comfyui, checkpoint, prediction_type):
    """As test_comfyui_backend checks for SD: eps = (x - apply_model(x, sigma)) / sigma, x = x_t / sqrt(ab),
    here with SDXL's ADM vector for the latents' size (8x8 latents: 64 px)."""
    import comfy.model_management

    backend = comfyui.module("nodes.adapters.score_model")
    core = comfyui.module("nfsd_core")
    model, clip, _ = comfyui.load_checkpoint(checkpoint)
    positive, empty = encode(comfyui, clip, "a red apple"), encode(comfyui, clip, "")
    score_model = backend.ComfyScoreModel(model)
    assert score_model.prediction_type == prediction_type
    x_t = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([50, 400, 900])
    predictions = score_model.predict_noise(x_t, t, [core.NoiseRequest(positive), core.NoiseRequest(empty)])

    comfy.model_management.load_models_gpu([model])
    sampling = model.get_model_object("model_sampling")
    with torch.inference_mode():
        sigma = sampling.sigma(t.float())
        x = x_t * (1 + sigma**2).sqrt().view(-1, 1, 1, 1)
        for eps, conditioning in zip(predictions, (positive, empty)):
            y = adm(model, conditioning, width=64, height=64).repeat(3, 1)
            denoised = model.model.apply_model(x, sigma, c_crossattn=conditioning[0][0].repeat(3, 1, 1), y=y)
            reference = (x - denoised) / sigma.view(-1, 1, 1, 1)
            assert (eps - reference).abs().max() < 1e-5
    assert (predictions[0] - predictions[1]).abs().max() > 1e-4  # the prompt matters


def test_latents_are_in_sdxl_units(comfyui):
    """LATENTs hold the VAE's units; the model's are SDXL's (x 0.13025, not SD's 0.18215): a canvas started
    from a LATENT is scaled in, and a step of lr 1e-4 gives it back within 1e-4 / 0.13025."""
    model, clip, vae = comfyui.load_checkpoint(SDXL)
    start = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))}
    (canvas,) = comfyui.run_node("NFSD_LatentCanvas", width=64, height=64, batch_size=1, seed=0, initial_latent=start)
    score_model = comfyui.module("nodes.adapters.score_model").ComfyScoreModel(model)
    built = canvas.build(score_model.latent_format, torch.device("cpu"))
    assert torch.allclose(built.latents, start["samples"] * SDXL_SCALE)
    positive = encode(comfyui, clip, "a red apple")
    (nfsd,) = comfyui.run_node("NFSD_ScoreDistillationGuidance", model=model, positive=positive, clip=clip,
                               **GUIDANCE_DEFAULTS)
    _, latent, *_ = comfyui.run_node("NFSD_Optimizer", guidance=nfsd, representation=canvas, steps=1,
                                    learning_rate=1e-4, seed=0, preview_every=0)
    change = (latent["samples"] - start["samples"]).abs().max()
    assert 0 < change <= 1.01e-4 / SDXL_SCALE

    codec = comfyui.module("nodes.adapters.codec").ComfyLatentCodec(vae, score_model.latent_format)
    images = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode(False):
        encoded = codec.encode(images.movedim(-1, 1).clone()).detach()
    with torch.inference_mode():
        assert torch.allclose(encoded, vae.encode(images) * SDXL_SCALE, atol=1e-5)


def shipped(comfyui, name: str, **settings) -> dict:
    """A shipped workflow in API format, on the micro SDXL at CPU sizes (as test_comfyui_workflows)."""
    from test_comfyui_workflows import shrink

    prompt = shrink(ui_to_api(json.loads((REPO / "workflows" / f"{name}.json").read_text()), comfyui.object_info()))
    for node in prompt.values():
        node["inputs"].update({"CheckpointLoaderSimple": {"ckpt_name": SDXL}, **settings}.get(node["class_type"], {}))
    return prompt


@pytest.fixture
def adm_calls(monkeypatch):
    """The keyword arguments of every SDXL encode_adm call (ComfyUI's process_conds makes one per condition)."""
    import comfy.model_base

    calls = []
    encode_adm = comfy.model_base.SDXL.encode_adm

    def recorded(self, **kwargs):
        calls.append(kwargs)
        return encode_adm(self, **kwargs)

    monkeypatch.setattr(comfy.model_base.SDXL, "encode_adm", recorded)
    return calls


def test_canvas_workflow_runs_on_sdxl(comfyui, adm_calls):
    prompt = shipped(comfyui, "nfsd_text_to_image", NFSD_LatentCanvas={"width": 64, "height": 48})
    result = comfyui.execute(prompt)
    assert result.valid and result.success, result.error_message
    (renderer,) = [node_id for node_id, node in prompt.items() if node["class_type"] == "NFSD_Renderer"]
    assert result.values[renderer][0].shape == (1, 48, 64, 3)
    assert len(adm_calls) == 3  # the prompt, the empty prompt (encoded by the Guidance) and the negative prompt
    assert {(call["width"], call["height"], call["pooled_output"].shape) for call in adm_calls} == {(64, 48, (1, 64))}


@pytest.mark.parametrize("colour", ["rgb", "latent"])
def test_nerf_workflow_runs_on_sdxl(comfyui, adm_calls, colour):
    """The shipped text-to-NeRF graph at CI size: View Prompts on SDXL's CLIP, the model conditioned on the
    guidance size (64 px here; 1024 for a real SDXL) for each view's prompt and the empty and negative ones."""
    prompt = shipped(comfyui, "nfsd_text_to_nerf", NFSD_NeRFRepresentation={**TINY_NERF, "colour": colour})
    result = comfyui.execute(prompt)
    assert result.valid and result.success, result.error_message
    (optimizer,) = [node_id for node_id, node in prompt.items() if node["class_type"] == "NFSD_Optimizer"]
    assert json.loads(result.values[optimizer][2])["steps_done"] == 3
    assert len(adm_calls) == 5  # three views (the default cameras never look from overhead), empty, negative
    sizes = {(call["width"], call["height"], call["pooled_output"].shape) for call in adm_calls}
    assert sizes == {(TINY_NERF["guidance_size"],) * 2 + ((1, 64),)}
