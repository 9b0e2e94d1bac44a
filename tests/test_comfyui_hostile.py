"""Hostile graphs through a real ComfyUI: oversized inputs, NaN, wrong wiring, hostile text, and Cancel.

A graph is untrusted input. Every oversized or malformed input must be refused with a message
that names the input and what fits, before the memory is taken: these run in a child process
whose address space is capped a little above what ComfyUI has mapped (comfyui_capped.py), so
an input that is not refused fails with an allocation error there instead of taking the machine
down. "Before work" is measured, not assumed: the child counts every optimiser step and every
diffusion-model call (comfyui_helpers.counting_work), and a refusal is "before" only when none
ran. Every NaN or infinite FLOAT widget of every node is refused before the Optimizer's first
step, wrong wiring when the graph is validated or before that step, every STRING input of every
node (read from the nodes' schemas, so new inputs join by themselves) is swept with hostile text,
and Cancel stops every long node within a second.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from comfyui_helpers import comfyui  # noqa: F401  (the fixture)
from comfyui_helpers import HeadlessServer, comfy_runtime, progress_hook, requires_comfyui
from comfyui_helpers import text_to_image_prompt, text_to_nerf_prompt, text_to_texture_prompt

pytestmark = requires_comfyui

HEADROOM = 3 * 2**30  # bytes the capped server may map beyond what it holds after start-up
TESTS = Path(__file__).resolve().parent
OPTIMIZER = "6"


def only(prompt: dict, *node_ids: str) -> dict:
    return {node_id: node for node_id, node in prompt.items() if node_id in node_ids}


def nerf_prompt(**nerf) -> dict:
    """Checkpoint, view prompts, guidance, NeRF and a 1-step Optimizer: the NeRF's own refusals."""
    return only(text_to_nerf_prompt(steps=1, **nerf), "1", "2", "4", "5", "6", "12", "7")


def advanced(settings: dict) -> dict:
    return nerf_prompt(advanced=json.dumps(settings))


def turntable(views: int, size: int) -> dict:
    prompt = only(text_to_nerf_prompt(steps=1), "1", "2", "4", "5", "6", "7", "12")
    prompt["7"]["inputs"].update(views=views, size=size)
    return prompt


def mesh(resolution: int) -> dict:
    prompt = only(text_to_nerf_prompt(steps=1), "1", "2", "4", "5", "6", "8", "9")
    prompt["8"]["inputs"]["resolution"] = resolution
    return prompt


def texture(**widgets) -> dict:
    """Checkpoint, view prompts, guidance, demo mesh, mesh texture and a 1-step Optimizer (its statistics shown)."""
    prompt = only(text_to_texture_prompt(steps=1, **widgets), "1", "2", "3", "4", "5", "6")
    prompt["12"] = {"class_type": "PreviewAny", "inputs": {"source": [OPTIMIZER, 2]}}
    return prompt


def texture_to_mesh(texture_size: int, views: int, view_size: int) -> dict:
    prompt = only(text_to_texture_prompt(steps=1), "1", "2", "3", "4", "5", "6", "7", "10")
    prompt["7"]["inputs"].update(texture_size=texture_size, views=views, view_size=view_size)
    return prompt


