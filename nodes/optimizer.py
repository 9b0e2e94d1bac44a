"""NFSD Optimizer: runs nfsd_core's optimisation loop on a representation, inside ComfyUI.

The loop runs in one ComfyScoreModel session (the model loaded and the conditioning processed
once, as for a sampler), with autograd enabled only around it. Progress and previews go to
ComfyUI's progress bar; an interrupt stops the run before the next step, after the core has
saved its state when a checkpoint directory is set, so queueing the prompt again resumes it.

A checkpoint_dir must stay inside ComfyUI's output folder and be a name any file system takes
(guards.paths; checked when the graph is queued), and be NFSD's own folder that no other run holds
(nfsd_core's checkpoint); that, and the folder's writability, is checked before the model loads,
and the run holds the folder's lock from its first step to its last save. States are signed with
this server's key (`signing_key`), kept in ComfyUI's user folder, out of reach of the uploads that
reach output/ and temp/. Representations that ask for it (NeRFs) checkpoint without a directory
too: into ComfyUI's temp folder, named by the digest of the run's identity (nfsd_core's
`run_identity`: every setting, the starting state, the model, prompts and VAE). The same inputs
always give the same result, so a run found there is the run being asked for: queued again after
an interrupt it resumes.

Temp state exists for that resume alone, so it stays bounded: a run that finishes removes its
folder once its result is the node's output (ComfyUI caches that output, and an unchanged graph
queued again reuses it), and a run that starts removes all but the TEMP_RUNS_KEPT - 1 most recently
saved other folders, never one another run holds. A result that must outlive ComfyUI's cache
(another workflow queued in between, a restart) needs a checkpoint_dir, which keeps a finished run
and restores it without training. ComfyUI also empties the temp folder when it starts.
"""

from __future__ import annotations

import json
import os
from typing import Mapping

import comfy.model_management
import comfy.utils
import folder_paths
import latent_preview
import torch
from comfy_api.latest import io

from ..nfsd_core import (CheckpointError, OptimizerSettings, RunResult, ScoreDistillation, StepMemory, StepRecord,
                         checkpoint_key, claim_checkpoint_dir, excerpt, history_columns, identity_digest, json_ready,
                         keep_newest_checkpoints, optimize, remove_checkpoint, run_curves, run_identity)
from .adapters.autograd import autograd_enabled
from .adapters.codec import encode_memory
from .adapters.fingerprint import fingerprint, model_fingerprint, sampled_weights
from .adapters.preview import select_previewer
from .adapters.score_model import ComfyScoreModel, condition_names
from .guards.graph import check_consumers, check_downstream, check_numbers
from .guards.limits import check_finite, check_memory, model_call_bytes, resident_bytes
from .guards.paths import confined, refusal
from .schema import CATEGORY, SEED_CONTROL
from .sockets import Guidance, Representation
from .sockets.canvas import CanvasState
from .sockets.representation import NodeRepresentation

CHECKPOINT_EVERY = 100  # steps between saves into a checkpoint directory the user chose
CHECKPOINT_EXAMPLE = "NFSD/checkpoints/my_run"  # a checkpoint_dir that works, for tooltips and refusals
TEMP_RUNS_KEPT = 3  # runs whose state the temp folder holds at most: the cancelled runs one may queue again


def checkpoint_dir_refusal(checkpoint_dir: str) -> str | None:
    """Why `checkpoint_dir` cannot be a checkpoint folder inside ComfyUI's output folder (guards.paths), or None."""
    if not checkpoint_dir.strip():
        return None
    return refusal("checkpoint_dir", checkpoint_dir.strip(), folder_paths.get_output_directory(), "output",
                   CHECKPOINT_EXAMPLE)


def checkpoint_folder(checkpoint_dir: str) -> str | None:
    """None for "", else the folder inside ComfyUI's output folder, claimed for NFSD (refused if it
    leads outside, holds files NFSD did not write, lies inside or around another run's, another run
    holds it, or it cannot be written to)."""
    if not checkpoint_dir.strip():
        return None
    folder = confined("checkpoint_dir", checkpoint_dir.strip(), folder_paths.get_output_directory(), "output",
                      CHECKPOINT_EXAMPLE)
    try:
        claim_checkpoint_dir(folder)
    except CheckpointError as error:
        raise CheckpointError(f"checkpoint_dir {checkpoint_dir.strip()!r}: {folders_named(str(error))}") from None
    return folder


def folders_named(message: str) -> str:
    """`message` with ComfyUI's output and temp folders called 'output' and 'temp', not by their paths on
    the server (a shared server's user need not know them)."""
    for name, folder in (("output", folder_paths.get_output_directory()), ("temp", folder_paths.get_temp_directory())):
        for path in sorted({os.path.realpath(folder), os.path.abspath(folder)}, key=len, reverse=True):
            message = message.replace(path + os.sep, f"{name}/").replace(path, name)
    return message


