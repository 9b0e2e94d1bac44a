"""NFSD Optimizer inside ComfyUI: determinism, previews, interrupts and resuming, and no side effects."""

import json

import torch

from comfyui_helpers import (  # noqa: F401
    GUIDANCE_DEFAULTS,
    comfyui,
    progress_hook,
    requires_comfyui,
    text_to_image_prompt,
)

pytestmark = requires_comfyui
OPTIMIZER = "6"


def run(comfyui, **settings):
    result = comfyui.execute(text_to_image_prompt(**settings))
    assert result.valid and result.success, result.error_message
    representation, latent, statistics, curves = result.values[OPTIMIZER]
    return latent["samples"], json.loads(statistics)


def test_same_seed_same_result_and_rules_share_the_draws(comfyui):
    first, stats = run(comfyui, seed=3)
    again, _ = run(comfyui, seed=3)
    other_seed, _ = run(comfyui, seed=4)
    sds, sds_stats = run(comfyui, seed=3, rule="SDS", scale=100.0)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other_seed)
    assert stats["history"]["t"] == sds_stats["history"]["t"]  # same seed, same timesteps for both rules
    assert (stats["rule"], stats["scale"], sds_stats["rule"], sds_stats["scale"]) == ("nfsd", 7.5, "sds", 100.0)
    assert not torch.allclose(first, sds)
    assert first.shape == (1, 4, 8, 8)


def test_progress_every_step_and_previews_every_n_steps(comfyui):
    updates = []
    with progress_hook(lambda value, total, preview, node_id: updates.append((node_id, value, total, preview))):
        run(comfyui, steps=4, preview_every=2)
    ours = [u for u in updates if u[0] == OPTIMIZER]
    assert [(value, total) for _, value, total, preview in ours if preview is None] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    previews = [(value, preview) for _, value, _, preview in ours if preview is not None]
    assert [value for value, _ in previews] == [2, 4]
    for _, (kind, image, max_size) in previews:
        assert kind == "JPEG" and image.size == (8, 8)


def test_guidance_widgets_mean_what_they_show(comfyui):
    """The scale's default, 0, is the chosen rule's own (its tooltip names each); any other value is used as set.
    t_max_end anneals only below t_max."""
    spec = comfyui.object_info()["NFSD_ScoreDistillationGuidance"]["input"]["required"]
    assert spec["scale"][1]["default"] == 0.0
    assert "0 (the default): the chosen rule's own scale" in spec["scale"][1]["tooltip"]
    assert all(f"{label} {scale}" in spec["scale"][1]["tooltip"]
               for label, scale in (("NFSD", "7.5"), ("SDS", "100"), ("CSD", "1")))
    distillation_rules = [rule for rule in spec["rule"][1]["options"] if "(edit)" not in rule]  # tests/test_comfyui_edit.py
    rule_scales = {rule: run(comfyui, steps=1, rule=rule, scale=0.0)[1]["scale"] for rule in distillation_rules}
    assert rule_scales == {"NFSD": 7.5, "SDS": 100.0, "CSD": 1.0, "SDS with negative prompt": 100.0}
    assert run(comfyui, steps=1, rule="SDS", scale=7.5)[1]["scale"] == 7.5  # an explicit scale (old workflows) stays
    plain = run(comfyui, steps=6, seed=1)[1]["history"]["t"]
    annealed = run(comfyui, steps=6, seed=1, t_max_end=0.3, anneal_at=0.5)[1]["history"]["t"]
    assert all(t <= 300 for step in annealed[3:] for t in step) and annealed != plain


def optimizer_previews(comfyui, **settings) -> list:
    updates = []
    with progress_hook(lambda value, total, preview, node_id: updates.append((node_id, value, preview))):
        run(comfyui, **settings)
    return [preview for node_id, value, preview in updates if node_id == OPTIMIZER and preview is not None]


