"""Real-size memory and time of every stage of the pack's work, one stage per child process.

Stable Diffusion 1.5, 2.1-base, 2.1-768 (v-prediction) and SDXL are built in ComfyUI's own model
classes (what the nodes run) from the architectures' published configs, with random weights:
nothing is downloaded, and memory and time do not depend on the weights. Each stage runs in a
fresh child process through the nodes' own code (NFSD View Prompts, the Guidance, NerfState /
CanvasState, ComfyScoreModel's session, the Turntable, Mesh and Decomposition nodes):

- nerf_rgb_64, nerf_rgb_256, nerf_latent_64, nerf_latent_256: one warm-up and one measured
  optimisation step at each render size of the default schedule (64 px, then 256 px from half of
  the run on), the warm-up on an occupancy-grid update, the measured step on the grid it left;
  NFSD with t >= 200 (the negative prompt evaluated: 3 rows per call, the largest step);
- canvas_512, canvas_768, canvas_1024: the same for a latent canvas of that many pixels;
- decomposition: NFSD Score Decomposition at its defaults (3 timesteps) on a latent of the
  architecture's native size; turntable (node defaults: 30 views of 256 px with normals) and
  mesh_128 / mesh_256 (the node's default and the workflow's resolution) need no diffusion model
  (architecture "nerf").

Per stage it records resident memory (the models; the peak; each phase's rise and peak), the
bytes autograd keeps for the render and the VAE encode, the NeRF's parameters, gradients and
AdamW state, and seconds per phase of the measured step, next to the pack's own estimate of the
same work; see `memory_probe` for how. Children run with MALLOC_MMAP_THRESHOLD_=65536, so freed
tensors leave the resident set. Finished stages are journalled (runs.jsonl): an interrupted run
resumes; results.json and results.md are rewritten after every stage.

    COMFYUI_PATH=... python benchmarks/real_size.py --label after [--architectures sd21 sdxl] \
        [--stages nerf_rgb_64 nerf_rgb_256] [--dtype fp32|bf16] [--threads 2]

`--cards` measures nothing: it writes what the nodes' memory checks estimate for each architecture
in fp16 on a CUDA card (cards.md, cards.json), the figures a GPU user's run is checked against.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "benchmarks" / "results" / "real_size"
GIB = 2**30
PROMPT = "a DSLR photo of a hamburger"
STEPS = 10000  # the shipped workflow's
NERF_STAGES = ("nerf_rgb_64", "nerf_rgb_256", "nerf_latent_64", "nerf_latent_256")
CANVAS_STAGES = ("canvas_512", "canvas_768", "canvas_1024")
MODEL_STAGES = NERF_STAGES + CANVAS_STAGES + ("decomposition",)
NERF_ONLY_STAGES = ("turntable", "mesh_128", "mesh_256")
TURNTABLE = {"views": 30, "size": 256, "elevation": 15.0, "distance": 1.5}  # the Turntable node's defaults
MICRO_PIXELS = 64  # the test suite's micro checkpoint (architecture "micro"): a smoke test of this script
VAE_CONFIG = {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "latent_channels": 4,
              "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4}


@dataclass(frozen=True)
class Architecture:
    """A Stable Diffusion architecture: its diffusers UNet config, native pixel size, prediction."""

    title: str
    unet: dict
    pixels: int
    v_prediction: bool = False
    vae: dict = field(default_factory=lambda: VAE_CONFIG)


SD_UNET = {"layers_per_block": 2, "block_out_channels": (320, 640, 1280, 1280),
           "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
           "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3}
SD2_UNET = {**SD_UNET, "cross_attention_dim": 1024, "attention_head_dim": (5, 10, 20, 20),
            "use_linear_projection": True}
ARCHITECTURES = {
    "sd15": Architecture("SD 1.5", {**SD_UNET, "cross_attention_dim": 768, "attention_head_dim": 8}, 512),
    "sd21": Architecture("SD 2.1-base", SD2_UNET, 512),
    "sd21_768": Architecture("SD 2.1-768 (v)", SD2_UNET, 768, v_prediction=True),
    "sdxl": Architecture("SDXL", {
        "layers_per_block": 2, "block_out_channels": (320, 640, 1280),
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "transformer_layers_per_block": (1, 2, 10), "attention_head_dim": (5, 10, 20), "cross_attention_dim": 2048,
        "use_linear_projection": True, "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 2816}, 1024),
}


# ---------------------------------------------------------------- the child: one stage, measured


def comfy_model(name: str, dtype, load_device=None, random_weights: bool = True):
    """The MODEL (ModelPatcher) of architecture `name` in ComfyUI's classes, in `dtype`.

    ComfyUI recognises the architecture from the shapes of a diffusers UNet built on the meta
    device (no memory), as it recognises a diffusers checkpoint, and builds its own UNet, whose
    weights it leaves empty (untouched pages: no resident memory) unless `random_weights`."""
    import comfy.model_detection
    import comfy.model_management
    import comfy.model_patcher
    import diffusers
    import torch

    from comfyui_helpers import comfy_runtime

    architecture = ARCHITECTURES[name]
    with torch.device("meta"):
        shapes = diffusers.UNet2DConditionModel(**architecture.unet).state_dict()
    unet_config = comfy.model_detection.unet_config_from_diffusers_unet(shapes, dtype)
    model_config = comfy.model_detection.model_config_from_unet_config(unet_config)
    model_config.set_inference_dtype(dtype, None)
    marker = {}
    if architecture.v_prediction:  # what ComfyUI reads a v-prediction SD 2.x checkpoint by
        marker = {"output_blocks.11.1.transformer_blocks.0.norm1.bias": torch.linspace(-1, 1, 320)}
    base = model_config.get_model(marker, "", device=torch.device("cpu"))
    if random_weights:
        comfy_runtime().tiny.init_random_(base.diffusion_model, seed=1)
    model = comfy.model_patcher.ModelPatcher(base, load_device=load_device or comfy.model_management.get_torch_device(),
                                             offload_device=comfy.model_management.unet_offload_device())
    return model, model_config


def comfy_vae(name: str, dtype):
    """The VAE of architecture `name` in ComfyUI's classes, random weights in `dtype`."""
    import comfy.sd
    import diffusers
    import torch

    torch.manual_seed(3)
    return comfy.sd.VAE(sd=diffusers.AutoencoderKL(**ARCHITECTURES[name].vae).state_dict(), dtype=dtype)


