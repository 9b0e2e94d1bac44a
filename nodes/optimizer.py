"""NFSD Optimizer: runs nfsd_core's optimisation loop on a representation, inside ComfyUI.

The loop runs in one ComfyScoreModel session (the model loaded and the conditioning processed
once, as for a sampler), with autograd enabled only around it. Progress and previews go to
ComfyUI's progress bar; an interrupt stops the run before the next step, after the core has
saved its state when a checkpoint directory is set, so queueing the prompt again resumes it.

A checkpoint_dir must stay inside ComfyUI's output folder (see guards.paths) and be NFSD's own folder
(see nfsd_core's checkpoint); both are checked, and the folder's writability, before the model
loads. Representations that ask for it (NeRFs) checkpoint without a directory too: into ComfyUI's
temp folder, named by the digest of the run's identity (nfsd_core's `run_identity`: every setting,
the starting state, the model, prompts and VAE). The same inputs always give the same result, so
a run found there is the run being asked for: queued again after an interrupt it resumes, and
after ComfyUI dropped the node's cached output it is restored without recomputing. ComfyUI
empties the temp folder when it starts.
"""

from __future__ import annotations

import json
import os
from typing import Mapping

import comfy.model_management
import comfy.utils
import folder_paths
import latent_preview
from comfy_api.latest import io

from ..nfsd_core import (CheckpointError, OptimizerSettings, RunResult, ScoreDistillation, StepRecord,
                         claim_checkpoint_dir, history_columns, identity_digest, json_ready, optimize, run_identity)
from .adapters.autograd import autograd_enabled
from .adapters.fingerprint import fingerprint, model_fingerprint, sampled_weights
from .adapters.preview import select_previewer
from .adapters.score_model import ComfyScoreModel, condition_names
from .guards.graph import check_consumers, check_numbers
from .guards.limits import check_finite, check_memory, model_call_bytes
from .guards.paths import confined
from .schema import CATEGORY
from .sockets import Guidance, Representation
from .sockets.canvas import CanvasState
from .sockets.representation import NodeRepresentation

CHECKPOINT_EVERY = 100  # steps between saves into a checkpoint directory the user chose
CHECKPOINT_EXAMPLE = "NFSD/checkpoints/my_run"  # a checkpoint_dir that works, for tooltips and refusals


def checkpoint_folder(checkpoint_dir: str) -> str | None:
    """None for "", else the folder inside ComfyUI's output folder, claimed for NFSD (refused if it
    leads outside, holds files NFSD did not write, or cannot be written to)."""
    if not checkpoint_dir.strip():
        return None
    folder = confined("checkpoint_dir", checkpoint_dir.strip(), folder_paths.get_output_directory(), "output",
                      CHECKPOINT_EXAMPLE)
    try:
        claim_checkpoint_dir(folder)
    except CheckpointError as error:
        raise CheckpointError(f"checkpoint_dir {checkpoint_dir.strip()!r}: {error}") from None
    return folder


def run_checkpoint(chosen: str | None, representation: NodeRepresentation, identity: dict) -> tuple[str | None, int]:
    """(checkpoint folder, save every N steps) of a run: the user's folder, saved every
    CHECKPOINT_EVERY steps; else for representations that checkpoint by default a folder in
    ComfyUI's temp folder named by the run's `identity`, saved when the run stops (the temp folder
    does not outlive ComfyUI, so saves in between would protect nothing); else none."""
    if chosen is not None:
        return chosen, CHECKPOINT_EVERY
    if representation.checkpoint_by_default:
        return os.path.join(folder_paths.get_temp_directory(), "nfsd", identity_digest(identity)), 0
    return None, 0


def run_statistics(result: RunResult, guidance: ScoreDistillation) -> dict:
    """The run's settings and its per-step history as columns (strict JSON once `json_ready`:
    a NaN loss becomes null); `nonfinite_gradient` counts the gradient entries zeroed per step."""
    history = result.history
    return {
        "rule": guidance.rule.name,
        "scale": guidance.scale,
        "weighting": guidance.weighting,
        "seed": guidance.noise_stream.seed,
        "steps_done": result.steps_done,
        "evaluations": sum(r.evaluations for r in history),
        "seconds": round(sum(r.seconds for r in history), 3),
        "history": history_columns(history),
    }