def decomposition(timesteps: str = "200, 500, 800", latent: dict | None = None) -> dict:
    prompt = only(text_to_image_prompt(), "1", "2", "3")
    prompt["10"] = latent or {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    prompt["11"] = {"class_type": "NFSD_ScoreDecomposition",
                    "inputs": {"model": ["1", 0], "positive": ["2", 0], "latent": ["10", 0], "vae": ["1", 2],
                               "timesteps": timesteps, "seed": 0, "nfsd_threshold": 200, "normalize": True,
                               "clip": ["1", 1]}}
    prompt["12"] = {"class_type": "PreviewImage", "inputs": {"images": ["11", 0]}}
    return prompt


def canvas_into(node: dict, optimised: bool) -> dict:
    """A canvas (optimised by node 6, or straight from node 5) wired into a NeRF-only node "20"."""
    prompt = text_to_image_prompt()
    node = copy.deepcopy(node)
    node["inputs"]["nerf"] = ["6" if optimised else "5", 0]
    prompt["20"] = node
    prompt["21"] = {"class_type": "PreviewAny", "inputs": {"source": ["20", 0]}}
    return prompt


def sd_sized_canvas_on_the_demo_model() -> dict:
    """A canvas sized for SD's 8 pixels per latent (no VAE wired into it) optimised with NFSD Demo Model (4)."""
    prompt = text_to_image_prompt()
    prompt["1"] = {"class_type": "NFSD_DemoModel", "inputs": {}}
    return prompt


def demo_vae_into(node_id: str) -> dict:
    """An SD-sized canvas with the demo model's VAE (4 pixels per latent, not 8) wired into `node_id`."""
    prompt = text_to_image_prompt()
    prompt["30"] = {"class_type": "NFSD_DemoModel", "inputs": {}}
    prompt[node_id]["inputs"]["vae"] = ["30", 2]
    return prompt


def renderer_without_vae() -> dict:
    prompt = text_to_image_prompt()
    del prompt["7"]["inputs"]["vae"]
    return prompt


TURNTABLE_NODE = {"class_type": "NFSD_NeRFTurntable", "inputs": {"views": 2, "size": 16, "elevation": 15.0,
                                                                 "distance": 1.5}}
MESH_NODE = {"class_type": "NFSD_ExtractMesh", "inputs": {"resolution": 16, "threshold": 0.0, "min_component": 0.0}}

# name: (prompt, what the message must say, where it must be refused: "validation", "before" (before the
# Optimizer's first step, or before the offending node's own work when it comes after the Optimizer), "late")
OVERSIZED = {
    "canvas_8192_batch_64": (text_to_image_prompt(size=8192, batch=64), ["needs about", "batch_size"], "before"),
    "canvas_8192": (text_to_image_prompt(size=8192), ["needs about", "width and height"], "before"),
    "nerf_render_1024_samples_1024": (nerf_prompt(render_size=1024, samples_per_ray=1024),
                                      ["needs about", "render_size/high_res_size"], "before"),
    "nerf_widget_maxima": (nerf_prompt(render_size=1024, high_res_size=1024, guidance_size=2048, batch_size=64,
                                       samples_per_ray=1024), ["needs about", "fits"], "before"),
    "nerf_guidance_2048_batch_64": (nerf_prompt(guidance_size=2048, batch_size=64),
                                    ["needs about", "guidance_size"], "before"),
    "advanced_log2_table_size_40": (advanced({"volume": {"log2_table_size": 40}}),
                                    ["volume.log2_table_size must be a whole number from 4 to 24, got 40"], "before"),
    "advanced_hidden_width_1e9": (advanced({"volume": {"hidden_width": 1e9}}),
                                  ["volume.hidden_width must be a whole number"], "before"),
    "advanced_occupancy_resolution_1e5": (advanced({"occupancy": {"resolution": 100000}}),
                                          ["occupancy.resolution must be a whole number from 2 to 256"], "before"),
    "advanced_render_sizes_100000": (advanced({"render_sizes": [100000]}),
                                     ["render_sizes must be a whole number from 1 to 2048"], "before"),
    "advanced_guidance_size_100000": (advanced({"guidance_size": 100000}), ["guidance_size must be"], "before"),
    "advanced_batch_size_1e6": (advanced({"batch_size": 1000000}), ["batch_size must be"], "before"),
    "advanced_largest_hash_grid": (advanced({"volume": {"levels": 32, "features_per_level": 8,
                                                        "log2_table_size": 24, "finest_resolution": 65536}}),
                                   ["needs about", "log2_table_size"], "before"),
    "advanced_radius_0": (advanced({"radius": 0}), ["radius must be a finite number"], "before"),
    "advanced_no_render_sizes": (advanced({"render_sizes": []}), ["render_sizes must list"], "before"),
    "advanced_section_not_an_object": (advanced({"volume": 5}), ["volume must be a JSON object"], "before"),
    "advanced_nan": (advanced({"regularizers": {"sparsity": {"end": float("nan")}}}),
                     ["regularizers.sparsity.end must be a finite number"], "before"),
    "turntable_720_views_2048": (turntable(720, 2048), ["NFSD NeRF Turntable (node 7), checked by NFSD Optimizer",
                                                        "needs about", "views", "size"], "before"),
    "mesh_resolution_1024": (mesh(1024), ["NFSD NeRF to Mesh (node 8), checked by NFSD Optimizer", "needs about",
                                          "resolution"], "before"),
    "texture_render_2048_batch_64_bank_4096": (texture(render_size=2048, batch_size=64, camera_bank=4096),
                                               ["needs about", "render_size", "a camera bank of 4096"], "before"),
    "texture_advanced_log2_table_size_40": (texture(advanced=json.dumps({"colour_field": {"log2_table_size": 40}})),
                                            ["colour_field.log2_table_size must be a whole number"], "before"),
    "texture_bake_8192": (texture_to_mesh(8192, 4, 64), ["NFSD Texture to Mesh (node 7), checked by NFSD Optimizer",
                                                         "needs about", "texture_size"], "before"),
    "texture_turntable_360_views_2048": (texture_to_mesh(256, 360, 2048), ["NFSD Texture to Mesh (node 7), checked",
                                                                           "needs about", "views"], "before"),
    "decomposition_2000_timesteps": (decomposition(", ".join(str(t % 1000) for t in range(2000))),
                                     ["timesteps lists 2000 values; give at most 100"], "validation"),
    "decomposition_5000_digit_timestep": (decomposition("9" * 5000), ["timesteps must be whole numbers",
                                                                      "(5,000 characters) is not one"], "validation"),
    "advanced_nested_60000_deep": (nerf_prompt(advanced="[" * 60000 + "]" * 60000),
                                   ["advanced is 120,000 characters long; give at most 65,536"], "validation"),
    "advanced_nested_5000_deep": (nerf_prompt(advanced='{"a":' * 5000 + "1" + "}" * 5000),
                                  ["advanced nests lists or objects more than 8 deep"], "validation"),
    "advanced_10_mb": (nerf_prompt(advanced="x" * 10**7), ["advanced is 10,000,000 characters long"], "validation"),
    "advanced_60000_character_setting": (advanced({"background": {"kind": "x" * 60000}}),
                                         ["background.unknown background 'xxxx", "(60,000 characters); choose one of"],
                                         "before"),
    "view_prompts_lone_surrogate": (nerf_prompt(), ["text holds a lone surrogate ('\\ud800') at character 4"],
                                    "validation"),
}
OVERSIZED["view_prompts_lone_surrogate"][0]["2"]["inputs"]["text"] = "a re\ud800d apple"

WIRING = {
    "canvas_into_turntable": (canvas_into(TURNTABLE_NODE, optimised=False),
                              ["NFSD_CANVAS", "NFSD_NERF"], "validation"),
    "canvas_into_mesh": (canvas_into(MESH_NODE, optimised=False), ["NFSD_CANVAS", "NFSD_NERF"], "validation"),
    "optimised_canvas_into_turntable": (canvas_into(TURNTABLE_NODE, optimised=True),
                                        ["takes a NeRF", "optimises a latent canvas"], "before"),
    "optimised_canvas_into_mesh": (canvas_into(MESH_NODE, optimised=True),
                                   ["takes a NeRF", "optimises a latent canvas"], "before"),
    "vae_of_another_model_into_optimizer": (demo_vae_into(OPTIMIZER), ["sized for a VAE of 8 pixels"], "before"),
    "sd_sized_canvas_on_the_demo_model": (sd_sized_canvas_on_the_demo_model(),  # the Renderer's VAE is the model's
                                          ["sized for a VAE of 8 pixels per latent", "the VAE has 4"], "before"),
    "sd_sized_canvas_on_the_demo_model_without_a_renderer": (
        only(sd_sized_canvas_on_the_demo_model(), "1", "2", "3", "4", "5", "6", "9"),
        ["sized for 8 pixels per latent but the MODEL's latents are 4"], "before"),
    "vae_of_another_model_into_renderer": (demo_vae_into("7"), ["NFSD Renderer (node 7), checked by NFSD Optimizer",
                                                                "sized for a VAE of 8 pixels"], "before"),
    "canvas_into_a_renderer_without_vae": (renderer_without_vae(), ["'vae' is not wired"], "before"),
    "latent_of_16_channels_into_decomposition": (
        decomposition(latent={"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64,
                                                                             "batch_size": 1}}),
        ["works on image latents of 4 channels"], "before"),
}

