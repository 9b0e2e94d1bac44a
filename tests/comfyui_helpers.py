"""A real ComfyUI, headless and in-process, for the pack's integration tests.

Set COMFYUI_PATH to a ComfyUI checkout and run pytest with a Python that has ComfyUI's
requirements (see README, Development); without it these tests skip. `comfy_runtime()` starts
ComfyUI once per process under a temporary base directory of its own: custom_nodes holds a link
to this pack and the test-only `tiny_sd_register` pack, models/ four micro checkpoints (SD and SDXL,
eps and v-prediction) that stock CheckpointLoaderSimple loads and a tiny ControlNet, input/ the example.png
every ComfyUI ships (edit_image's picture), and output/temp/user stay inside it. Nothing under
COMFYUI_PATH is written (not even bytecode caches).
"""

from __future__ import annotations

import asyncio
import atexit
import importlib
import json
import os
import shutil
import sys
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

COMFYUI_PATH = os.environ.get("COMFYUI_PATH", "")
REPO = Path(__file__).resolve().parents[1]
TEST_PACKS = Path(__file__).resolve().parent / "comfyui_packs"
PACK_FOLDER = "nfsd"
CHECKPOINTS = {  # file name: tiny_sd_register.write_micro_checkpoint's arguments
    "tiny_sd_eps.safetensors": {"seed": 0}, "tiny_sd_v.safetensors": {"v_prediction": True, "seed": 1},
    "tiny_sdxl.safetensors": {"sdxl": True, "seed": 2},
    "tiny_sdxl_v.safetensors": {"sdxl": True, "v_prediction": True, "seed": 3},
}

requires_comfyui = pytest.mark.skipif(
    not COMFYUI_PATH, reason="COMFYUI_PATH is not set: the ComfyUI integration suite needs a ComfyUI checkout"
)


class HeadlessServer:
    """The parts of PromptServer that PromptExecutor and the progress handlers touch."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.sockets_metadata = {}
        self.messages: list[tuple[str, Any]] = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))

    def queue_updated(self):
        pass


@dataclass
class Execution:
    """The outcome of one prompt: validation, status events, UI outputs and node output values."""

    valid: bool
    success: bool = False
    error: Any = None
    node_errors: dict = field(default_factory=dict)
    events: list[tuple[str, dict]] = field(default_factory=list)
    ui: dict = field(default_factory=dict)
    values: dict = field(default_factory=dict)  # node id -> list of output values (first item of each slot)

    def event(self, name: str) -> dict | None:
        return next((data for event, data in self.events if event == name), None)

    @property
    def error_message(self) -> str:
        """What the user reads: the exception's message, or every validation error's message and details."""
        failure = self.event("execution_error")
        if failure is not None:
            return failure["exception_message"]
        errors = [self.error] if isinstance(self.error, dict) else []
        errors += [error for node in self.node_errors.values() for error in node.get("errors", [])]
        return "\n".join(f"{error.get('message', '')}: {error.get('details', '')}" for error in errors) \
            or json.dumps({"error": self.error, "node_errors": self.node_errors}, default=str)


class ComfyRuntime:
    """ComfyUI loaded in this process, with the pack and the tiny models installed."""

    def __init__(self, base: Path):
        self.base = base
        self.checkpoints = base / "models" / "checkpoints"
        import execution
        import nodes

        self._execution, self._nodes = execution, nodes
        pack_module = str(base / "custom_nodes" / PACK_FOLDER).replace(".", "_x_")
        self.pack = sys.modules[pack_module]
        self.tiny = sys.modules[str(base / "custom_nodes" / "tiny_sd_register").replace(".", "_x_")]

    def module(self, name: str):
        """A module of the pack as ComfyUI loaded it, e.g. module("nodes.adapters.score_model")."""
        return importlib.import_module(f"{self.pack.__name__}.{name}")

    def read_checkpoint(self, folder: Path):
        """The checkpoint in `folder` that this server's NFSD Optimizer wrote, read with its signing key."""
        from nfsd_core.checkpoint import read_checkpoint

        return read_checkpoint(folder, key=self.module("nodes.optimizer").signing_key())

    @property
    def node_classes(self) -> dict[str, Any]:
        return self._nodes.NODE_CLASS_MAPPINGS

    def object_info(self) -> dict[str, Any]:
        """What GET /object_info answers, from the server's own handler."""
        return self.get("/object_info")

    def get(self, path: str) -> Any:
        """The JSON a GET of `path` answers, from ComfyUI's own route handlers (no HTTP)."""
        import server
        from aiohttp import web

        async def fetch():
            instance = getattr(server.PromptServer, "instance", None) or server.PromptServer(asyncio.get_running_loop())
            routes = web.RouteTableDef()  # what PromptServer.add_routes adds for custom nodes
            instance.custom_node_manager.add_routes(routes, web.Application(), self._nodes.LOADED_MODULE_DIRS.items())
            handler = next(r.handler for r in [*instance.routes, *routes] if r.method == "GET" and r.path == path)
            return json.loads((await handler(None)).body)

        return asyncio.run(fetch())

    def load_checkpoint(self, name: str = "tiny_sd_eps.safetensors"):
        """(MODEL, CLIP, VAE) through the stock CheckpointLoaderSimple, as a prompt would get them."""
        import torch

        with torch.inference_mode():
            return self._nodes.CheckpointLoaderSimple().load_checkpoint(name)[:3]

    def run_node(self, node_id: str, **inputs) -> tuple:
        """Call one node (V1 or V3) directly, in inference mode as the executor does; its output values."""
        import torch

        node_class = self.node_classes[node_id]
        with torch.inference_mode():
            if hasattr(node_class, "PREPARE_CLASS_CLONE"):  # V3
                return tuple(node_class.PREPARE_CLASS_CLONE({}).execute(**inputs).args)
            return tuple(getattr(node_class(), node_class.FUNCTION)(**inputs))

    def execute(self, prompt: dict, server: HeadlessServer | None = None) -> Execution:
        """Validate and run an API-format prompt with a fresh executor (no cached outputs)."""
        prompt_id = str(uuid.uuid4())
        valid, error, outputs, node_errors = asyncio.run(self._execution.validate_prompt(prompt_id, prompt, None))
        if not valid:
            return Execution(valid=False, error=error, node_errors=node_errors)
        executor = self._execution.PromptExecutor(server or HeadlessServer(),
                                                  cache_type=self._execution.CacheType.CLASSIC)
        executor.execute(prompt, prompt_id, {}, outputs)
        values = {}
        for node_id in prompt:
            cached = executor.caches.outputs.get(node_id)
            if cached is not None:
                values[node_id] = [slot[0] if slot else None for slot in cached]
        return Execution(valid=True, success=executor.success, node_errors=node_errors,  # outputs ComfyUI dropped
                         events=list(executor.status_messages), ui=executor.history_result["outputs"], values=values)


