"""The pack as a new user meets it: graphs of freshly added nodes, every widget at its default."""

import json

import pytest

from comfyui_helpers import comfyui, requires_comfyui  # noqa: F401

pytestmark = requires_comfyui

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
MUG = "a red mug"


def fresh(comfyui, node_type: str, **inputs) -> dict:
    """An API-format node of `node_type` as a user adds it from the menu (every widget at its default), with
    `inputs` (links and the values the user sets) on top."""
    spec = comfyui.object_info()[node_type]["input"]
    defaults = {name: options.get("default", options.get("options", [""])[0])
                for section in ("required", "optional") for name, (kind, options) in spec.get(section, {}).items()
                if kind in WIDGET_TYPES and not options.get("forceInput")}
    return {"class_type": node_type, "inputs": {**defaults, **inputs}}


def fresh_text_to_nerf(comfyui, **changed) -> dict:
    """The 3D demo built from fresh nodes: NFSD Demo Model with only its prior chosen, View Prompts with the
    prompt, and every other widget at its default but those in `changed` (node id -> inputs)."""
    prompt = {
        "1": fresh(comfyui, "NFSD_DemoModel", prior="shapes"),
        "2": fresh(comfyui, "NFSD_ViewPrompts", clip=["1", 1], text=MUG),
        "4": fresh(comfyui, "NFSD_ScoreDistillationGuidance", model=["1", 0], positive=["2", 0], clip=["1", 1]),
        "5": fresh(comfyui, "NFSD_NeRFRepresentation"),
        "6": fresh(comfyui, "NFSD_Optimizer", guidance=["4", 0], representation=["5", 0], vae=["1", 2]),
        "7": {"class_type": "PreviewAny", "inputs": {"source": ["6", 2]}},
    }
    for node_id, inputs in changed.items():
        prompt[node_id]["inputs"].update(inputs)
    return prompt


def test_the_3d_demo_runs_from_fresh_nodes_with_only_the_prior_chosen(comfyui):
    """No latent_downscale, no guidance_size by hand: the NeRF sees the demo model's 32 px as 8x8 latents of
    4 pixels. Cut for a CPU test, and nothing the model decides: 2 steps, and no 256 px renders (the NeRF
    node refuses what the free memory of this shared machine may not hold)."""
    prompt = fresh_text_to_nerf(comfyui, **{"5": {"high_res_size": 0}, "6": {"steps": 2}})
    assert prompt["5"]["inputs"]["guidance_size"] == 0 and prompt["5"]["inputs"]["advanced"] == ""
    result = comfyui.execute(prompt)
    assert result.success, result.error_message
    statistics = json.loads(result.values["6"][2])
    assert statistics["latents"] == [1, 4, 8, 8] and statistics["pixels_per_latent"] == 4
    assert (statistics["rule"], statistics["scale"], statistics["steps_done"]) == ("nfsd", 7.5, 2)
    nerf = result.values["6"][0]
    assert (nerf.settings.guidance_size, nerf.settings.latent_downscale) == (32, 4)


@pytest.mark.parametrize("overhead_view, elevation_max, refused", [
    (False, 45.0, False), (False, 80.0, True), (True, 80.0, False), (True, 45.0, False)])
def test_view_prompts_encode_the_views_the_cameras_get(comfyui, overhead_view, elevation_max, refused):
    """View Prompts encodes 'overhead' only when asked; a NeRF whose cameras rise above 60 degrees without it is
    refused before the first step, naming the fix."""
    from comfyui_helpers import TINY_NERF

    prompt = fresh_text_to_nerf(comfyui, **{"2": {"overhead_view": overhead_view},
                                            "5": {**TINY_NERF, "guidance_size": 0, "elevation_max": elevation_max},
                                            "6": {"steps": 1}})
    (tagged,) = comfyui.run_node("NFSD_ViewPrompts", clip=comfyui.run_node("NFSD_DemoModel", prior="shapes")[1],
                                 text=MUG, overhead_view=overhead_view)
    views = [options["nfsd_view"] for _, options in tagged]
    assert views == ["front", "side", "back"] + ["overhead"] * overhead_view
    result = comfyui.execute(prompt)
    assert result.success != refused, result.error_message
    if refused:
        assert "get the view(s) overhead" in result.error_message and "overhead_view" in result.error_message


def test_cameras_that_name_their_elevation_are_refused_before_the_first_step(comfyui):
    """View Prompts encodes the view names alone; cameras set to name their elevation too (for a prior trained
    with such captions) would find no prompt, so the run is refused with the fix."""
    from comfyui_helpers import TINY_NERF

    advanced = json.dumps({"cameras": {"view_elevation_step": 10}})
    prompt = fresh_text_to_nerf(comfyui, **{"5": {**TINY_NERF, "guidance_size": 0, "advanced": advanced},
                                            "6": {"steps": 1}})
    result = comfyui.execute(prompt)
    assert not result.success
    assert "name their elevation" in result.error_message and "view_elevation_step to 0" in result.error_message
