"""Bad graphs fail with messages that name the input and the fix."""

import pytest

from comfyui_helpers import comfyui, requires_comfyui, text_to_image_prompt  # noqa: F401

pytestmark = requires_comfyui


def failure(comfyui, prompt) -> str:
    result = comfyui.execute(prompt)
    assert not (result.valid and result.success)
    return result.error_message


def test_missing_model_is_caught_before_running(comfyui):
    prompt = text_to_image_prompt()
    del prompt["4"]["inputs"]["model"]
    result = comfyui.execute(prompt)
    assert not result.valid
    errors = result.node_errors["4"]["errors"]
    assert errors[0]["type"] == "required_input_missing" and errors[0]["details"] == "model"


def test_initial_latent_of_another_size_than_the_canvas(comfyui):
    prompt = text_to_image_prompt(size=64)
    prompt["10"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 96, "batch_size": 1}}
    prompt["5"]["inputs"]["initial_latent"] = ["10", 0]
    message = failure(comfyui, prompt)
    assert "initial_latent is 128x96 pixels but the canvas is 64x64" in message


def test_unsupported_model_type(comfyui):
    prompt = text_to_image_prompt()
    prompt["10"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": ["1", 0], "shift": 3.0}}
    prompt["4"]["inputs"]["model"] = ["10", 0]
    message = failure(comfyui, prompt)
    assert "cannot be used for score distillation" in message and "Flow-matching" in message


@pytest.mark.parametrize("rule,wired,missing", [
    ("NFSD", {}, ["'unconditional'", "'negative'"]),
    ("NFSD", {"negative": ["3", 0]}, ["'unconditional'"]),
    ("SDS with negative prompt", {}, ["'negative'"]),
    ("SDS", {}, ["'unconditional'"]),
])
def test_prompts_the_rule_needs(comfyui, rule, wired, missing):
    prompt = text_to_image_prompt(rule=rule)
    for name in ("clip", "negative"):
        del prompt["4"]["inputs"][name]
    prompt["4"]["inputs"].update(wired)
    message = failure(comfyui, prompt)
    assert all(name in message for name in missing) and "'clip'" in message
    assert ("'negative'" in message) == ("'negative'" in missing)


def test_rendering_a_canvas_that_was_never_optimised(comfyui):
    prompt = text_to_image_prompt()
    prompt["7"]["inputs"]["representation"] = ["5", 0]
    message = failure(comfyui, prompt)
    assert "connect it through NFSD Optimizer first" in message


def test_bad_timestep_range(comfyui):
    message = failure(comfyui, text_to_image_prompt(t_min=0.9, t_max=0.5))
    assert "t_min" in message and "t_max" in message


@pytest.mark.parametrize("timesteps", ["abc", "", "100, 1000"])
def test_decomposition_timesteps_are_checked(comfyui, timesteps):
    prompt = text_to_image_prompt()
    prompt["10"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    prompt["11"] = {"class_type": "NFSD_ScoreDecomposition",
                    "inputs": {"model": ["1", 0], "positive": ["2", 0], "latent": ["10", 0], "vae": ["1", 2],
                               "timesteps": timesteps, "seed": 0, "nfsd_threshold": 200, "normalize": True,
                               "clip": ["1", 1]}}
    prompt["12"] = {"class_type": "PreviewImage", "inputs": {"images": ["11", 0]}}
    for node_id in ("6", "7", "8", "9"):
        del prompt[node_id]
    assert "timesteps must" in failure(comfyui, prompt)