def comfy_architecture(name: str, dtype):
    """(MODEL, CLIP, VAE) of architecture `name` in ComfyUI's classes, random weights in `dtype`
    ("micro": the test suite's micro checkpoint)."""
    import comfy.sd

    from comfyui_helpers import comfy_runtime

    if name == "micro":
        return comfy_runtime().tiny.build_micro_model()
    model, model_config = comfy_model(name, dtype)
    clip = comfy.sd.CLIP(model_config.clip_target(), model_options={"dtype": dtype})
    comfy_runtime().tiny.init_random_(clip.cond_stage_model, seed=2)
    return model, clip, comfy_vae(name, dtype)


def module_bytes(*modules) -> int:
    from memory_probe import tensor_bytes

    return tensor_bytes(tensor for module in modules for tensor in [*module.parameters(), *module.buffers()])


def nerf_settings(runtime, stage: str, guidance_size: int):
    """The shipped workflow's NeRF (the node's defaults) in the stage's colour, seen at `guidance_size` px."""
    nerf = runtime.module("nfsd_core.nerf")
    colour = stage.split("_")[1]
    return nerf.NerfSettings(colour=colour, guidance_size=guidance_size,
                             background=nerf.BackgroundSettings(kind="environment"))


def stage_steps(settings, stage: str) -> tuple[int, int]:
    """(warm-up step, measured step): the first occupancy update at the stage's render size, then the next step."""
    size = int(stage.rsplit("_", 1)[1])
    first = next(step for step in range(STEPS) if settings.render_size(step, STEPS) == size)
    every = settings.occupancy.update_every
    warm_up = -(-first // every) * every
    return warm_up, warm_up + 1


GUIDANCE_INPUTS = {"rule": "NFSD", "scale": 7.5, "t_min": 0.2, "t_max": 0.98, "timestep_schedule": "uniform",
                   "t_max_end": 0.98, "anneal_at": 0.5, "weighting": "sds", "grad_clip": 0.0, "nfsd_threshold": 200}


def stage_representation(runtime, stage: str, pixels: int):
    """(socket value, warm-up step, measured step) of a NeRF or canvas stage."""
    if stage.startswith("nerf"):
        settings = nerf_settings(runtime, stage, pixels)
        return (runtime.module("nodes.sockets.nerf").NerfState(settings), *stage_steps(settings, stage))
    side = int(stage.split("_")[1]) // 8
    return runtime.module("nodes.sockets.canvas").CanvasState(1, 4, side, side), 0, 1


def optimisation_stage(runtime, stage: str, model, clip, vae, pixels: int, warmups: int) -> dict:
    """`warmups` (0 or 1) warm-up steps and one measured optimisation step of a NeRF or canvas stage,
    through the nodes' code (without a warm-up the measured step is the occupancy update's)."""
    import torch

    from memory_probe import PhaseProbe, SavedTensors, optimizer_state_bytes, rss, tensor_bytes

    score_model_module = runtime.module("nodes.adapters.score_model")
    autograd = runtime.module("nodes.adapters.autograd")
    core = runtime.module("nfsd_core")
    optimization_step = runtime.module("nfsd_core.optimize").optimization_step
    representation, warm_up, measured = stage_representation(runtime, stage, pixels)
    if not warmups:
        measured = warm_up
    text_node = "NFSD_ViewPrompts" if stage.startswith("nerf") else "CLIPTextEncode"
    positive = runtime.run_node(text_node, clip=clip, text=PROMPT)[0]
    guidance = runtime.run_node("NFSD_ScoreDistillationGuidance", model=model, positive=positive, clip=clip,
                                **GUIDANCE_INPUTS)[0]
    run_guidance = guidance.with_seed(0)
    score_model = guidance.model
    probe, render_graph, encode_graph, queried = PhaseProbe(), SavedTensors(), SavedTensors(), []
    record = {"estimate": estimates(runtime, representation, guidance, vae, stage), "warmups": warmups,
              "measured_step": measured}

    def body():
        with autograd.autograd_enabled():
            trained = representation.build(score_model.latent_format, score_model.device,
                                           vae if representation.needs_vae else None)
            settings = core.OptimizerSettings()
            optimizer = torch.optim.AdamW(trained.parameter_groups(settings.lr), betas=settings.betas,
                                          eps=settings.eps)
            record["representation_parameters"] = tensor_bytes(trained.parameters())
            if warmups:
                optimization_step(trained, run_guidance, optimizer, warm_up, STEPS)
            codec = getattr(trained, "codec", None)
            if codec is not None:
                with torch.no_grad():
                    codec.encode(torch.zeros(1, 3, 8, 8))  # makes the encoder's trainable copy (made once)
            copies = [codec._encoder] if codec is not None and codec._encoder is not None else []
            record["vae_copy"] = module_bytes(*copies) if copies else 0
            parameters = [*trained.parameters(), *(p for copy in copies for p in copy.parameters())]
            if hasattr(trained, "occupancy") and trained.occupancy is not None:
                probe.wrap(trained.occupancy, "update", "occupancy")
            if hasattr(trained, "field"):
                original_render = trained.render

                def counted_render(*args, **kwargs):
                    queried.clear()
                    with render_graph.counting(parameters):
                        output = original_render(*args, **kwargs)
                    record["queried"] = sum(queried)  # field queries of the render (not of a recompute)
                    return output

                trained.render = counted_render
                original_field = trained.field.forward

                def counted_field(points, *args, **kwargs):
                    queried.append(points.shape[0])
                    return original_field(points, *args, **kwargs)

                trained.field.forward = counted_field
                probe.wrap(trained, "render", "render")
                original_encode = trained.latents_for_guidance

                def counted_encode(*args, **kwargs):
                    with encode_graph.counting(parameters):
                        return original_encode(*args, **kwargs)

                trained.latents_for_guidance = counted_encode
                probe.wrap(trained, "latents_for_guidance", "encode")
            probe.wrap(score_model, "predict_noise", "denoiser")
            count_unet_calls(model.model.diffusion_model, record.setdefault("unet_call_rows", []))
            probe.wrap(torch.autograd, "backward", "backward")
            probe.wrap(optimizer, "step", "adam")
            start = rss()
            probe.reset()
            started = time.perf_counter()
            step = optimization_step(trained, run_guidance, optimizer, measured, STEPS)
            record["seconds"] = time.perf_counter() - started
            record["step_start"], record["step_peak"] = start, probe.peak()
            probe.restore()
            record["nerf_state"] = {"parameters": tensor_bytes(trained.parameters()),
                                    "gradients": tensor_bytes(p.grad for p in trained.parameters()),
                                    "optimizer": optimizer_state_bytes(optimizer)}
            record["render_size"] = step.stats.get("render_size")
            record["opacity"] = step.stats.get("opacity")
            record["evaluations"] = step.evaluations

    names = score_model_module.condition_names(run_guidance.prompts)
    score_model.session(names, representation.latent_shape, body, seed=0)
    record["render_graph"], record["encode_graph"] = render_graph.bytes, encode_graph.bytes
    record["phases"] = {name: phase.as_dict() for name, phase in probe.phases.items()}
    return record


def count_unet_calls(unet, rows: list[int]) -> None:
    """Append the rows of each call of `unet` from now on to `rows`: ComfyUI's calc_cond_batch splits a
    step's batched call in two when its own estimate exceeds the memory free at that moment."""
    original_forward = unet.forward

    def counted_forward(x, *args, **kwargs):
        rows.append(x.shape[0])
        return original_forward(x, *args, **kwargs)

    unet.forward = counted_forward


def estimates(runtime, representation, guidance, vae, stage: str) -> dict:
    """The pack's own estimate of the stage's step (bytes by part, nfsd_core's StepMemory), as the
    Optimizer computes it, for the stage's render size; `optimizer` is what the Optimizer checks
    (the largest stage). Code without these functions gives the Optimizer's total alone."""
    optimizer = runtime.module("nodes.optimizer")
    batch = representation.latent_shape[0]
    if not hasattr(optimizer, "model_rows"):
        return {"total": optimizer.step_memory(representation, guidance.model, vae, batch)}
    model, rows = guidance.model, optimizer.model_rows(guidance)
    whole = optimizer.step_memory(representation, model, vae, batch, rows)
    if not stage.startswith("nerf"):
        return {**whole.parts(), "optimizer": whole.total}
    _, channels, height, width = representation.latent_shape
    denoiser = runtime.module("nodes.guards.limits").model_call_bytes(model.patcher,
                                                                       [batch * rows, channels, height, width])
    encode = (0, 0, 0)
    if representation.needs_vae:
        factor = vae.spacial_compression_encode()
        encode = runtime.module("nodes.adapters.codec").encode_memory(vae, batch, height * factor, width * factor)
    size = int(stage.rsplit("_", 1)[1])
    return {**representation.stage_memory(size, batch, denoiser, encode).parts(), "optimizer": whole.total}


def decomposition_stage(runtime, model, clip, vae, pixels: int) -> dict:
    import torch

    from memory_probe import PhaseProbe

    positive = runtime.run_node("CLIPTextEncode", clip=clip, text=PROMPT)[0]
    latent = {"samples": torch.randn(1, 4, pixels // 8, pixels // 8, generator=torch.Generator().manual_seed(0))}
    score_model_module = runtime.module("nodes.adapters.score_model")
    decomposition = runtime.module("nodes.decomposition")
    probe = PhaseProbe()
    probe.wrap(score_model_module.ComfyScoreModel, "predict_noise", "denoiser")
    probe.wrap(vae, "decode", "decode")
    estimate = decomposition_estimate(runtime, model, vae, pixels)
    probe.reset()
    started = time.perf_counter()
    runtime.run_node("NFSD_ScoreDecomposition", model=model, positive=positive, latent=latent, vae=vae,
                     timesteps="200, 500, 800", seed=0, nfsd_threshold=200, normalize=True, clip=clip)
    seconds = time.perf_counter() - started
    peak = probe.peak()
    probe.restore()
    return {"estimate": estimate, "seconds": seconds, "step_peak": peak,
            "phases": {name: phase.as_dict() for name, phase in probe.phases.items()}}


def decomposition_estimate(runtime, model, vae, pixels: int) -> dict:
    """The Decomposition node's estimate of 3 timesteps on one latent of `pixels` px."""
    score_model = runtime.module("nodes.adapters.score_model").ComfyScoreModel(model)
    memory = runtime.module("nodes.decomposition").decomposition_memory
    return {"total": memory(score_model, vae, (1, 4, pixels // 8, pixels // 8), 3)}


def nerf_only_estimate(runtime, stage: str, state) -> dict:
    """The Turntable node's (at `TURNTABLE`, with normals) or the Mesh node's estimate for `state` (a NerfState)."""
    if stage == "turntable":
        estimate = state.turntable_estimate(TURNTABLE["elevation"], TURNTABLE["distance"])
        return {"total": estimate(TURNTABLE["views"], TURNTABLE["size"], True)}
    return {"total": runtime.module("nfsd_core").mesh_bytes(state.settings, int(stage.split("_")[1]))}


def updated_nerf_state(runtime):
    """A NerfState of the default NeRF after one occupancy update (what the Turntable and Mesh stages read)."""
    import torch

    settings = nerf_settings(runtime, "nerf_rgb", 512)
    nerf = runtime.module("nfsd_core.nerf").NerfRepresentation(settings)
    render_step_size = runtime.module("nfsd_core.nerf.rendering").render_step_size
    nerf.occupancy.update(0, nerf.field.density, render_step_size(settings.radius, settings.samples_per_ray),
                          torch.Generator().manual_seed(0))
    weights = {name: value.detach().clone() for name, value in nerf.state_dict().items()}
    return runtime.module("nodes.sockets.nerf").NerfState(settings, weights=weights)


def nerf_only_stage(runtime, stage: str) -> dict:
    """The Turntable or Mesh node at its defaults on a NeRF after one occupancy update (no model needed)."""
    from memory_probe import PhaseProbe

    state = updated_nerf_state(runtime)
    probe = PhaseProbe()
    if stage == "turntable":
        node = ("NFSD_NeRFTurntable", {"nerf": state, **TURNTABLE})
    else:
        node = ("NFSD_ExtractMesh", {"nerf": state, "resolution": int(stage.split("_")[1]), "threshold": 0.0,
                                     "min_component": 0.01})
    probe.reset()
    started = time.perf_counter()
    runtime.run_node(node[0], **node[1])
    seconds = time.perf_counter() - started
    return {"estimate": nerf_only_estimate(runtime, stage, state), "seconds": seconds, "step_peak": probe.peak(),
            "phases": {}}


def stage_estimate(runtime, model, vae, architecture: str, stage: str) -> dict:
    """The pack's estimate of `stage` with MODEL `model` and `vae` (NFSD guidance; weights never read)."""
    import torch

    pixels = MICRO_PIXELS if architecture == "micro" else ARCHITECTURES[architecture].pixels
    if stage == "decomposition":
        return decomposition_estimate(runtime, model, vae, pixels)
    core = runtime.module("nfsd_core")
    condition = [[torch.zeros(1, 77, 8), {}]]  # never evaluated: the estimate reads the rule and the model
    score_model = runtime.module("nodes.adapters.score_model").ComfyScoreModel(model)
    guidance = core.ScoreDistillation(score_model, core.Prompts(condition, condition, condition), "nfsd")
    representation = stage_representation(runtime, stage, pixels)[0]
    return estimates(runtime, representation, guidance, vae, stage)


def estimate_only(key: str) -> dict:
    """The pack's estimate for stage `key` alone, the architecture built with empty weights (seconds)."""
    import torch

    runtime = start_child(1)
    architecture, stage, dtype_name = key.split("/")
    if architecture == "nerf":
        return nerf_only_estimate(runtime, stage, updated_nerf_state(runtime))
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    if architecture == "micro":
        model, _, vae = comfy_architecture(architecture, dtype)
    else:
        model, vae = comfy_model(architecture, dtype, random_weights=False)[0], comfy_vae(architecture, dtype)
    return stage_estimate(runtime, model, vae, architecture, stage)


CARD_STAGES = ("nerf_rgb_64", "nerf_rgb_256", "nerf_latent_64", "nerf_latent_256", "canvas", "decomposition")
CARD_GIB = (8, 12, 16)


def card_estimates(architecture: str) -> list[dict]:
    """The nodes' estimates for a CUDA card, per stage of CARD_STAGES: the UNet in fp16 on "cuda" (only
    sizes are read, nothing runs), the VAE in bf16 (what ComfyUI picks on cards with bf16); the canvas,
    the NeRF's guidance and the decomposition at the architecture's native size. `resident` = what the
    check counts beside the step (the UNet's weights, ComfyUI's reserve), `step` = the step's estimate."""
    import torch

    runtime = start_child(1)
    limits = runtime.module("nodes.guards.limits")
    model = comfy_model(architecture, torch.float16, load_device=torch.device("cuda"), random_weights=False)[0]
    vae = comfy_vae(architecture, torch.bfloat16)
    resident = limits.resident_bytes(torch.device("cuda"), model)
    pixels = ARCHITECTURES[architecture].pixels
    rows = []
    for stage in CARD_STAGES:
        estimate = stage_estimate(runtime, model, vae, architecture, f"canvas_{pixels}" if stage == "canvas" else stage)
        step = estimate["total"] - (resident if stage == "decomposition" else 0)  # the node's figure counts both
        rows.append({"architecture": architecture, "stage": stage, "pixels": pixels, "resident": resident,
                     "step": step, "total": resident + step})
    return rows


def card_table(rows: list[dict]) -> str:
    lines = ["# Estimates for CUDA cards in fp16 (not measured: no GPU was lent)", "",
             "Made by `python benchmarks/real_size.py --cards`: the memory check of NFSD Optimizer (NeRF, canvas) "
             "and NFSD Score Decomposition for ComfyUI's models of each architecture in fp16 on a CUDA device, "
             "the VAE in bf16, NFSD guidance (3 rows per model call), the shipped NeRF workflow's settings with "
             "`guidance_size` the model's own, the canvas at the model's own size. `resident` = the UNet's weights "
             "and ComfyUI's reserve; `step` = the estimate of the step's own work, which `benchmarks/real_size.py` "
             "checks against measured steps on the CPU (results.md). GiB.", "",
             "| architecture | stage | px | resident | step | total | "
             + " | ".join(f"fits {gib} GB" for gib in CARD_GIB) + " |", "|" + "---|" * (6 + len(CARD_GIB))]
    for row in rows:
        fits = " | ".join("yes" if row["total"] <= gib * GIB else "no" for gib in CARD_GIB)
        lines.append(f"| {ARCHITECTURES[row['architecture']].title} | {row['stage']} | {row['pixels']} | "
                     f"{gb(row['resident'])} | {gb(row['step'])} | {gb(row['total'])} | {fits} |")
    return "\n".join(lines) + "\n"


def start_child(threads: int):
    """ComfyUI with the pack, in this child process (see tests/comfyui_helpers.py)."""
    sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]
    import torch
    from torchvision_stub import hide_torchvision_stub

    hide_torchvision_stub()  # an import-only torchvision (this CPU venv's) would break diffusers' imports
    import diffusers.models  # noqa: F401  (imported before the measurements: its code is not the models' memory)
    import transformers  # noqa: F401

    torch.set_num_threads(threads)
    from comfyui_helpers import comfy_runtime

    return comfy_runtime()


def child(key: str, threads: int, warmups: int) -> dict:
    """Run stage `key` ("architecture/stage/dtype") here and return its record."""
    runtime = start_child(threads)
    import torch

    from memory_probe import rss

    architecture, stage, dtype_name = key.split("/")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    record = {"key": key, "start": rss()}
    if architecture == "nerf":
        record.update(nerf_only_stage(runtime, stage))
    else:
        started = time.perf_counter()
        model, clip, vae = comfy_architecture(architecture, dtype)
        record["build_seconds"] = time.perf_counter() - started
        record["models"] = rss()
        record["model_bytes"] = {"unet": module_bytes(model.model), "clip": module_bytes(clip.cond_stage_model),
                                 "vae": module_bytes(vae.first_stage_model)}
        pixels = MICRO_PIXELS if architecture == "micro" else ARCHITECTURES[architecture].pixels
        if stage == "decomposition":
            record.update(decomposition_stage(runtime, model, clip, vae, pixels))
        else:
            record.update(optimisation_stage(runtime, stage, model, clip, vae, pixels, warmups))
    record["peak"] = max(record["step_peak"], record.get("models", 0))
    return record


# ---------------------------------------------------------------- the parent: stages, journal, tables


def stage_keys(architectures: list[str], stages: list[str] | None, dtype: str) -> list[str]:
    keys = []
    for architecture in architectures:
        names = NERF_ONLY_STAGES if architecture == "nerf" else MODEL_STAGES
        keys += [f"{architecture}/{stage}/{dtype}" for stage in names if stages is None or stage in stages]
    return keys


def run_child(key: str, threads: int, *options: str) -> dict:
    """What `--child key` (or another child mode in `options`) prints, run in a fresh process."""
    from memory_probe import CLEAN_MALLOC

    environment = {**os.environ, **CLEAN_MALLOC, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, __file__, *(options or ("--child",)), key, "--threads", str(threads)]
    started = time.perf_counter()
    result = subprocess.run(command, env=environment, stdout=subprocess.PIPE, text=True)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode or not lines:
        raise SystemExit(f"stage {key} failed (exit {result.returncode}); its output is above")
    record = json.loads(lines[-1][len("RESULT "):])
    record["wall_seconds"] = round(time.perf_counter() - started, 1)
    return record


def gb(value: float | None) -> str:
    return "" if value is None else f"{value / GIB:.2f}"


def phase_rise(record: dict, name: str) -> int | None:
    phase = record.get("phases", {}).get(name)
    return None if phase is None else phase["peak"] - phase["start"]


def summary(record: dict) -> dict:
    """The table's columns of one stage record (bytes and seconds)."""
    models = record.get("models", record["start"]) - record["start"]
    over_models = record["peak"] - record.get("models", record["start"])
    estimate = record["estimate"].get("total")
    phases = record.get("phases", {})
    return {
        "peak": record["peak"] - record["start"], "models": models, "step": over_models, "estimate": estimate,
        "ratio": None if not estimate else estimate / over_models,
        "nerf_state": sum(record["nerf_state"].values()) if "nerf_state" in record else None,
        "render_graph": record.get("render_graph"), "encode_graph": record.get("encode_graph"),
        "denoiser": phase_rise(record, "denoiser"), "backward": phase_rise(record, "backward"),
        "seconds": record["seconds"], "phase_seconds": {name: phase["seconds"] for name, phase in phases.items()},
    }


def markdown(results: dict) -> str:
    lines = ["# Real-size memory and time per stage", "",
             "Made by `python benchmarks/real_size.py` (see its docstring): ComfyUI's own model classes with random "
             "weights, one stage per child process, resident memory with `MALLOC_MMAP_THRESHOLD_=65536`; "
             "memory in GiB above the process after ComfyUI's start-up; seconds of the one measured step "
             "(after `warm-ups` steps) on this machine's CPU. `step` = peak resident memory minus the models "
             "alone; `estimate` = the pack's estimate of the same (the Optimizer's, the node's); graphs are the "
             "bytes autograd keeps (memory_probe.SavedTensors); `denoiser` and `backward` = the peak rise "
             "during that phase; `UNet calls` = the rows of each UNet call of the measured step.", ""]
    header = ("| label | architecture | stage | dtype | peak | models | step | estimate | est./step | NeRF state "
              "| render graph | encode graph | denoiser | backward | UNet calls | s/step | warm-ups | phases (s) |")
    lines += [header, "|" + "---|" * 18]
    for label, records in results.items():
        for key, record in records.items():
            architecture, stage, dtype = key.split("/")
            row = summary(record)
            phases = ", ".join(f"{name} {seconds:.1f}" for name, seconds in row["phase_seconds"].items())
            ratio = "" if row["ratio"] is None else f"{row['ratio']:.2f}"
            lines.append(f"| {label} | {architecture} | {stage} | {dtype} | {gb(row['peak'])} | {gb(row['models'])} | "
                         f"{gb(row['step'])} | {gb(row['estimate'])} | {ratio} | {gb(row['nerf_state'])} | "
                         f"{gb(row['render_graph'])} | {gb(row['encode_graph'])} | {gb(row['denoiser'])} | "
                         f"{gb(row['backward'])} | {unet_calls(record)} | {row['seconds']:.1f} | "
                         f"{record.get('warmups', '')} | {phases} |")
    return "\n".join(lines + run_hours(results)) + "\n"


def unet_calls(record: dict) -> str:
    """The measured step's UNet calls as their rows ("3", "2 + 1"); blank where not counted."""
    return " + ".join(str(rows) for rows in record.get("unet_call_rows", []))


def run_hours(results: dict) -> list[str]:
    """Lines of a table: the wall time of the shipped workflow's run (STEPS steps at the NeRF node's
    default render sizes) from the measured steps, per label, architecture, colour and dtype."""
    sys.path.insert(0, str(ROOT))
    from nfsd_core.nerf import NerfSettings

    settings = NerfSettings()
    steps = {size: sum(settings.render_size(step, STEPS) == size for step in range(STEPS)) for size in
             settings.render_sizes}
    lines = []
    for label, records in results.items():
        for key in records:
            architecture, stage, dtype = key.split("/")
            if not stage.startswith("nerf") or not stage.endswith(f"_{settings.render_sizes[0]}"):
                continue
            colour = stage.split("_")[1]
            seconds = {size: records.get(f"{architecture}/nerf_{colour}_{size}/{dtype}", {}).get("seconds")
                       for size in steps}
            if None not in seconds.values():
                hours = sum(steps[size] * seconds[size] for size in steps) / 3600
                per_size = ", ".join(f"{steps[size]} x {seconds[size]:.1f} s at {size} px" for size in steps)
                lines.append(f"| {label} | {architecture} | {colour} | {dtype} | {per_size} | {hours:.0f} h |")
    if not lines:
        return []
    return ["", f"A whole run of the shipped workflow ({STEPS} steps), from the measured steps above (the "
            "occupancy grid's refresh, every 16th step, and previews left out):", "",
            "| label | architecture | NeRF | dtype | steps | wall time |", "|" + "---|" * 6, *lines]


def write_results(journal, output: Path) -> None:
    results: dict[str, dict] = {}
    for key, records in journal.done.items():
        label, rest = key.split("/", 1)
        results.setdefault(label, {})[rest] = records[0]
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    (output / "results.json").write_text(json.dumps({"machine": machine, "results": results}, indent=1) + "\n")
    (output / "results.md").write_text(markdown(results))


def open_journal(output: Path, threads: int):
    """The journal of finished stages (runs.jsonl, not committed); in a fresh clone it starts from
    the committed results.json, so a new run adds its stages to the figures already there."""
    from nfsd_core.batch.journal import Journal

    path, results = output / "runs.jsonl", output / "results.json"
    seed = not path.is_file() and results.is_file()
    journal = Journal(path, {"benchmark": "real_size", "threads": threads})
    if seed:
        for label, records in json.loads(results.read_text())["results"].items():
            for key, record in records.items():
                journal.add(f"{label}/{key}", [record])
    return journal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", default="after", help="names this code's results (e.g. before, after)")
    parser.add_argument("--architectures", nargs="+", default=["sd21", "sdxl", "sd15", "sd21_768", "nerf"],
                        choices=[*ARCHITECTURES, "nerf", "micro"])
    parser.add_argument("--stages", nargs="+", choices=[*MODEL_STAGES, *NERF_ONLY_STAGES])
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmups", type=int, choices=(0, 1), default=1,
                        help="warm-up steps before the measured one (0: the measured step is the first, for SDXL)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--rerun", action="store_true",
                        help="measure the label's stages again where journalled (a row taken while other work "
                             "shared the machine)")
    parser.add_argument("--refresh-estimates", action="store_true",
                        help="recompute the estimates of the label's journalled stages (this code's), measure nothing")
    parser.add_argument("--cards", action="store_true",
                        help="write the estimates for CUDA cards in fp16 (cards.md, cards.json), measure nothing")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--estimate", help=argparse.SUPPRESS)
    parser.add_argument("--card", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.threads, args.warmups)), flush=True)
        return
    if args.estimate:
        print("RESULT " + json.dumps(estimate_only(args.estimate)), flush=True)
        return
    if args.card:
        print("RESULT " + json.dumps({"rows": card_estimates(args.card)}), flush=True)
        return
    if not os.environ.get("COMFYUI_PATH"):
        raise SystemExit("set COMFYUI_PATH to a ComfyUI checkout: the stages run ComfyUI's model classes")
    sys.path.insert(0, str(ROOT))
    if args.cards:
        rows = [row for name in ARCHITECTURES for row in run_child(name, 1, "--card")["rows"]]
        (args.output / "cards.json").write_text(json.dumps(rows, indent=1) + "\n")
        (args.output / "cards.md").write_text(card_table(rows))
        return
    journal = open_journal(args.output, args.threads)
    if args.refresh_estimates:
        for labelled, records in list(journal.done.items()):
            if labelled.startswith(args.label + "/"):
                estimate = run_child(labelled.split("/", 1)[1], 1, "--estimate")
                estimate.pop("wall_seconds")
                journal.add(labelled, [{**records[0], "estimate": estimate}])
        write_results(journal, args.output)
        return
    for key in stage_keys(args.architectures, args.stages, args.dtype):
        labelled = f"{args.label}/{key}"
        if labelled in journal.done and not args.rerun:
            continue
        print(f"{labelled} ...", file=sys.stderr, flush=True)
        record = run_child(key, args.threads, "--warmups", str(args.warmups), "--child")
        journal.add(labelled, [record])
        write_results(journal, args.output)
        row = summary(record)
        print(f"{labelled}: peak {gb(row['peak'])} GB, models {gb(row['models'])}, step {gb(row['step'])}, "
              f"estimate {gb(row['estimate'])} ({row['ratio'] or 0:.2f}x the step), {row['seconds']:.1f} s/step "
              f"({record['wall_seconds']} s in all)",
              file=sys.stderr, flush=True)
    write_results(journal, args.output)  # also when every stage was journalled before (this code's tables)


if __name__ == "__main__":
    main()
