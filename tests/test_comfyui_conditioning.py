"""Area, timestep-range, hook and ControlNet conditioning and model patches reach the backend as they
reach KSampler: its noise predictions equal the ones KSampler's CFG step sees."""

import torch

from comfyui_helpers import comfyui, requires_comfyui  # noqa: F401

pytestmark = requires_comfyui


def conditioning(comfyui, model, clip):
    """(positive, negative): an area prompt, a hooked prompt and a ControlNet on top of a full prompt."""
    encode = lambda text: comfyui.run_node("CLIPTextEncode", clip=clip, text=text)[0]  # noqa: E731
    corner = comfyui.run_node("ConditioningSetArea", conditioning=encode("a green leaf"), width=64, height=64, x=0,
                            y=0, strength=1.0)[0]
    early = comfyui.run_node("ConditioningSetTimestepRange", conditioning=corner, start=0.0, end=0.5)[0]
    (hooks,) = comfyui.run_node("CreateHookModelAsLoraModelOnly", ckpt_name="tiny_sd_v.safetensors", strength_model=0.5)
    hooked = comfyui.run_node("ConditioningSetProperties", cond_NEW=encode("a red apple"), strength=1.0,
                            set_cond_area="default", hooks=hooks)[0]
    positive = comfyui.run_node("ConditioningCombine", conditioning_1=hooked, conditioning_2=early)[0]
    (control,) = comfyui.run_node("ControlNetLoader", control_net_name="tiny_controlnet.safetensors")
    hint = comfyui.run_node("EmptyImage", width=128, height=128, batch_size=1, color=0x3366AA)[0]
    return comfyui.run_node("ControlNetApplyAdvanced", positive=positive, negative=encode(""), control_net=control,
                          image=hint, strength=0.8, start_percent=0.0, end_percent=1.0)


def test_backend_sees_what_ksampler_sees(comfyui):
    backend = comfyui.module("nodes.adapters.score_model")
    core = comfyui.module("nfsd_core")
    model, clip, _ = comfyui.load_checkpoint()
    (other, _, _) = comfyui.load_checkpoint("tiny_sd_v.safetensors")
    model = comfyui.run_node("ModelMergeSimple", model1=model, model2=other, ratio=0.7)[0].clone()  # a weight patch
    positive, negative = conditioning(comfyui, model, clip)

    seen = []

    def capture(args):  # KSampler's CFG: record the first step's predictions, then guide as usual
        if not seen:
            seen.append({key: args[key].clone() for key in ("input", "sigma", "cond_denoised", "uncond_denoised")})
        return args["uncond"] + (args["cond"] - args["uncond"]) * args["cond_scale"]

    model.set_model_sampler_cfg_function(capture)
    latent = {"samples": torch.zeros(1, 4, 16, 16)}
    comfyui.run_node("KSampler", model=model, seed=5, steps=2, cfg=4.0, sampler_name="euler", scheduler="normal",
                   positive=positive, negative=negative, latent_image=latent)
    first = seen[0]

    sampling = model.get_model_object("model_sampling")
    t = sampling.timestep(first["sigma"]).long()
    sigma = sampling.sigma(t.float())
    assert torch.allclose(sigma, first["sigma"])  # KSampler's first sigma is the model's largest, t = 999
    x_t = first["input"] / (1 + sigma**2).sqrt()
    score_model = backend.ComfyScoreModel(model)
    eps = score_model.predict_noise(x_t, t, [core.NoiseRequest(positive), core.NoiseRequest(negative)])
    for prediction, key in zip(eps, ("cond_denoised", "uncond_denoised")):
        denoised = first["input"] - prediction * sigma
        assert (denoised - first[key]).abs().max() < 1e-4 * first[key].abs().max(), key

    plain = backend.ComfyScoreModel(comfyui.load_checkpoint()[0])
    text = comfyui.run_node("CLIPTextEncode", clip=clip, text="a red apple")[0]
    plain_eps = plain.predict_noise(x_t, t, [core.NoiseRequest(text)])[0]
    assert (plain_eps - eps[0]).abs().max() > 1e-3  # the area, hook, ControlNet and merge all changed something
