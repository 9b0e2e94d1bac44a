"""Text to NeRF inside ComfyUI: NeRF nodes, view prompts, turntables, meshes for core 3D nodes, resumable runs."""

import json

import numpy as np
import pytest
import torch
import trimesh

from comfyui_helpers import (  # noqa: F401
    GUIDANCE_DEFAULTS,
    comfyui,
    progress_hook,
    requires_comfyui,
    text_to_image_prompt,
    text_to_nerf_prompt,
)

pytestmark = requires_comfyui
OPTIMIZER, TURNTABLE, MESH, SAVE_MESH, PREVIEW_3D, SAVE_GLB = "6", "7", "8", "9", "10", "11"


def run(comfyui, **settings):
    result = comfyui.execute(text_to_nerf_prompt(**settings))
    assert result.valid and result.success, result.error_message
    return result


def optimised_weights(result) -> dict:
    return result.values[OPTIMIZER][0].weights


def test_text_to_nerf_ends_in_turntables_and_meshes_that_core_3d_nodes_take(comfyui):
    result = run(comfyui, views=3)
    statistics = json.loads(result.values[OPTIMIZER][2])
    assert statistics["steps_done"] == 3 and len(statistics["history"]["opacity"]) == 3
    assert result.values[OPTIMIZER][1]["samples"].shape == (1, 4, 8, 8)  # the front view as the model sees it

    colour, depth, normal, opacity = result.values[TURNTABLE]
    for image in (colour, depth, normal, opacity):
        assert image.shape == (3, 32, 32, 3) and image.dtype == torch.float32
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    for grey in (depth, opacity):
        assert torch.equal(grey[..., 0], grey[..., 1]) and torch.equal(grey[..., 0], grey[..., 2])
    assert float(opacity.max()) > 0.9 and float(opacity.min()) < 0.1  # the starting blob, and empty space around it
    assert float(depth.max()) > 0.9 * float(opacity.max())  # the nearest point is white...
    assert bool((depth <= opacity + 1e-6).all())  # ...and depth fades to black with the opacity
    assert float(normal.std()) > 0.05

    mesh = result.values[MESH][0]
    vertices, faces, colours = mesh.vertices, mesh.faces, mesh.vertex_colors
    assert vertices.dim() == 3 and vertices.shape[0] == 1 and faces.shape[0] == 1 and faces.shape[2] == 3
    assert colours.shape == vertices.shape and 0 <= float(colours.min()) and float(colours.max()) <= 1

    model_file = result.values[SAVE_MESH][0]
    saved = result.ui[SAVE_MESH]["3d"]
    assert model_file == f"{saved[0]['subfolder']}/{saved[0]['filename']}" and model_file.startswith("NFSD/apple_")
    assert result.ui[PREVIEW_3D]["result"][0] == model_file  # Preview3D loads it from the output folder
    loaded = trimesh.load(comfyui.base / "output" / model_file, force="mesh", process=False)
    assert len(loaded.vertices) == vertices.shape[1] and len(loaded.faces) == faces.shape[1]
    np.testing.assert_allclose(loaded.visual.vertex_colors[:, :3] / 255.0, colours[0].numpy(), atol=1 / 255 + 1e-6)

    core = result.ui[SAVE_GLB]["3d"][0]  # core SaveGLB took the same MESH
    shape_only = trimesh.load(comfyui.base / "output" / core["subfolder"] / core["filename"], force="mesh",
                              process=False)
    assert len(shape_only.vertices) == vertices.shape[1] and len(shape_only.faces) == faces.shape[1]


def test_a_latent_nerf_needs_no_vae_and_previews_its_view(comfyui):
    prompt = text_to_nerf_prompt(colour="latent", steps=4, preview_every=2)
    del prompt["6"]["inputs"]["vae"]
    prompt["13"] = {"class_type": "NFSD_Renderer", "inputs": {"representation": ["6", 0]}}  # no VAE either
    prompt["14"] = {"class_type": "PreviewImage", "inputs": {"images": ["13", 0]}}
    updates = []
    with progress_hook(lambda value, total, preview, node_id: updates.append((node_id, value, preview))):
        result = comfyui.execute(prompt)
    assert result.success, result.error_message
    previews = [(value, preview) for node_id, value, preview in updates if node_id == OPTIMIZER and preview]
    assert [value for value, _ in previews] == [2, 4]
    for _, (kind, image, max_size) in previews:
        assert kind == "JPEG" and image.size == (32, 32)
    back, front = (np.asarray(preview[1], dtype=float) for _, preview in previews)  # half a turn apart
    assert np.abs(front - back).mean() > 0
    images = result.values["13"][0]
    assert images.shape == (8, 32, 32, 3) and 0 <= float(images.min()) and float(images.max()) <= 1


