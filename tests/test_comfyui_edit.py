"""Editing an image in a real ComfyUI: NFSD Demo Image -> VAE Encode -> the canvas and the guidance's
source, on NFSD Demo Model's shapes prior; every bad edit graph refused before the first step."""

from __future__ import annotations

import json

import pytest
import torch

from comfyui_helpers import GUIDANCE_DEFAULTS, TINY_NERF, comfyui, requires_comfyui  # noqa: F401

pytestmark = requires_comfyui

OPTIMIZER, RENDERER, GUIDANCE = "8", "9", "6"


def edit_prompt(rule: str = "DDS (edit)", steps: int = 2, size: int = 32, **guidance) -> dict:
    """A red cube edited into "a blue cube" on the demo model: "6" guidance, "8" Optimizer, "9" Renderer."""
    return {
        "1": {"class_type": "NFSD_DemoModel", "inputs": {"prior": "shapes"}},
        "2": {"class_type": "NFSD_DemoImage", "inputs": {"object": "cube", "colour": "red", "view": "front",
                                                         "size": size}},
        "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a blue cube, front view"}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a red cube, front view"}},
        GUIDANCE: {"class_type": "NFSD_ScoreDistillationGuidance",
                   "inputs": {"model": ["1", 0], "positive": ["4", 0], "clip": ["1", 1], "source": ["3", 0],
                              "source_prompt": ["5", 0], **{**GUIDANCE_DEFAULTS, "rule": rule}, **guidance}},
        "7": {"class_type": "NFSD_LatentCanvas",
              "inputs": {"width": 32, "height": 32, "batch_size": 1, "seed": 0, "initial_latent": ["3", 0],
                         "vae": ["1", 2]}},
        OPTIMIZER: {"class_type": "NFSD_Optimizer",
                    "inputs": {"guidance": [GUIDANCE, 0], "representation": ["7", 0], "steps": steps,
                               "learning_rate": 0.01, "seed": 0, "preview_every": 0, "checkpoint_dir": ""}},
        RENDERER: {"class_type": "NFSD_Renderer", "inputs": {"representation": [OPTIMIZER, 0], "vae": ["1", 2]}},
        "10": {"class_type": "PreviewImage", "inputs": {"images": [RENDERER, 0]}},
    }


def failure(comfyui, prompt: dict) -> str:
    result = comfyui.execute(prompt)
    assert result.valid and not result.success
    assert OPTIMIZER not in result.values  # refused before any step
    return result.error_message


def test_the_demo_image_is_an_object_of_the_prior_with_its_mask(comfyui):
    image, mask = comfyui.run_node("NFSD_DemoImage", object="cube", colour="red", view="front", size=32)
    assert image.shape == (1, 32, 32, 3) and mask.shape == (1, 32, 32)
    judged = comfyui.module("nfsd_core.shapes.evaluator").load_shapes_judge().predict(image.movedim(-1, 1))
    assert (judged["shape"], judged["colour"]) == (["cube"], ["red"])
    on_object = mask > 0.5
    assert 0.1 < on_object.float().mean() < 0.5  # an object on a background
    red = image[0][on_object[0]].mean(dim=0)
    assert red[0] > 2 * red[1] and red[0] > 2 * red[2]


@pytest.mark.parametrize("rule, per_step", [("DDS (edit)", 4), ("NFSD-edit (edit)", 4)])
def test_an_edit_runs_with_both_branches_in_each_step(comfyui, rule, per_step):
    result = comfyui.execute(edit_prompt(rule, steps=3))
    assert result.valid and result.success, result.error_message
    statistics = json.loads(result.values[OPTIMIZER][2])
    assert statistics["rule"] == ("dds" if rule.startswith("DDS") else "nfsd_edit")
    for (t,), evaluations in zip(statistics["history"]["t"], statistics["history"]["evaluations"]):
        assert evaluations == per_step + 2 * (rule.startswith("NFSD") and t >= 200)
    assert result.values[RENDERER][0].shape == (1, 32, 32, 3)


def test_a_source_text_works_like_a_source_prompt(comfyui):
    prompt = edit_prompt()
    del prompt[GUIDANCE]["inputs"]["source_prompt"]
    prompt["11"] = {"class_type": "PrimitiveString", "inputs": {"value": "a red cube, front view"}}
    prompt[GUIDANCE]["inputs"]["source_text"] = ["11", 0]
    by_text = comfyui.execute(prompt)
    by_conditioning = comfyui.execute(edit_prompt())
    assert by_text.success and by_conditioning.success, by_text.error_message
    assert torch.equal(by_text.values[RENDERER][0], by_conditioning.values[RENDERER][0])