# Every FLOAT widget of every node that has one, in a graph where that node runs.
FLOAT_HOSTS = {
    "NFSD_ScoreDistillationGuidance": ("4", text_to_image_prompt),
    "NFSD_Optimizer": (OPTIMIZER, text_to_image_prompt),
    "NFSD_NeRFRepresentation": ("5", lambda: text_to_nerf_prompt(steps=1)),
    "NFSD_NeRFTurntable": ("7", lambda: text_to_nerf_prompt(steps=1)),
    "NFSD_ExtractMesh": ("8", lambda: text_to_nerf_prompt(steps=1)),
    "NFSD_MeshTexture": ("5", lambda: text_to_texture_prompt(steps=1)),
}


def float_inputs(comfyui) -> list[tuple[str, str]]:
    info = comfyui.object_info()
    return [(node_id, name) for node_id, node in info.items() if node_id.startswith("NFSD_")
            for section in ("required", "optional") for name, (kind, _) in node["input"].get(section, {}).items()
            if kind == "FLOAT"]


def non_finite_cases(comfyui) -> dict:
    cases = {}
    for node_type, name in float_inputs(comfyui):
        node_id, make = FLOAT_HOSTS[node_type]
        for value in (float("nan"), float("inf")):
            prompt = make()
            assert prompt[node_id]["class_type"] == node_type
            prompt[node_id]["inputs"][name] = value
            # inf is above every widget's max: ComfyUI refuses it at validation; NaN passes there
            cases[f"{node_type}.{name}={value}"] = (prompt, [name] if value > 0 else [name, "finite"],
                                                    "validation" if value > 0 else "before")
    return cases