GUIDANCE_DEFAULTS = {"rule": "NFSD", "scale": 0.0, "t_min": 0.02, "t_max": 0.98, "timestep_schedule": "uniform",
                     "t_max_end": 0.98, "anneal_at": 0.5, "weighting": "sds", "grad_clip": 0.0, "nfsd_threshold": 200}


def text_to_image_prompt(checkpoint: str = "tiny_sd_eps.safetensors", size: int = 64, batch: int = 1,
                         steps: int = 3, seed: int = 0, checkpoint_dir: str = "", preview_every: int = 0,
                         **guidance) -> dict:
    """An API-format NFSD prompt on a tiny checkpoint: "6" is the Optimizer, "7" the Renderer."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a red apple"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "blurry, dull"}},
        "4": {"class_type": "NFSD_ScoreDistillationGuidance",
              "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "clip": ["1", 1],
                         **GUIDANCE_DEFAULTS, **guidance}},
        "5": {"class_type": "NFSD_LatentCanvas",
              "inputs": {"width": size, "height": size, "batch_size": batch, "seed": 0}},
        "6": {"class_type": "NFSD_Optimizer",
              "inputs": {"guidance": ["4", 0], "representation": ["5", 0], "steps": steps, "learning_rate": 0.05,
                         "seed": seed, "preview_every": preview_every, "checkpoint_dir": checkpoint_dir}},
        "7": {"class_type": "NFSD_Renderer", "inputs": {"representation": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}},
        "9": {"class_type": "PreviewAny", "inputs": {"source": ["6", 2]}},
    }


# A NeRF small enough for a CPU test: 32 px renders of 16 samples per ray, seen by the model at 64 px
# (8 x 8 latents), a 4-level hash grid of 2^10 rows; the occupancy grid refreshed every 2 steps.
TINY_NERF = {
    "render_size": 32, "high_res_size": 0, "high_res_at": 0.5, "guidance_size": 64, "samples_per_ray": 16,
    "batch_size": 1, "background": "environment", "elevation_min": -10.0, "elevation_max": 45.0,
    "distance_min": 1.0, "distance_max": 1.5, "sparsity": 10.0, "opaque": 1000.0, "orientation": 0.0, "seed": 0,
    "advanced": json.dumps({
        "volume": {"levels": 4, "log2_table_size": 10, "base_resolution": 8, "finest_resolution": 32,
                   "hidden_width": 16},
        "occupancy": {"resolution": 16, "update_every": 2, "warmup_steps": 3},
    }),
}


def text_to_nerf_prompt(colour: str = "rgb", steps: int = 3, seed: int = 0, checkpoint_dir: str = "",
                        preview_every: int = 0, views: int = 3, **nerf) -> dict:
    """An API-format text-to-NeRF prompt on the tiny checkpoint, with view prompts: "6" is the Optimizer,
    "7" the Turntable, "8" NeRF to Mesh, "9" Save Mesh, "10" Preview3D, "11" core SaveGLB."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd_eps.safetensors"}},
        "2": {"class_type": "NFSD_ViewPrompts", "inputs": {"clip": ["1", 1], "text": "a red apple"}},
        "4": {"class_type": "NFSD_ScoreDistillationGuidance",
              "inputs": {"model": ["1", 0], "positive": ["2", 0], "clip": ["1", 1], **GUIDANCE_DEFAULTS}},
        "5": {"class_type": "NFSD_NeRFRepresentation", "inputs": {**TINY_NERF, "colour": colour, **nerf}},
        "6": {"class_type": "NFSD_Optimizer",
              "inputs": {"guidance": ["4", 0], "representation": ["5", 0], "steps": steps, "learning_rate": 0.01,
                         "seed": seed, "preview_every": preview_every, "checkpoint_dir": checkpoint_dir,
                         "vae": ["1", 2]}},
        "7": {"class_type": "NFSD_NeRFTurntable",
              "inputs": {"nerf": ["6", 0], "views": views, "size": 32, "elevation": 15.0, "distance": 1.5}},
        "8": {"class_type": "NFSD_ExtractMesh",
              "inputs": {"nerf": ["6", 0], "resolution": 32, "threshold": 0.0, "min_component": 0.01}},
        "9": {"class_type": "NFSD_SaveMesh", "inputs": {"mesh": ["8", 0], "filename_prefix": "NFSD/apple",
                                                        "format": "glb"}},
        "10": {"class_type": "Preview3D", "inputs": {"model_file": ["9", 0]}},
        "11": {"class_type": "SaveGLB", "inputs": {"mesh": ["8", 0], "filename_prefix": "mesh/apple"}},
        "12": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}},
    }