def test_the_mask_holds_the_latents_outside_it(comfyui):
    """The object's mask: the background's latents (those no object pixel touches) do not move."""
    prompt = edit_prompt(steps=5)
    prompt[GUIDANCE]["inputs"]["mask"] = ["2", 1]
    prompt[OPTIMIZER]["inputs"]["learning_rate"] = 0.1
    result = comfyui.execute(prompt)
    assert result.success, result.error_message
    mask = comfyui.module("nfsd_core").latent_mask(result.values["2"][1], 8, 8)[0, 0]
    assert 0 < mask.sum() < mask.numel()
    change = (result.values[OPTIMIZER][1]["samples"][0] - result.values["3"][0]["samples"][0]).abs().amax(dim=0)
    moved = change > 1e-5  # beyond the rounding of the latent format's scaling in and out
    assert not moved[mask == 0].any() and moved[mask == 1].all()


def without(prompt: dict, node: str, *names: str) -> dict:
    for name in names:
        del prompt[node]["inputs"][name]
    return prompt


BAD_EDITS = {
    "no source": (lambda: without(edit_prompt(), GUIDANCE, "source"),
                  "the DDS (edit) rule edits an image: wire the image's LATENT (VAE Encode of it) into 'source'"),
    "no source prompt": (lambda: without(edit_prompt("NFSD-edit (edit)"), GUIDANCE, "source_prompt"),
                         "the NFSD-edit (edit) rule edits an image and needs what the image shows"),
    "source text without clip": (
        lambda: {**without(edit_prompt(), GUIDANCE, "source_prompt", "clip"),
                 "11": {"class_type": "PrimitiveString", "inputs": {"value": "a red cube"}},
                 "14": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}}},
        "'source_text' is encoded with 'clip'"),
    "a source of another size": (
        lambda: {**edit_prompt(), "12": {"class_type": "NFSD_DemoImage",
                                         "inputs": {"object": "cube", "colour": "red", "view": "front", "size": 64}},
                 "13": {"class_type": "VAEEncode", "inputs": {"pixels": ["12", 0], "vae": ["1", 2]}}},
        "the dds rule edits an image of another size than the canvas"),
    "a canvas that does not start from the image": (
        lambda: without(edit_prompt(), "7", "initial_latent"),
        "so the canvas starts from it: wire the LATENT of the guidance's 'source' into NFSD Latent Canvas"),
    "a mask of another aspect": (
        lambda: {**edit_prompt(), "12": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 64,
                                                                                "height": 32}}},
        "the mask is 64x32 pixels but the latents are 8x8, another aspect ratio"),
    "an empty mask": (
        lambda: {**edit_prompt(), "12": {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": 32,
                                                                                "height": 32}}},
        "the mask selects nothing"),
    "a mask without a source": (
        lambda: {**without(edit_prompt("NFSD"), GUIDANCE, "source"),
                 "12": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 32, "height": 32}}},
        "'mask' is painted on an image: wire the image's LATENT"),
    "a NaN scale": (lambda: edit_prompt(scale=float("nan")), "scale is nan"),
}
WIRING = {"source text without clip": [("source_text", "11"), ("unconditional", "14")],
          "a source of another size": [("source", "13")],
          "a mask of another aspect": [("mask", "12")], "an empty mask": [("mask", "12")],
          "a mask without a source": [("mask", "12")]}


@pytest.mark.parametrize("case", BAD_EDITS)
def test_a_bad_edit_is_refused_before_the_first_step(comfyui, case):
    make, message = BAD_EDITS[case]
    prompt = make()
    for name, node in WIRING.get(case, []):
        prompt[GUIDANCE]["inputs"][name] = [node, 0]
    assert message in failure(comfyui, prompt)


def test_an_edit_of_a_nerf_is_refused(comfyui):
    prompt = edit_prompt()
    prompt["7"] = {"class_type": "NFSD_NeRFRepresentation", "inputs": {"colour": "rgb", **TINY_NERF}}
    prompt[OPTIMIZER]["inputs"]["vae"] = ["1", 2]
    del prompt[RENDERER], prompt["10"]
    prompt["10"] = {"class_type": "PreviewAny", "inputs": {"source": [OPTIMIZER, 2]}}
    assert "which works on a latent canvas, not on this representation" in failure(comfyui, prompt)