# Every node of the pack in a graph where it runs and whose only output shows it: a hostile value in one of
# its inputs reaches it (and nothing else the graph does hides what it makes of it).
def shown(prompt: dict, node_id: str) -> dict:
    return {**prompt, "99": {"class_type": "PreviewAny", "inputs": {"source": [node_id, 0]}}}


HOSTS = {
    "NFSD_DemoModel": ("30", lambda: shown({"30": {"class_type": "NFSD_DemoModel", "inputs": {}}}, "30")),
    "NFSD_ScoreDistillationGuidance": ("4", lambda: shown(only(text_to_image_prompt(), "1", "2", "3", "4"), "4")),
    "NFSD_ViewPrompts": ("2", lambda: shown(only(text_to_nerf_prompt(), "1", "2"), "2")),
    "NFSD_LatentCanvas": ("5", lambda: shown(only(text_to_image_prompt(), "5"), "5")),
    "NFSD_NeRFRepresentation": ("5", lambda: shown(only(text_to_nerf_prompt(), "5"), "5")),
    "NFSD_Optimizer": (OPTIMIZER, lambda: only(text_to_image_prompt(steps=1), "1", "2", "3", "4", "5", "6", "9")),
    "NFSD_Renderer": ("7", lambda: text_to_image_prompt(steps=1)),
    "NFSD_NeRFTurntable": ("7", lambda: turntable(2, 16)),
    "NFSD_ExtractMesh": ("8", lambda: shown(mesh(16), "8")),
    "NFSD_SaveMesh": ("9", lambda: only(text_to_nerf_prompt(steps=1), "1", "2", "4", "5", "6", "8", "9")),
    "NFSD_ScoreDecomposition": ("11", decomposition),
    "NFSD_MeshTexture": ("5", lambda: shown(only(text_to_texture_prompt(), "3", "5"), "5")),
}
# What every STRING input is given: text no input should take, or that only a prompt may.
HOSTILE_TEXT = {
    "over-long": "a" * 1_000_000,
    "deep JSON": "[" * 3000 + "]" * 3000,
    "control characters": "NFSD/ru\x01n\x1b[31m",
    "lone surrogate": "NFSD/\ud800run",
    "reserved name": "CON",
}
# The only hostile text an input may take: a prompt may be brackets or the word CON; no file name, JSON
# setting or list of numbers may be.
TAKES_PROMPT_TEXT = {(prompt, kind) for prompt in ("NFSD_ViewPrompts.text", "NFSD_ScoreDistillationGuidance.source_text")
                     for kind in ("deep JSON", "reserved name")}