# A mesh texture small enough for a CPU test: 16 px renders seen by the model at 64 px (8 x 8 latents), a 4-level
# hash grid of 2^10 rows, the shapes prior's mug as a mesh of a few hundred faces.
TINY_TEXTURE = {
    "colour": "rgb", "render_size": 16, "guidance_size": 64, "batch_size": 1, "shading": "albedo",
    "background": "environment", "front": "+z", "fit_radius": 0.5, "camera_bank": 0, "start_colours": True, "seed": 0,
    "advanced": json.dumps({"colour_field": {"levels": 4, "log2_table_size": 10, "base_resolution": 4,
                                             "finest_resolution": 32, "hidden_width": 16}}),
}


def text_to_texture_prompt(steps: int = 3, seed: int = 0, checkpoint_dir: str = "", preview_every: int = 0,
                           views: int = 3, mesh_file: str | None = None, **texture) -> dict:
    """An API-format prompt that textures NFSD Demo Mesh's mug (or `mesh_file` from input/3d) on the tiny
    checkpoint, with view prompts: "3" is the mesh, "5" the Mesh Texture, "6" the Optimizer, "7" Texture to
    Mesh, "8" Save Mesh (GLB), "9" Preview3D, "10" the turntable's PreviewImage, "11" core SaveGLB."""
    source = {"mesh_file": mesh_file} if mesh_file else {"mesh_file": "none", "mesh": ["3", 0]}
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd_eps.safetensors"}},
        "2": {"class_type": "NFSD_ViewPrompts", "inputs": {"clip": ["1", 1], "text": "a red mug"}},
        "3": {"class_type": "NFSD_DemoMesh", "inputs": {"object": "mug", "resolution": 16}},
        "4": {"class_type": "NFSD_ScoreDistillationGuidance",
              "inputs": {"model": ["1", 0], "positive": ["2", 0], "clip": ["1", 1], **GUIDANCE_DEFAULTS}},
        "5": {"class_type": "NFSD_MeshTexture", "inputs": {**TINY_TEXTURE, **source, **texture}},
        "6": {"class_type": "NFSD_Optimizer",
              "inputs": {"guidance": ["4", 0], "representation": ["5", 0], "steps": steps, "learning_rate": 0.01,
                         "seed": seed, "preview_every": preview_every, "checkpoint_dir": checkpoint_dir,
                         "vae": ["1", 2]}},
        "7": {"class_type": "NFSD_TextureToMesh",
              "inputs": {"texture": ["6", 0], "texture_size": 64, "unwrap": "auto", "views": views, "view_size": 32}},
        "8": {"class_type": "NFSD_SaveMesh", "inputs": {"mesh": ["7", 0], "filename_prefix": "NFSD/mug",
                                                        "format": "glb"}},
        "9": {"class_type": "Preview3D", "inputs": {"model_file": ["8", 0]}},
        "10": {"class_type": "PreviewImage", "inputs": {"images": ["7", 2]}},
        "11": {"class_type": "SaveGLB", "inputs": {"mesh": ["7", 0], "filename_prefix": "mesh/mug"}},
    }
    if mesh_file:
        del prompt["3"]
    return prompt