def test_previews_follow_the_users_preview_method(comfyui, monkeypatch):
    """ComfyUI's previewer selection, as for KSampler: taesd decodes with models/vae_approx/taesd_decoder*
    (a full-size image), latent2rgb uses the factors (one pixel per latent); ComfyUI's default, none,
    leaves it to preview_every and shows what auto shows."""
    import comfy.taesd.taesd
    import comfy.utils
    from comfy.cli_args import LatentPreviewMethod, args
    from safetensors.torch import save_file

    for method in (LatentPreviewMethod.NoPreviews, LatentPreviewMethod.Latent2RGB):
        monkeypatch.setattr(args, "preview_method", method)
        assert [image.size for kind, image, max_size in optimizer_previews(comfyui, steps=1, preview_every=1)] == [(8, 8)]
        assert optimizer_previews(comfyui, steps=1, preview_every=0) == []

    decoder = comfyui.base / "models" / "vae_approx" / "taesd_decoder.safetensors"
    decoder.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    save_file(comfy.taesd.taesd.Decoder().state_dict(), str(decoder))
    monkeypatch.setattr(args, "preview_method", LatentPreviewMethod.TAESD)
    try:
        previews = optimizer_previews(comfyui, steps=2, preview_every=1)
    finally:
        decoder.unlink()
    assert [image.size for kind, image, max_size in previews] == [(64, 64), (64, 64)]  # 8 x 8 latents, 8 x


def test_interrupt_stops_within_one_step_and_the_run_resumes(comfyui, tmp_path):
    import nodes

    directory = f"NFSD/tests/{tmp_path.name}"  # a checkpoint_dir is a folder inside ComfyUI's output folder

    def interrupt_after_two_steps(value, total, preview, node_id):
        if node_id == OPTIMIZER and value == 2 and preview is None:
            nodes.interrupt_processing()

    with progress_hook(interrupt_after_two_steps):
        interrupted = comfyui.execute(text_to_image_prompt(steps=5, checkpoint_dir=directory))
    assert not interrupted.success
    assert interrupted.event("execution_interrupted")["node_id"] == OPTIMIZER
    assert comfyui.read_checkpoint(comfyui.base / "output" / directory).step == 2  # stopped before step 3

    resumed, resumed_stats = run(comfyui, steps=5, checkpoint_dir=directory)  # the next prompt runs normally
    uninterrupted, stats = run(comfyui, steps=5)
    assert torch.equal(resumed, uninterrupted)
    assert resumed_stats["history"] == stats["history"]


def test_nodes_leave_no_global_state_behind(comfyui):
    import comfy.model_management as model_management
    import nodes

    model, clip, vae = comfyui.load_checkpoint()
    weights = {name: tensor.clone() for name, tensor in model.model.state_dict().items()}
    vae_weights = {name: tensor.clone() for name, tensor in vae.first_stage_model.state_dict().items()}
    options_before = repr(model.model_options)
    positive = comfyui.run_node("CLIPTextEncode", clip=clip, text="a red apple")[0]
    reference = sample(comfyui, model, positive)

    (guidance,) = comfyui.run_node("NFSD_ScoreDistillationGuidance", model=model, positive=positive, clip=clip,
                                 **GUIDANCE_DEFAULTS)
    (canvas,) = comfyui.run_node("NFSD_LatentCanvas", width=64, height=64, batch_size=1, seed=0)
    with torch.inference_mode():
        for fails in (False, True):
            nodes.interrupt_processing(fails)  # an interrupt makes the Optimizer fail at its first step
            try:
                optimised = call_optimizer(comfyui, guidance, canvas)
                comfyui.run_node("NFSD_Renderer", representation=optimised, vae=vae)
            except model_management.InterruptProcessingException:
                assert fails
            assert torch.is_inference_mode_enabled() and not torch.is_grad_enabled()
    assert not torch.is_inference_mode_enabled() and torch.is_grad_enabled()
    for name, tensor in model.model.state_dict().items():
        assert tensor.is_inference() and torch.equal(tensor, weights[name]), name
    for name, tensor in vae.first_stage_model.state_dict().items():
        assert torch.equal(tensor, vae_weights[name]), name
    assert repr(model.model_options) == options_before
    assert getattr(model.model, "current_patcher", None) is None
    assert torch.equal(sample(comfyui, model, positive), reference)  # the shared model still samples the same