def string_inputs(comfyui) -> list[tuple[str, str]]:
    """(node type, input name) of every STRING input of every node of the pack, from GET /object_info."""
    info = comfyui.object_info()
    return [(node_id, name) for node_id, node in info.items() if node_id.startswith("NFSD_")
            for section in ("required", "optional") for name, (kind, *_) in node["input"].get(section, {}).items()
            if kind == "STRING"]


def hostile_text_cases(comfyui) -> dict:
    inputs = string_inputs(comfyui)
    unhosted = sorted({node_type for node_type, _ in inputs} - HOSTS.keys())
    assert not unhosted, f"add a graph for {unhosted} to HOSTS"
    cases = {}
    for node_type, name in inputs:
        node_id, make = HOSTS[node_type]
        for kind, value in HOSTILE_TEXT.items():
            prompt = make()
            assert prompt[node_id]["class_type"] == node_type
            prompt[node_id]["inputs"][name] = value
            cases[f"{node_type}.{name}={kind}"] = (prompt, [name], "refused or accepted")
    return cases


@pytest.fixture(scope="module")
def capped(tmp_path_factory) -> dict:
    """{case: (expected, where, outcome)} for every hostile case, run in one capped ComfyUI process."""
    runtime = comfy_runtime()
    cases = {**OVERSIZED, **WIRING, **non_finite_cases(runtime), **hostile_text_cases(runtime)}
    path = tmp_path_factory.mktemp("hostile") / "prompts.json"
    path.write_text(json.dumps({name: prompt for name, (prompt, _, _) in cases.items()}))
    paths = [str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    run = subprocess.run([sys.executable, str(TESTS / "comfyui_capped.py"), str(path), str(HEADROOM)],
                         capture_output=True, text=True, env=env, timeout=900)
    line = next((row for row in run.stdout.splitlines() if row.startswith("OUTCOMES ")), None)
    assert line is not None, run.stderr[-3000:]
    outcomes = json.loads(line[len("OUTCOMES "):])
    return {name: (expected, where, outcomes[name]) for name, (_, expected, where) in cases.items()}


def where_refused(outcome: dict) -> str:
    """"validation", "before" (refused with no optimiser step and no model call run, as counted),
    "late" (refused after some) or "accepted"."""
    if not outcome["valid"]:  # ComfyUI still runs the outputs that passed, without the refused node
        return "validation"
    if outcome["success"]:
        return "accepted"
    return "before" if outcome["optimizer_steps"] == outcome["model_calls"] == 0 else "late"


GROUPS = {"oversized": OVERSIZED, "wiring": WIRING}
MAX_MESSAGE = 1000  # characters of a refusal: it quotes excerpts, never a whole input
OUR_REFUSALS = ("ValueError", "CheckpointError")  # what the pack raises; a TypeError or OSError is a raw error


def in_group(name: str, group: str) -> bool:
    if group in GROUPS:
        return name in GROUPS[group]
    kind = "text" if "=" in name and name.rsplit("=", 1)[1] in HOSTILE_TEXT else "non_finite"
    return not any(name in cases for cases in GROUPS.values()) and kind == group


def counts(outcomes) -> dict:
    outcomes = list(outcomes)
    return {kind: sum(where_refused(o) == kind for o in outcomes) for kind in ("validation", "before", "late",
                                                                                "accepted")}


@pytest.mark.parametrize("group", ["oversized", "wiring", "non_finite"])
def test_every_hostile_input_is_refused_where_expected_with_the_fix(capped, group):
    selected = {name: item for name, item in capped.items() if in_group(name, group)}
    assert selected
    problems = []
    for name, (expected, where, outcome) in selected.items():
        refused = where_refused(outcome)
        missing = [text for text in expected if text not in outcome["message"]]
        if refused != where or missing or len(outcome["message"]) > MAX_MESSAGE:
            problems.append(f"{name}: refused {refused} (want {where}), missing {missing}, "
                            f"{len(outcome['message'])} characters: {outcome['message'][:300]}")
    print(f"{group}: {len(selected)} tried, {counts(o for _, _, o in selected.values())}")
    assert not problems, "\n".join(problems)


def test_every_string_input_refuses_hostile_text_clearly_before_work_or_takes_it(capped):
    """A refusal names the input, says why in a few hundred characters without repeating the value, and
    comes at validation or before any work; text an input may take (a prompt of brackets) runs through."""
    selected = {name: item for name, item in capped.items() if in_group(name, "text")}
    assert len(selected) >= 5 * len(HOSTILE_TEXT)
    problems = []
    for name, ((input_name,), _, outcome) in selected.items():
        value = HOSTILE_TEXT[name.rsplit("=", 1)[1]]
        message, refused = outcome["message"], where_refused(outcome)
        if refused == "accepted":
            continue
        repeated = len(value) >= 100 and value[:100] in message
        if refused == "late" or input_name not in message or len(message) > MAX_MESSAGE or repeated \
                or (outcome["exception_type"] or "ValueError").rsplit(".", 1)[-1] not in OUR_REFUSALS:
            problems.append(f"{name}: {refused}, {outcome['exception_type']}: {message[:300]}")
    for kind in HOSTILE_TEXT:
        of_kind = [o for name, (_, _, o) in selected.items() if name.endswith(f"={kind}")]
        print(f"hostile text, {kind}: {len(of_kind)} inputs, {counts(of_kind)}")
    print(f"hostile text: {len(selected)} tried, {counts(o for _, _, o in selected.values())}")
    assert not problems, "\n".join(problems)
    accepted = {tuple(name.rsplit("=", 1)) for name, (_, _, o) in selected.items() if where_refused(o) == "accepted"}
    assert accepted == TAKES_PROMPT_TEXT  # a prompt takes them and runs through; nothing else takes any


def test_allocation_errors_never_stand_in_for_a_refusal(capped):
    """Under the cap an unrefused input fails with an allocation error; none did."""
    raw = [name for name, (_, _, outcome) in capped.items()
           if any(text in outcome["message"] for text in ("can't allocate", "MemoryError", "out of memory"))]
    assert not raw


# Cancel: the node runs long enough that only a working interrupt ends it within a second.
CANCELLED = {
    "optimizer_canvas": (lambda: text_to_image_prompt(steps=100000), OPTIMIZER),
    "optimizer_nerf_inside_a_step": (lambda: {  # one step renders 256^2 x 128 samples: far over a second anywhere
        **only(text_to_nerf_prompt(steps=3, colour="latent", render_size=256, samples_per_ray=128), "1", "2", "4", "5",
               "6"),
        "9": {"class_type": "PreviewAny", "inputs": {"source": ["6", 2]}}}, OPTIMIZER),
    "optimizer_texture_inside_a_step": (lambda: texture(render_size=1024, advanced=""), OPTIMIZER),
    "texture_to_mesh_baking": (lambda: texture_to_mesh(4096, 1, 8), "7"),
    "turntable": (lambda: turntable(200, 96), "7"),
    "mesh": (lambda: mesh(320), "8"),
    "renderer_nerf": (lambda: {**only(text_to_nerf_prompt(steps=1, high_res_size=256), "1", "2", "4", "5", "6"),
                               "7": {"class_type": "NFSD_Renderer", "inputs": {"representation": ["6", 0]}},
                               "12": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}}}, "7"),
    "decomposition": (lambda: decomposition(", ".join(str(t) for t in range(100, 1000, 10)), latent={
        "class_type": "EmptyLatentImage", "inputs": {"width": 384, "height": 384, "batch_size": 1}}), "11"),
}
CANCEL_AFTER = 0.5  # seconds into the node's own work