def test_view_prompts_give_every_view_its_own_conditioning(comfyui):
    model, clip, vae = comfyui.load_checkpoint()
    (tagged,) = comfyui.run_node("NFSD_ViewPrompts", clip=clip, text="a red apple")
    (style,) = comfyui.run_node("CLIPTextEncode", clip=clip, text="studio light")
    (combined,) = comfyui.run_node("ConditioningCombine", conditioning_1=tagged, conditioning_2=style)
    (guidance,) = comfyui.run_node("NFSD_ScoreDistillationGuidance", model=model, positive=combined, clip=clip,
                                   **GUIDANCE_DEFAULTS)
    positive = guidance.prompts.positive
    assert sorted(positive) == ["back", "front", "side"]  # no 'overhead': the default cameras never get it
    for view, conditioning in positive.items():
        (expected,) = comfyui.run_node("CLIPTextEncode", clip=clip, text=f"a red apple, {view} view")
        assert len(conditioning) == 2  # the view's prompt and the untagged one combined with it
        assert torch.equal(conditioning[0][0], expected[0][0]) and torch.equal(conditioning[1][0], style[0][0])


def interrupt_after(steps: int):
    """A progress hook that presses Cancel once the Optimizer has finished `steps` steps."""
    import nodes

    def hook(value, total, preview, node_id):
        if node_id == OPTIMIZER and value == steps and preview is None:
            nodes.interrupt_processing()

    return hook


def temp_runs(comfyui) -> set:
    temp = comfyui.base / "temp" / "nfsd"
    return set(temp.glob("*")) if temp.exists() else set()


def test_an_interrupted_nerf_resumes_from_the_temp_folder_to_the_uninterrupted_result(comfyui, tmp_path):
    settings = dict(steps=4, seed=5)
    # previews render between steps without drawing from the run's randomness
    uninterrupted = run(comfyui, checkpoint_dir=f"NFSD/tests/{tmp_path.name}", preview_every=1, **settings)
    before = temp_runs(comfyui)
    with progress_hook(interrupt_after(2)):
        interrupted = comfyui.execute(text_to_nerf_prompt(**settings))  # no checkpoint_dir: the temp folder
    assert not interrupted.success
    assert interrupted.event("execution_interrupted")["node_id"] == OPTIMIZER
    (saved,) = temp_runs(comfyui) - before
    assert comfyui.read_checkpoint(saved).step == 2

    steps_run = []
    with progress_hook(lambda value, total, preview, node_id: steps_run.append(value) if node_id == OPTIMIZER else 0):
        resumed = run(comfyui, **settings)  # the same prompt, queued again
    assert steps_run == [3, 4]  # resumed, not restarted
    assert not saved.exists()  # finished: its result is the node's output, the temp state is gone
    for name, tensor in optimised_weights(uninterrupted).items():
        assert torch.equal(optimised_weights(resumed)[name], tensor), name
    assert json.loads(resumed.values[OPTIMIZER][2])["history"] == \
        json.loads(uninterrupted.values[OPTIMIZER][2])["history"]


def test_twenty_queued_runs_leave_at_most_the_cap_of_temp_state(comfyui):
    """Twenty runs of new seeds (what 'randomize' queues), all but every fourth cancelled after a step: the
    temp folder never holds more than TEMP_RUNS_KEPT runs, ends with the newest cancelled ones, and the newest
    still resumes. (A run makes room for its own state when it starts, so a run that then finishes leaves
    one fewer.)"""
    cap = comfyui.module("nodes.optimizer").TEMP_RUNS_KEPT
    cancelled, sizes = [], []
    for seed in range(100, 120):
        finishes = seed % 4 == 0
        with progress_hook(lambda *args: None if finishes else interrupt_after(1)(*args)):
            result = comfyui.execute(text_to_nerf_prompt(steps=3, seed=seed))
        assert result.success == finishes, result.error_message
        cancelled += [] if finishes else [seed]
        runs = temp_runs(comfyui)
        sizes.append(sum(file.stat().st_size for folder in runs for file in folder.iterdir()))
        assert len(runs) <= cap
    kept = {comfyui.read_checkpoint(folder).identity["guidance"]["seed"]: folder for folder in temp_runs(comfyui)}
    assert sorted(kept) == cancelled[-cap:]
    print(f"20 queued runs ({len(cancelled)} cancelled): {len(kept)} temp folders, at most "
          f"{max(sizes) / 2**20:.2f} MB at any time")
    steps_run = []
    with progress_hook(lambda value, total, preview, node_id: steps_run.append(value) if node_id == OPTIMIZER else 0):
        run(comfyui, steps=3, seed=cancelled[-1])
    assert steps_run == [2, 3] and not kept[cancelled[-1]].exists()


def test_the_resume_workflows_checkpoint_lives_in_the_output_folder(comfyui):
    result = run(comfyui, checkpoint_dir="NFSD/checkpoints/apple", seed=7)
    state = comfyui.read_checkpoint(comfyui.base / "output" / "NFSD" / "checkpoints" / "apple")
    assert state.step == 3 and state.identity["representation"]["type"] == "nerf"
    again = run(comfyui, checkpoint_dir="NFSD/checkpoints/apple", seed=7)
    for name, tensor in optimised_weights(result).items():
        assert torch.equal(optimised_weights(again)[name], tensor), name


