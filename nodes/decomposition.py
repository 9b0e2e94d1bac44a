"""NFSD Score Decomposition: what the model's noise predictions are made of (paper figures 2 to 4)."""

from __future__ import annotations

import re

from comfy_api.latest import io

from ..nfsd_core import (DECOMPOSITION_COMPONENTS as COMPONENTS, NFSD_THRESHOLD, check_text, decompose_score,
                         decomposition_image_bytes, decomposition_images, excerpt, make_rule)
from .adapters.codec import ComfyLatentCodec
from .adapters.conditioning import prompt_conditioning
from .adapters.score_model import ComfyScoreModel
from .guards.limits import check_memory, interrupt_progress, model_call_bytes, resident_bytes, validation
from .schema import CATEGORY, SEED_CONTROL, optional_prompt_inputs

MAX_TIMESTEPS = 100  # one model call each; a figure of more columns shows nothing new
MAX_TIMESTEPS_CHARS = 10_000  # room for the list of any length, to say how many values it has
DDPM_TIMESTEPS = 1000  # of every model the node takes (its schedule is checked again when it runs)
NFSD_ROWS = 3  # latent rows per image in a timestep's model call: the prompt, the empty and the negative prompt

DESCRIPTIONS = {
    "delta_C": "delta_C = e_c - e_u: the prompt's direction (shared by NFSD and SDS).",
    "delta_D": "delta_D = e_u (t < threshold) or e_u - e_n: NFSD's domain direction.",
    "noise_residual": "e_u - eps: the term SDS adds, mostly the noise it subtracts.",
    "delta_N": "noise_residual - delta_D: the noise NFSD leaves out.",
}


def parse_timesteps(text: str, num_timesteps: int = DDPM_TIMESTEPS) -> list[int]:
    """"200, 500, 800" -> [200, 500, 800], each in 0..num_timesteps-1 (refusals quote only an excerpt)."""
    check_text("timesteps", text, MAX_TIMESTEPS_CHARS)
    parts = [part.strip() for part in text.replace(";", ",").split(",") if part.strip()]
    wrong = next((part for part in parts if not re.fullmatch(r"[0-9]{1,6}", part)), None)
    if wrong is not None or not parts:
        raise ValueError(f"timesteps must be whole numbers separated by commas, e.g. '200, 500, 800'; "
                         f"{excerpt(wrong if wrong is not None else text)} is not one")
    if len(parts) > MAX_TIMESTEPS:
        raise ValueError(f"timesteps lists {len(parts)} values; give at most {MAX_TIMESTEPS} (one model call and "
                         "one image per output each)")
    timesteps = [int(part) for part in parts]
    beyond = next((t for t in timesteps if t >= num_timesteps), None)
    if beyond is not None:
        raise ValueError(f"timesteps must list values in 0..{num_timesteps - 1}; got {beyond}")
    return timesteps


def check_latent(samples, score_model: ComfyScoreModel, vae) -> None:
    """Refuse a LATENT that the MODEL or the VAE cannot take, before any model call."""
    channels = score_model.latent_format.latent_channels
    if samples.dim() != 4 or samples.shape[1] != channels:
        raise ValueError(f"latent has shape {tuple(samples.shape)} but the MODEL works on image latents of "
                         f"{channels} channels [batch, {channels}, height, width]: encode the image with this "
                         "checkpoint's VAE (VAE Encode) or make the latent for this model")
    if vae.latent_channels != channels:
        raise ValueError(f"the VAE makes {vae.latent_channels}-channel latents but the MODEL works on {channels}: "
                         "wire the VAE of the same checkpoint as the MODEL")


def decomposition_memory(score_model: ComfyScoreModel, vae, shape, timesteps: int) -> int:
    """One timestep's model call (three rows per image: the prompt, the empty and the negative
    prompt), every output image (RGB at the VAE's scale) and the decode of one of them (ComfyUI's
    estimate: its decode batches more images only where they fit); on a GPU next to the model's weights."""
    batch, channels, height, width = shape
    pixels = height * width * vae.spacial_compression_decode() ** 2
    call = model_call_bytes(score_model.patcher, [NFSD_ROWS * batch, channels, height, width])
    decode = int(vae.memory_used_decode([1, channels, height, width], vae.vae_dtype))
    return (resident_bytes(score_model.device, score_model.patcher) + call + decode
            + decomposition_image_bytes(timesteps, batch, pixels))


class ScoreDecomposition(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NFSD_ScoreDecomposition",
            display_name="NFSD Score Decomposition",
            category=f"{CATEGORY}/analysis",
            description="Noises a latent at several timesteps and shows the parts of the model's score: the "
                        "condition term delta_C, NFSD's domain term delta_D and SDS's noise residual (NFSD paper, "
                        "figures 2 to 4). Each output holds one image per timestep.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model (eps or v-prediction SD 1.x, 2.x or SDXL)."),
                io.Conditioning.Input("positive", tooltip="The prompt (CLIPTextEncode)."),
                io.Latent.Input("latent", tooltip="The image to analyse, as a LATENT (e.g. VAE Encode or a sampler)."),
                io.Vae.Input("vae", tooltip="Decodes the maps to images."),
                io.String.Input("timesteps", default="200, 500, 800",
                                tooltip="Timesteps (0..999, comma separated, at most 100) to noise the latent at: one "
                                "image per timestep in every output."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip=f"Seed of the noise; the same noise is used at every timestep. {SEED_CONTROL}"),
                io.Int.Input("nfsd_threshold", default=NFSD_THRESHOLD, min=0, max=1000,
                             tooltip="Below this timestep delta_D is the empty prompt's prediction alone."),
                io.Boolean.Input("normalize", default=True,
                                 tooltip="Scale every map to unit standard deviation before decoding, so small "
                                 "components show their structure."),
                *optional_prompt_inputs(),
            ],
            outputs=[io.Image.Output(display_name=name, tooltip=DESCRIPTIONS[name]) for name in COMPONENTS],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, timesteps=None) -> bool | str:
        """Refuses timesteps that do not parse when the graph is queued (None: linked, checked when it runs)."""
        return timesteps is None or validation(lambda: parse_timesteps(timesteps))

    @classmethod
    def execute(cls, model, positive, latent, vae, timesteps, seed, nfsd_threshold, normalize, negative=None,
                unconditional=None, clip=None) -> io.NodeOutput:
        score_model = ComfyScoreModel(model)
        steps = parse_timesteps(timesteps, score_model.schedule.num_timesteps)
        vae.throw_exception_if_invalid()
        samples = latent["samples"]
        check_latent(samples, score_model, vae)
        check_memory(decomposition_memory(score_model, vae, samples.shape, len(steps)),
                     f"a decomposition of a {tuple(samples.shape)} latent at {len(steps)} timesteps",
                     {"the number of timesteps": (lambda n: decomposition_memory(score_model, vae, samples.shape, n),
                                                  1, len(steps), 1)}, score_model.device)
        rule = make_rule("nfsd", nfsd_threshold)
        prompts = prompt_conditioning("NFSD", rule, positive, negative, unconditional, clip)
        codec = ComfyLatentCodec(vae, score_model.latent_format)
        latents = score_model.latent_format.process_in(samples.float()).to(score_model.device)
        decomposition = decompose_score(score_model, prompts, latents, steps, seed=seed, nfsd_threshold=nfsd_threshold,
                                        progress=interrupt_progress(len(steps), cls.hidden.unique_id))
        images = decomposition_images(decomposition, codec.decode, normalize=normalize)
        return io.NodeOutput(*(images[name].flatten(0, 1).movedim(1, -1).cpu() for name in COMPONENTS))