class CancellingServer(HeadlessServer):
    """Presses Cancel (as POST /interrupt does) CANCEL_AFTER seconds after node `target` starts,
    or WATCHDOG seconds after the prompt starts if it never does (then the test fails, not hangs)."""

    WATCHDOG = 120.0

    @property
    def client_id(self) -> str:
        return "hostile-test"  # the executor reports which node runs only to a client

    @client_id.setter
    def client_id(self, value) -> None:
        """The executor sets the client of each prompt (none here); this server always has one."""

    def __init__(self, target: str):
        super().__init__()
        self.target, self.cancelled_at, self.started = target, None, False
        self.watchdog = threading.Timer(self.WATCHDOG, self.cancel)
        self.watchdog.start()

    def send_sync(self, event, data, sid=None):
        super().send_sync(event, data, sid)
        if event == "executing" and isinstance(data, dict) and data.get("node") == self.target and not self.started:
            self.started = True
            self.watchdog.cancel()
            threading.Timer(CANCEL_AFTER, self.cancel).start()

    def cancel(self):
        import comfy.model_management

        self.cancelled_at = time.perf_counter()
        comfy.model_management.interrupt_current_processing(True)


@pytest.fixture(scope="module")
def optimisers_imported() -> None:
    """The first torch optimiser of a process imports torch._dynamo: 1.5 to 4.5 s on a busy CPU,
    and an import cannot be interrupted. A server pays it once, at its first run; here before timing."""
    import torch._dynamo  # noqa: F401


@pytest.mark.parametrize("name", list(CANCELLED))
def test_cancel_stops_every_long_node_within_a_second(comfyui, optimisers_imported, name):
    make, target = CANCELLED[name]
    server = CancellingServer(target)
    steps_done = []  # Optimizer steps finished, each with its time
    with progress_hook(lambda value, total, preview, node_id: steps_done.append(time.perf_counter())
                       if node_id == OPTIMIZER else None):
        result = comfyui.execute(make(), server)
    finished = time.perf_counter()
    if name in ("optimizer_nerf_inside_a_step", "optimizer_texture_inside_a_step"):
        assert not steps_done, "the first step ended before Cancel: make it longer"
    server.watchdog.cancel()
    assert server.started and server.cancelled_at is not None, f"node {target} never started or ended before Cancel"
    assert not result.success and result.event("execution_interrupted") is not None, result.error_message
    latency = finished - server.cancelled_at
    print(f"{name}: stopped {latency:.2f} s after Cancel")
    assert latency < 1.0