def failure(comfyui, prompt) -> str:
    result = comfyui.execute(prompt)
    assert not (result.valid and result.success)
    return result.error_message


def without_vae(prompt):
    del prompt["6"]["inputs"]["vae"]
    return prompt


def rendering_a_canvas(prompt):
    prompt["20"] = {"class_type": "NFSD_LatentCanvas", "inputs": {"width": 64, "height": 64, "batch_size": 1,
                                                                  "seed": 0}}
    prompt["7"]["inputs"]["nerf"] = ["20", 0]
    return {node_id: node for node_id, node in prompt.items() if node_id in ("7", "12", "20")}


def rendering_before_optimising(prompt):
    prompt["7"]["inputs"]["nerf"] = ["5", 0]
    return {node_id: node for node_id, node in prompt.items() if node_id in ("5", "7", "12")}


def view_prompts_on_a_canvas(prompt):
    canvas = text_to_image_prompt()
    canvas["4"]["inputs"]["positive"] = ["20", 0]
    canvas["20"] = {"class_type": "NFSD_ViewPrompts", "inputs": {"clip": ["1", 1], "text": "a red apple"}}
    return canvas


def rendering_a_canvas_without_vae(prompt):
    canvas = text_to_image_prompt()
    del canvas["7"]["inputs"]["vae"]  # optional now that NeRFs render without it
    return canvas


@pytest.mark.parametrize("break_graph,expected", [
    (without_vae, ["wire the checkpoint's VAE into NFSD Optimizer's 'vae' input", "'latent'"]),
    (lambda p: text_to_nerf_prompt(colour="latent", background="random"), ["'random' background", "'environment'"]),
    (lambda p: text_to_nerf_prompt(advanced='{"volume": {"levelz": 4}}'), ["NeRF settings", "levelz"]),
    (lambda p: text_to_nerf_prompt(advanced="levels=4"), ["advanced is not valid JSON, e.g. {\"volume\""]),
    (lambda p: text_to_nerf_prompt(advanced="[4]"), ["advanced must be a JSON object"]),
    (lambda p: text_to_nerf_prompt(elevation_min=50.0), ["elevation_min (50) is above elevation_max (45)"]),
    (rendering_a_canvas, ["received_type(NFSD_CANVAS) mismatch input_type(NFSD_NERF)"]),  # at validation
    (rendering_before_optimising, ["connect it through NFSD Optimizer first"]),
    (view_prompts_on_a_canvas, ["one prompt per camera view", "CLIP Text Encode"]),
    (rendering_a_canvas_without_vae, ["wire the checkpoint's VAE into NFSD Renderer's 'vae' input"]),
], ids=["rgb_nerf_without_vae", "latent_nerf_random_background", "unknown_setting", "advanced_not_json",
        "advanced_not_an_object",
        "elevation_range_upside_down", "turntable_of_a_canvas", "turntable_before_optimizing", "view_prompts_canvas",
        "canvas_renderer_without_vae"])
def test_bad_nerf_graphs_fail_with_the_fix(comfyui, break_graph, expected):
    message = failure(comfyui, break_graph(text_to_nerf_prompt()))
    assert all(text in message for text in expected), message


def test_save_mesh_saves_every_mesh_of_a_batch_in_every_format(comfyui):
    from comfy_extras.nodes_hunyuan3d import MESH as CoreMesh

    cube = trimesh.creation.box()  # corners at +-0.5
    vertices = torch.tensor(cube.vertices, dtype=torch.float32)
    faces = torch.tensor(cube.faces, dtype=torch.int64)
    uncoloured = CoreMesh(torch.stack([vertices, vertices * 2]), torch.stack([faces, faces]))  # as core nodes make it
    save_mesh = comfyui.node_classes["NFSD_SaveMesh"]
    counters = set()
    for file_format in ("glb", "obj", "ply"):
        with torch.inference_mode():
            output = save_mesh.PREPARE_CLASS_CLONE({}).execute(mesh=uncoloured, filename_prefix="NFSD/cubes",
                                                               format=file_format)
        saved = output.ui["3d"]
        assert output.args[0] == f"NFSD/{saved[0]['filename']}" and len(saved) == 2
        for entry, half_size in zip(saved, (0.5, 1.0)):
            assert entry["filename"].endswith(f"_.{file_format}") and entry["type"] == "output"
            loaded = trimesh.load(comfyui.base / "output" / entry["subfolder"] / entry["filename"], force="mesh",
                                  process=False)
            assert len(loaded.faces) == 12 and float(np.abs(loaded.vertices).max()) == pytest.approx(half_size)
            counters.add(entry["filename"].split("_")[1])
    assert len(counters) == 6  # ComfyUI's counter runs on across files and formats