@contextmanager
def progress_hook(callback):
    """Install `callback(value, total, preview, node_id)` as ComfyUI's global progress hook for the block."""
    import comfy.utils

    previous = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(
        lambda value, total, preview, prompt_id=None, node_id=None: callback(value, total, preview, node_id))
    try:
        yield
    finally:
        comfy.utils.set_progress_bar_global_hook(previous)


@contextmanager
def counting_work():
    """Count, for the block, the work that a refusal "before work" must come before: every optimiser
    step (torch's global step hook) and every diffusion-model call (ComfyUI's BaseModel.apply_model,
    which every sampler and NFSD node goes through). Yields the counts, a dict updated as they happen."""
    import comfy.model_base
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    counts = {"optimizer_steps": 0, "model_calls": 0}
    original = comfy.model_base.BaseModel.apply_model

    def count_step(optimizer, args, kwargs):
        counts["optimizer_steps"] += 1

    def counted_apply_model(self, *args, **kwargs):
        counts["model_calls"] += 1
        return original(self, *args, **kwargs)

    handle = register_optimizer_step_pre_hook(count_step)
    comfy.model_base.BaseModel.apply_model = counted_apply_model
    try:
        yield counts
    finally:
        handle.remove()
        comfy.model_base.BaseModel.apply_model = original


def forget_pack_root_package() -> None:
    """Drop the pack's root package from sys.modules before ComfyUI is imported.

    pytest imports the repository's root `__init__.py` (the pack entry point) as a package named
    after the checkout folder; in a checkout called `nodes` or `main` that entry would shadow
    ComfyUI's module of the same name. ComfyUI loads the pack again under its own name.
    """
    entry_point = str(REPO / "__init__.py")
    for name, module in list(sys.modules.items()):
        if getattr(module, "__file__", None) == entry_point:
            del sys.modules[name]


_runtime: ComfyRuntime | None = None


def comfy_runtime() -> ComfyRuntime:
    """Start ComfyUI once per process (about 10 s) and return it."""
    global _runtime
    if _runtime is not None:
        return _runtime
    if not COMFYUI_PATH:
        pytest.skip("COMFYUI_PATH is not set")
    base = Path(tempfile.mkdtemp(prefix="nfsd-comfyui-"))
    atexit.register(shutil.rmtree, base, True)
    (base / "custom_nodes").mkdir()
    (base / "models" / "checkpoints").mkdir(parents=True)
    (base / "input").mkdir()  # with the picture every ComfyUI ships in input/, which edit_image loads
    shutil.copy(Path(COMFYUI_PATH) / "input" / "example.png", base / "input" / "example.png")
    os.symlink(REPO, base / "custom_nodes" / PACK_FOLDER)
    os.symlink(TEST_PACKS / "tiny_sd_register", base / "custom_nodes" / "tiny_sd_register")
    forget_pack_root_package()
    sys.dont_write_bytecode = True  # no __pycache__ folders inside the ComfyUI checkout
    sys.path.insert(0, os.path.abspath(COMFYUI_PATH))

    from comfy.cli_args import args  # must be configured before the rest of ComfyUI is imported

    args.cpu = True
    args.base_directory = str(base)
    args.use_pytorch_cross_attention = True  # 3-4x faster than the CPU default (sub-quadratic)
    args.disable_api_nodes = True
    import utils.extra_config  # noqa: F401  (before `nodes`, which puts comfy/ first on sys.path)
    import nodes

    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
    _runtime = ComfyRuntime(base)
    for name, arguments in CHECKPOINTS.items():
        _runtime.tiny.write_micro_checkpoint(str(_runtime.checkpoints / name), **arguments)
    (base / "models" / "controlnet").mkdir()
    _runtime.tiny.write_tiny_controlnet(str(base / "models" / "controlnet" / "tiny_controlnet.safetensors"))
    return _runtime


@pytest.fixture
def comfyui() -> ComfyRuntime:
    """The ComfyUI runtime, with torch on one thread for the test: the tiny models gain nothing from
    more, and on a busy machine OpenMP threads waiting for each other made them 10-50x slower."""
    import torch

    runtime = comfy_runtime()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield runtime
    finally:
        torch.set_num_threads(threads)