def same_folder(first: str, second: str) -> bool:
    """Whether two checkpoint_dir values name one folder inside ComfyUI's output folder."""
    output = os.path.realpath(folder_paths.get_output_directory())
    first, second = (os.path.realpath(os.path.join(output, value.strip())) for value in (first, second))
    return first == second


def signing_key() -> bytes:
    """The key that signs this server's checkpoints, in ComfyUI's system user folder for the pack
    (user/__nfsd, where newer ComfyUI's get_system_user_directory puts it): /upload/image writes only
    into input/, output/ and temp/, and the /userdata routes only into a user's own folder, whose
    name is 'default' or ends in a UUID, never '__nfsd'."""
    system_folder = getattr(folder_paths, "get_system_user_directory", None)
    if system_folder is not None:
        return checkpoint_key(system_folder("nfsd"))
    return checkpoint_key(os.path.join(folder_paths.get_user_directory(), "__nfsd"))


def run_checkpoint(chosen: str | None, representation: NodeRepresentation, identity: dict) -> tuple[str | None, int]:
    """(checkpoint folder, save every N steps) of a run: the user's folder, saved every
    CHECKPOINT_EVERY steps; else for representations that checkpoint by default a folder in
    ComfyUI's temp folder named by the run's `identity`, saved when the run stops (the temp folder
    does not outlive ComfyUI, so saves in between would protect nothing); else none."""
    if chosen is not None:
        return chosen, CHECKPOINT_EVERY
    if representation.checkpoint_by_default:
        return temp_run_folder(identity), 0
    return None, 0


def temp_run_folder(identity: dict) -> str:
    """The temp folder of the run `identity`, after removing all but the TEMP_RUNS_KEPT - 1 most recently
    saved folders of other runs beside it."""
    parent = os.path.join(folder_paths.get_temp_directory(), "nfsd")
    folder = os.path.join(parent, identity_digest(identity))
    keep_newest_checkpoints(parent, TEMP_RUNS_KEPT - 1, folder)
    return folder


def run_statistics(result: RunResult, guidance: ScoreDistillation, representation: NodeRepresentation) -> dict:
    """The run's settings and its per-step history as columns (strict JSON once `json_ready`:
    a NaN loss becomes null); `latents` is the shape of the latents the model saw, each
    `pixels_per_latent` pixels wide; `nonfinite_gradient` counts the gradient entries zeroed per step."""
    history = result.history
    return {
        "rule": guidance.rule.name,
        "scale": guidance.scale,
        "weighting": guidance.weighting,
        "seed": guidance.noise_stream.seed,
        "latents": list(representation.latent_shape),
        "pixels_per_latent": representation.pixels_per_latent,
        "steps_done": result.steps_done,
        "evaluations": sum(r.evaluations for r in history),
        "seconds": round(sum(r.seconds for r in history), 3),
        "history": history_columns(history),
    }


def curves_image(result: RunResult, guidance: ScoreDistillation) -> torch.Tensor:
    """The run's curves (nfsd_core's run_curves) as a ComfyUI IMAGE [1, H, W, 3] in [0, 1]."""
    title = (f"{guidance.rule.name.upper()}, scale {guidance.scale:g}, seed {guidance.noise_stream.seed}: "
             f"{result.steps_done} steps")
    pixels = run_curves(history_columns(result.history), title)
    return torch.from_numpy(pixels).float().div(255.0).unsqueeze(0)


def check_inputs(guidance, representation, vae) -> ComfyScoreModel:
    if not isinstance(guidance, ScoreDistillation) or not isinstance(guidance.model, ComfyScoreModel):
        raise ValueError("guidance must come from NFSD Score Distillation Guidance")
    if not isinstance(representation, NodeRepresentation):
        raise ValueError("representation must come from an NFSD representation node (e.g. NFSD Latent Canvas)")
    if representation.needs_vae and vae is None:
        raise ValueError("this representation renders pixels (an RGB NeRF or mesh texture), which reach the model "
                         "only through the VAE: wire the checkpoint's VAE into NFSD Optimizer's 'vae' input, or set "
                         "its colour to 'latent'")
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