def call_optimizer(comfyui, guidance, canvas):
    return comfyui.run_node("NFSD_Optimizer", guidance=guidance, representation=canvas, steps=2,
                          learning_rate=0.05, seed=0, preview_every=1)[0]


def sample(comfyui, model, positive):
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    return comfyui.run_node("KSampler", model=model, seed=1, steps=2, cfg=5.0, sampler_name="euler",
                          scheduler="normal", positive=positive, negative=positive, latent_image=latent)[0]["samples"]


def test_a_checkpoint_resumes_only_its_own_run(comfyui, tmp_path):
    directory = f"NFSD/tests/{tmp_path.name}"
    run(comfyui, steps=2, checkpoint_dir=directory)
    other_prompt = text_to_image_prompt(steps=2, checkpoint_dir=directory)
    other_prompt["2"]["inputs"]["text"] = "a blue car"
    other_model = text_to_image_prompt(steps=2, checkpoint_dir=directory, checkpoint="tiny_sd_v.safetensors")
    other_rule = text_to_image_prompt(steps=2, checkpoint_dir=directory, rule="SDS")
    for prompt, difference in ((other_prompt, "prompts: saved"), (other_model, "model: saved"),
                               (other_rule, "guidance.rule: saved 'nfsd', now 'sds'")):
        result = comfyui.execute(prompt)
        assert not result.success and "belongs to another run" in result.error_message
        assert difference in result.error_message  # the message names what differs
    again, _ = run(comfyui, steps=2, checkpoint_dir=directory)  # the same run: restored, nothing recomputed
    assert torch.equal(again, run(comfyui, steps=2)[0])


def test_the_model_fingerprint_sees_weights_and_patches_but_not_sessions(comfyui):
    fingerprint = comfyui.module("nodes.adapters.fingerprint").model_fingerprint
    model, _, _ = comfyui.load_checkpoint()
    reloaded, _, _ = comfyui.load_checkpoint()
    other, _, _ = comfyui.load_checkpoint("tiny_sd_v.safetensors")
    key = next(iter(model.model.state_dict()))
    weight = model.model.state_dict()[key]

    def patched(strength: float, seed: int):
        clone = model.clone()
        diff = torch.randn(weight.shape, generator=torch.Generator().manual_seed(seed))
        clone.add_patches({key: ("diff", (diff,))}, strength)
        return clone

    assert fingerprint(model) == fingerprint(reloaded) == fingerprint(model.clone())
    assert fingerprint(model) != fingerprint(other)
    assert fingerprint(patched(0.5, 0)) == fingerprint(patched(0.5, 0))
    assert len({fingerprint(model), fingerprint(patched(0.5, 0)), fingerprint(patched(0.7, 0)),
                fingerprint(patched(0.5, 1))}) == 4


def test_the_curves_image_shows_the_run_and_changes_with_it(comfyui):
    """The Optimizer's curves: an IMAGE that Preview Image shows, the same for the same run, another for
    another run (a longer one, another rule)."""
    def curves(**settings):
        prompt = text_to_image_prompt(**settings)
        prompt["10"] = {"class_type": "PreviewImage", "inputs": {"images": ["6", 3]}}
        result = comfyui.execute(prompt)
        assert result.success, result.error_message
        assert result.ui["10"]["images"][0]["type"] == "temp"  # shown on the node
        return result.values[OPTIMIZER][3]

    first, again, longer, sds = curves(steps=3), curves(steps=3), curves(steps=6), curves(steps=3, rule="SDS")
    assert first.shape == (1, 720, 1024, 3) and first.dtype == torch.float32
    assert 0.0 <= float(first.min()) and float(first.max()) == 1.0  # a white page with dark ink
    assert float(first.min()) < 0.3
    assert torch.equal(first, again)
    assert (first - longer).abs().mean() > 0.001 and (first - sds).abs().mean() > 0.001