def check_inputs(guidance, representation, vae) -> ComfyScoreModel:
    if not isinstance(guidance, ScoreDistillation) or not isinstance(guidance.model, ComfyScoreModel):
        raise ValueError("guidance must come from NFSD Score Distillation Guidance")
    if not isinstance(representation, NodeRepresentation):
        raise ValueError("representation must come from an NFSD representation node (e.g. NFSD Latent Canvas)")
    if representation.needs_vae and vae is None:
        raise ValueError("this representation renders pixels (an RGB NeRF), which reach the model only through the "
                         "VAE: wire the checkpoint's VAE into NFSD Optimizer's 'vae' input, or set the NeRF's colour "
                         "to 'latent'")
    if isinstance(guidance.prompts.positive, Mapping) and not representation.has_views:
        raise ValueError("the guidance has one prompt per camera view (NFSD View Prompts), but this representation "
                         "has no cameras (a latent canvas): wire a CLIP Text Encode into the Guidance's positive")
    check_edit(guidance, representation)
    if vae is not None:
        vae.throw_exception_if_invalid()
        representation.check_vae(vae)
    return guidance.model


def check_edit(guidance: ScoreDistillation, representation: NodeRepresentation) -> None:
    """An edit (a rule that reads a source image) or a mask works on a latent canvas of the source's
    size; an edit starts from the image."""
    if guidance.source_latents is None and guidance.mask is None:
        return
    what = f"the {guidance.rule.name} rule edits an image" if guidance.rule.edits else "the guidance has a mask"
    if not isinstance(representation, CanvasState):
        raise ValueError(f"{what}, which works on a latent canvas, not on this representation: wire NFSD Latent Canvas "
                         "(initial_latent: the image's LATENT) into the Optimizer")
    try:
        guidance.check_fits(representation.latent_shape)
    except ValueError as error:
        raise ValueError(f"{what} of another size than the canvas ({error}): wire the LATENT the canvas starts "
                         "from (its initial_latent) into the guidance's 'source', and give a mask of that image's "
                         "size") from None
    if guidance.rule.edits and representation.samples is None:
        raise ValueError(f"{what}, so the canvas starts from it: wire the LATENT of the guidance's 'source' into NFSD "
                         "Latent Canvas's initial_latent too")


def step_memory(representation: NodeRepresentation, model: ComfyScoreModel, vae, batch: int,
                side: int | None = None) -> int:
    """Bytes of one optimisation step with `batch` images (of side x side latents if given): the
    representation's own, the model's activations for one batched call (ComfyUI's estimate) and,
    for RGB NeRFs, the VAE encode that keeps its graph (ComfyUI's per-image estimate of an encode,
    three times: forward kept, backward)."""
    _, channels, height, width = representation.latent_shape
    height, width = (side, side) if side else (height, width)
    needed = representation.memory_needed(batch) + model_call_bytes(model.patcher, [batch, channels, height, width])
    if representation.needs_vae and vae is not None:
        factor = vae.spacial_compression_encode()
        needed += 3 * batch * int(vae.memory_used_encode([1, 3, height * factor, width * factor], vae.vae_dtype))
    return needed