def prompted_views(guidance: ScoreDistillation, representation: NodeRepresentation) -> tuple[str, ...] | None:
    """The views whose prompts the run uses: those the representation's cameras get (None: one prompt
    for every camera). Refuses a view the cameras get that has no prompt."""
    positive = guidance.prompts.positive
    if not isinstance(positive, Mapping):
        return None
    views = representation.camera_views
    missing = [view for view in views if view not in positive]
    if missing and representation.views_name_elevation:
        raise ValueError(f"the {representation.noun}'s training cameras name their elevation in their views "
                         f"({missing[0]!r}: cameras.view_elevation_step in advanced), which NFSD View Prompts does "
                         "not encode: set view_elevation_step to 0 (it is for priors trained with such captions, "
                         "through python -m nfsd_core)")
    if missing:
        raise ValueError(f"the {representation.noun}'s training cameras get the view(s) {', '.join(missing)}, but the "
                         f"guidance's positive has no prompt for them (it has {', '.join(positive)}). NFSD View "
                         "Prompts encodes 'overhead' only with its overhead_view on: turn it on, or keep the cameras' "
                         f"highest elevation ({representation.elevation_setting}) at 60 degrees or below")
    return views


def model_rows(guidance: ScoreDistillation) -> int:
    """Latent rows per image in one model call: the prompt, and the empty and negative prompts the rule reads."""
    rule = guidance.rule
    return 1 + int(rule.needs_unconditional) + int(rule.needs_negative_prompt)


def step_memory(representation: NodeRepresentation, model: ComfyScoreModel, vae, batch: int, rows: int,
                side: int | None = None) -> StepMemory:
    """One optimisation step with `batch` images (of side x side latents if given), each `rows`
    latent rows in the model call: the representation's own memory, the model's activations
    (guards.limits.model_call_bytes) and, for RGB NeRFs, the VAE encode that keeps its graph
    (adapters.codec.encode_memory)."""
    _, channels, height, width = representation.latent_shape
    height, width = (side, side) if side else (height, width)
    denoiser = model_call_bytes(model.patcher, [batch * rows, channels, height, width])
    encode = (0, 0, 0)
    if representation.needs_vae and vae is not None:
        factor = vae.spacial_compression_encode()
        encode = encode_memory(vae, batch, height * factor, width * factor)
    return representation.step_memory(batch, denoiser, encode)


def check_step_memory(representation: NodeRepresentation, guidance: ScoreDistillation, vae) -> None:
    """Refuse a run whose step cannot fit on the model's device (on a GPU: next to the model's
    weights), naming the batch size and the image size that would."""
    model, rows = guidance.model, model_rows(guidance)
    batch, _, height, width = representation.latent_shape
    scale = representation.pixels_per_latent
    resident = resident_bytes(model.device, model.patcher)

    def needed(images: int, side: int | None = None) -> int:
        return resident + step_memory(representation, model, vae, images, rows, side).total

    check_memory(needed(batch), f"an optimisation step of {batch} image(s) of {width}x{height} latents",
                 {"batch_size": (needed, 1, batch, 1),
                  representation.size_input: (lambda pixels: needed(batch, pixels // scale), scale,
                                              max(height, width) * scale, scale)},
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
                Representation.Input("representation", tooltip="What to optimise: NFSD Latent Canvas, NFSD NeRF "
                                     "Representation or NFSD Mesh Texture."),
                io.Int.Input("steps", default=500, min=1, max=100000,
                             tooltip="Optimisation steps; each costs 2 (SDS, CSD), 2 to 3 (NFSD), 4 (DDS) or 4 to 6 "
                             "(NFSD-edit) model evaluations per image. A canvas needs hundreds, a NeRF thousands "
                             "(threestudio: 10000)."),
                io.Float.Input("learning_rate", default=OptimizerSettings.lr, min=0.0001, max=10.0, step=0.001,
                               tooltip="AdamW learning rate (betas 0.9/0.99, eps 1e-15, as in SDS-Bridge's 2D setup)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the timesteps and noise of every step: the same seed gives the same "
                             f"result, and two rules under one seed see the same draws. {SEED_CONTROL}"),
                io.Int.Input("preview_every", default=10, min=0, max=10000,
                             tooltip="Show a preview on the node every N steps (0: progress only), drawn as for "
                             "KSampler (--preview-method taesd uses models/vae_approx; NFSD Demo Model: through its "
                             "VAE). NeRFs show their evaluation view from a camera that circles the object once over "
                             "the run."),
                io.String.Input("checkpoint_dir", default="", optional=True,
                                tooltip=f"Save the run's state in this folder inside ComfyUI's output folder (a "
                                f"relative path, e.g. {CHECKPOINT_EXAMPLE}), every {CHECKPOINT_EVERY} steps and when "
                                "interrupted; the same settings resume from it, also after a restart (other settings "
                                "are refused, naming what differs). A new or empty folder, or one NFSD made, that no "
                                "other run is using: NFSD never writes into a folder holding other files. Empty: a "
                                f"cancelled NeRF keeps its state in ComfyUI's temp folder (the newest {TEMP_RUNS_KEPT} "
                                "runs; removed when the run finishes, and when ComfyUI starts), so it resumes when "
                                "queued again with the same inputs; canvases are not saved."),
                io.Vae.Input("vae", optional=True,
                             tooltip="The checkpoint's VAE. Needed by RGB NeRFs, whose renders it encodes (a private "
                             "copy of its encoder carries the gradients); canvases and latent NeRFs ignore it."),
            ],
            outputs=[
                Representation.Output(display_name="representation", tooltip="The optimised representation."),
                io.Latent.Output(display_name="latent", tooltip="The optimised latents, for VAE Decode (a NeRF: its "
                                 "front view as the model sees it)."),
                io.String.Output(display_name="statistics", tooltip="Settings and per-step history as JSON."),
                io.Image.Output(display_name="curves", tooltip="The run at a glance, for Preview Image or Save "
                                "Image: loss, gradient norm, the latent RMS (canvas), mean opacity (NeRF) or surface "
                                "colour spread (mesh texture), and the timesteps drawn, against the step."),
            ],
            hidden=[io.Hidden.unique_id, io.Hidden.prompt],
        )

    @classmethod
    def validate_inputs(cls, checkpoint_dir=None) -> bool | str:
        """Refuses, when the graph is queued, a checkpoint_dir that leads outside the output folder or
        names what the file system would refuse (None: linked, checked when it runs)."""
        return checkpoint_dir is None or checkpoint_dir_refusal(checkpoint_dir) or True

    @classmethod
    def check_before_optimizer(cls, inputs: dict, upstream) -> None:
        """A further Optimizer's checkpoint folder, checked by the first before its first step (guards.graph):
        one it can claim, and not the first's own (the first's finished state would refuse the second run)."""
        chosen = inputs.get("checkpoint_dir")
        if not isinstance(chosen, str) or checkpoint_folder(chosen) is None:
            return
        first = upstream.prompt[upstream.optimizer_id]["inputs"].get("checkpoint_dir")
        if isinstance(first, str) and first.strip() and same_folder(first, chosen):
            raise ValueError(f"checkpoint_dir {excerpt(chosen.strip())} is the checkpoint folder of NFSD Optimizer "
                             f"(node {upstream.optimizer_id}) too, whose run it holds: give each Optimizer a folder "
                             f"of its own, e.g. {CHECKPOINT_EXAMPLE!r}")

    @classmethod
    def execute(cls, guidance, representation, steps, learning_rate, seed, preview_every,
                checkpoint_dir="", vae=None) -> io.NodeOutput:
        check_finite(cls, {"learning_rate": learning_rate})
        model = check_inputs(guidance, representation, vae)
        representation = representation.for_model(model, vae)  # e.g. a NeRF's guidance_size 0: the model's own
        views = prompted_views(guidance, representation)
        if cls.hidden.prompt:  # what would fail after the run fails now (guards.graph)
            check_numbers(cls.hidden.prompt)
            check_consumers(cls.hidden.prompt, cls.hidden.unique_id, representation.socket_type)
            check_downstream(cls.hidden.prompt, cls.hidden.unique_id, representation, vae)
        check_step_memory(representation, guidance, vae)
        chosen = checkpoint_folder(checkpoint_dir)  # refused before the model loads
        key = signing_key()
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

        conditions = condition_names(guidance.prompts, views)
        settings = OptimizerSettings(lr=learning_rate)
        # What decides the result beyond nfsd_core's own settings: the model, the prompts, the VAE that encodes.
        extras = {"model": model_fingerprint(model.patcher), "prompts": fingerprint(conditions),
                  "vae": fingerprint(sampled_weights(vae.first_stage_model)) if representation.needs_vae else None}

        directory = None

        def run() -> RunResult:
            nonlocal directory
            with autograd_enabled():
                trained = representation.build(latent_format, model.device, vae)
                identity = run_identity(trained, run_guidance, steps, settings, extras)
                directory, save_every = run_checkpoint(chosen, representation, identity)
                return optimize(trained, run_guidance, steps, settings, on_step=on_step, on_preview=on_preview,
                                preview_every=preview_every, should_stop=should_stop, checkpoint_dir=directory,
                                checkpoint_every=save_every, identity_extras=extras, signing_key=key)

        try:
            result = model.session(conditions, representation.latent_shape, run, seed=seed)
        except CheckpointError as error:  # the folder in use, a state of another run, damaged or unsigned
            raise CheckpointError(folders_named(str(error))) from None
        optimised = representation.with_result(result.representation, latent_format)
        if directory is not None and chosen is None and result.steps_done == steps:
            remove_checkpoint(directory)  # finished: its result is this node's output now, which ComfyUI caches
        statistics = json.dumps(json_ready(run_statistics(result, run_guidance, representation)), allow_nan=False)
        return io.NodeOutput(optimised, optimised.latent(), statistics, curves_image(result, run_guidance))