def check_step_memory(representation: NodeRepresentation, model: ComfyScoreModel, vae) -> None:
    """Refuse a run whose step cannot fit on the model's device, naming the batch size and the
    image size that would."""
    batch, _, height, width = representation.latent_shape
    scale = representation.pixels_per_latent
    check_memory(step_memory(representation, model, vae, batch),
                 f"an optimisation step of {batch} image(s) of {width}x{height} latents",
                 {"batch_size": (lambda images: step_memory(representation, model, vae, images), 1, batch, 1),
                  representation.size_input: (
                      lambda pixels: step_memory(representation, model, vae, batch, pixels // scale),
                      scale, max(height, width) * scale, scale)},
                 model.device)


class Optimizer(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NFSD_Optimizer",
            display_name="NFSD Optimizer",
            category=f"{CATEGORY}/optimization",
            description="Optimises a representation (a latent canvas or a NeRF) with score-distillation guidance, "
                        "showing previews as it goes. Deterministic for a given seed.",
            inputs=[
                Guidance.Input("guidance", tooltip="From NFSD Score Distillation Guidance."),
                Representation.Input("representation", tooltip="What to optimise: NFSD Latent Canvas or NFSD NeRF "
                                     "Representation."),
                io.Int.Input("steps", default=500, min=1, max=100000,
                             tooltip="Optimisation steps; each costs 2 (SDS, CSD), 2 to 3 (NFSD), 4 (DDS) or 4 to 6 "
                             "(NFSD-edit) model evaluations per image. A canvas needs hundreds, a NeRF thousands "
                             "(threestudio: 10000)."),
                io.Float.Input("learning_rate", default=OptimizerSettings.lr, min=0.0001, max=10.0, step=0.001,
                               tooltip="AdamW learning rate (betas 0.9/0.99, eps 1e-15, as in SDS-Bridge's 2D setup)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the timesteps and noise of every step: the same seed gives the same "
                             "result, and two rules under one seed see the same draws."),
                io.Int.Input("preview_every", default=10, min=0, max=10000,
                             tooltip="Show a preview on the node every N steps (0: progress only), drawn as for "
                             "KSampler (--preview-method taesd uses models/vae_approx; NFSD Demo Model: through its "
                             "VAE). NeRFs show their evaluation view from a camera that circles the object once over "
                             "the run."),
                io.String.Input("checkpoint_dir", default="", optional=True,
                                tooltip=f"Save the run's state in this folder inside ComfyUI's output folder (a "
                                f"relative path, e.g. {CHECKPOINT_EXAMPLE}), every {CHECKPOINT_EVERY} steps and when "
                                "interrupted; the same settings resume from it, also after a restart (other settings "
                                "are refused, naming what differs). A new or empty folder, or one NFSD made: NFSD "
                                "never writes into a folder holding other files. Empty: NeRF runs keep their state in "
                                "ComfyUI's temp folder (emptied when ComfyUI starts), so an interrupted NeRF resumes "
                                "when queued again with the same inputs (seeds 'fixed'); canvases are not saved."),
                io.Vae.Input("vae", optional=True,
                             tooltip="The checkpoint's VAE. Needed by RGB NeRFs, whose renders it encodes (a private "
                             "copy of its encoder carries the gradients); canvases and latent NeRFs ignore it."),
            ],
            outputs=[
                Representation.Output(display_name="representation", tooltip="The optimised representation."),
                io.Latent.Output(display_name="latent", tooltip="The optimised latents, for VAE Decode (a NeRF: its "
                                 "front view as the model sees it)."),
                io.String.Output(display_name="statistics", tooltip="Settings and per-step history as JSON."),
            ],
            hidden=[io.Hidden.unique_id, io.Hidden.prompt],
        )

    @classmethod
    def execute(cls, guidance, representation, steps, learning_rate, seed, preview_every,
                checkpoint_dir="", vae=None) -> io.NodeOutput:
        check_finite(cls, {"learning_rate": learning_rate})
        model = check_inputs(guidance, representation, vae)
        if cls.hidden.prompt:  # what would fail after the run fails now (guards.graph)
            check_numbers(cls.hidden.prompt)
            check_consumers(cls.hidden.prompt, cls.hidden.unique_id, representation.socket_type)
        check_step_memory(representation, model, vae)
        chosen = checkpoint_folder(checkpoint_dir)  # refused before the model loads
        run_guidance = guidance.with_seed(seed)
        latent_format = model.latent_format
        progress = comfy.utils.ProgressBar(steps, node_id=cls.hidden.unique_id)
        previewer = select_previewer(latent_format, model.device) if preview_every else None

        def on_step(record: StepRecord) -> None:
            progress.update_absolute(record.step + 1, steps)

        def on_preview(done: int, trained) -> None:
            image = representation.preview(trained, done, steps, previewer)
            if image is not None:
                progress.update_absolute(done, steps, ("JPEG", image, latent_preview.MAX_PREVIEW_RESOLUTION))

        def should_stop() -> bool:
            comfy.model_management.throw_exception_if_processing_interrupted()
            return False

        conditions = condition_names(guidance.prompts)
        settings = OptimizerSettings(lr=learning_rate)
        # What decides the result beyond nfsd_core's own settings: the model, the prompts, the VAE that encodes.
        extras = {"model": model_fingerprint(model.patcher), "prompts": fingerprint(conditions),
                  "vae": fingerprint(sampled_weights(vae.first_stage_model)) if representation.needs_vae else None}

        def run() -> RunResult:
            with autograd_enabled():
                trained = representation.build(latent_format, model.device, vae)
                identity = run_identity(trained, run_guidance, steps, settings, extras)
                directory, save_every = run_checkpoint(chosen, representation, identity)
                return optimize(trained, run_guidance, steps, settings, on_step=on_step, on_preview=on_preview,
                                preview_every=preview_every, should_stop=should_stop, checkpoint_dir=directory,
                                checkpoint_every=save_every, identity_extras=extras)

        result = model.session(conditions, representation.latent_shape, run, seed=seed)
        optimised = representation.with_result(result.representation, latent_format)
        statistics = json.dumps(json_ready(run_statistics(result, run_guidance)), allow_nan=False)
        return io.NodeOutput(optimised, optimised.latent(), statistics)
