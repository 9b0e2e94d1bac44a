"""NFSD Score Distillation Guidance: MODEL + CONDITIONING + rule settings -> NFSD_GUIDANCE.

The edit rules (DDS, NFSD-edit) also take the image to edit as a LATENT (`source`, where the
canvas starts) and what it shows (`source_prompt`, or `source_text` with `clip`); a MASK confines
any rule's change to a region of that image.
"""

from __future__ import annotations

from dataclasses import replace

from comfy_api.latest import io

from ..nfsd_core import (
    DEFAULT_WEIGHTING,
    NFSD_THRESHOLD,
    RULES,
    SCHEDULE_KINDS,
    WEIGHTINGS,
    ScoreDistillation,
    TimestepSchedule,
    check_text,
    latent_mask,
    make_rule,
)
from .adapters.conditioning import prompt_conditioning, source_conditioning, split_views
from .adapters.score_model import ComfyScoreModel
from .guards.limits import check_finite
from .schema import CATEGORY, MAX_TEXT_CHARS, optional_prompt_inputs
from .sockets import Guidance

TIMESTEPS = TimestepSchedule()  # the core's defaults, shown by the widgets

RULE_NAMES = {"NFSD": "nfsd", "SDS": "sds", "CSD": "csd", "SDS with negative prompt": "sds_negative",
              "DDS (edit)": "dds", "NFSD-edit (edit)": "nfsd_edit"}
RULE_DEFAULTS = ", ".join(f"{label} {RULES[key].default_scale:g}" for label, key in RULE_NAMES.items())
RULES_OWN_SCALE = 0.0  # the scale widget's value that means "the chosen rule's own default_scale"


def chosen_scale(scale: float) -> float | None:
    """The scale the user set, or None (the rule's own, see ScoreDistillation) for RULES_OWN_SCALE."""
    return None if scale == RULES_OWN_SCALE else scale


def source_latents(source: dict | None, latent_format, needed_by: str):
    """The edited image's LATENT (VAE units) in the model's latent space, as the canvas takes it."""
    if source is None:
        raise ValueError(f"{needed_by}: wire the image's LATENT (VAE Encode of it) into 'source', and the same LATENT "
                         "into NFSD Latent Canvas's initial_latent, where the edit starts")
    samples = source["samples"]
    if samples.dim() != 4:
        raise ValueError(f"source must be an image LATENT [batch, channels, height, width], got shape "
                         f"{tuple(samples.shape)}")
    if samples.shape[1] != latent_format.latent_channels:
        raise ValueError(f"the source LATENT has {samples.shape[1]} channels but the MODEL works on "
                         f"{latent_format.latent_channels}: encode the image with this checkpoint's VAE")
    return latent_format.process_in(samples.float().cpu().clone())


class ScoreDistillationGuidance(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NFSD_ScoreDistillationGuidance",
            display_name="NFSD Score Distillation Guidance",
            category=f"{CATEGORY}/guidance",
            description="Turns a diffusion MODEL and prompts into guidance for NFSD Optimizer: the score-distillation "
                        "rule (NFSD, SDS, CSD; DDS and NFSD-edit to edit an image), its scale, the timestep schedule "
                        "and the weighting.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model that scores the images: an eps- or v-prediction "
                               "SD 1.x, 2.x or SDXL checkpoint (flow-matching models are not supported)."),
                io.Conditioning.Input("positive", tooltip="The prompt to distil (CLIPTextEncode), or one prompt per "
                                      "camera view for a NeRF (NFSD View Prompts)."),
                io.Combo.Input("rule", options=list(RULE_NAMES), default="NFSD",
                               tooltip="NFSD: noise-free score distillation (Katzir et al. 2024). SDS: DreamFusion's "
                               "score distillation. CSD: classifier score distillation. SDS with negative prompt: SDS "
                               "with the negative prompt in place of the empty one. DDS (edit): Delta Denoising Score "
                               "(Hertz et al. 2023) edits the image wired into 'source' from 'source_prompt' to "
                               "'positive'. NFSD-edit (edit): DDS in NFSD's form (no noise term; the negative prompt "
                               "from nfsd_threshold on)."),
                io.Float.Input("scale", default=RULES_OWN_SCALE, min=0.0, max=1000.0, step=0.1, round=0.01,
                               tooltip=f"Guidance scale s, like KSampler's cfg. 0 (the default): the chosen rule's own "
                               f"scale, the papers' values: {RULE_DEFAULTS}. Any other value is used as set."),
                io.Float.Input("t_min", default=TIMESTEPS.t_min, min=0.0, max=1.0, step=0.01,
                               tooltip="Smallest timestep, as a fraction of the diffusion length (0.02 = t 20 of "
                               "1000)."),
                io.Float.Input("t_max", default=TIMESTEPS.t_max, min=0.0, max=1.0, step=0.01,
                               tooltip="Largest timestep, as a fraction of the diffusion length."),
                io.Combo.Input("timestep_schedule", options=list(SCHEDULE_KINDS), default=TIMESTEPS.kind,
                               tooltip="uniform: random t in [t_min, t_max] each step. sqrt_anneal: t falls from t_max "
                               "to t_min as sqrt(progress) (HiFA). decreasing: t falls linearly."),
                io.Float.Input("t_max_end", default=TIMESTEPS.t_max, min=0.0, max=1.0, step=0.01,
                               tooltip="Max-t annealing: from anneal_at of the run on, t_max drops to this value "
                               "(ProlificDreamer uses 0.5). At or above t_max (the default): no annealing."),
                io.Float.Input("anneal_at", default=TIMESTEPS.anneal_at, min=0.0, max=1.0, step=0.05,
                               tooltip="Fraction of the run after which t_max_end applies."),
                io.Combo.Input("weighting", options=list(WEIGHTINGS), default=DEFAULT_WEIGHTING,
                               tooltip="w(t): sds = 1 - alpha_bar_t, uniform = 1, fantasia3d = sqrt(alpha_bar_t) "
                               "(1 - alpha_bar_t)."),
                io.Float.Input("grad_clip", default=0.0, min=0.0, max=100.0, step=0.1,
                               tooltip="Clamp every gradient entry to +-grad_clip. 0 turns clipping off."),
                io.Int.Input("nfsd_threshold", default=NFSD_THRESHOLD, min=0, max=1000,
                             tooltip="NFSD and NFSD-edit only: below this timestep the empty prompt's prediction is "
                             "used alone; from it on the negative prompt's prediction is subtracted (the paper uses "
                             "200)."),
                *optional_prompt_inputs(),
                io.Latent.Input("source", optional=True,
                                tooltip="Edit rules: the image to edit, as a LATENT (VAE Encode); wire the same LATENT "
                                "into NFSD Latent Canvas's initial_latent, where the edit starts. Other rules read it "
                                "only to size a 'mask'."),
                io.Conditioning.Input("source_prompt", optional=True,
                                      tooltip="Edit rules: what the source image shows (CLIPTextEncode, e.g. 'a red "
                                      "car'); 'positive' says what it should show ('a blue car')."),
                io.String.Input("source_text", optional=True, force_input=True,
                                tooltip="Edit rules: the source prompt as text, encoded with 'clip' (instead of "
                                "'source_prompt')."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Where the image may change (1) and where it may not (0), on the source image "
                              "(e.g. Load Image's mask, painted in the mask editor); needs 'source'. A latent changes "
                              "where any pixel it covers may; latents outside never change, so pixels outside change "
                              "only near the mask's edge, where the VAE decoder mixes neighbouring latents."),
            ],
            outputs=[Guidance.Output(display_name="guidance", tooltip="Guidance for NFSD Optimizer.")],
        )

    @classmethod
    def execute(cls, model, positive, rule, scale, t_min, t_max, timestep_schedule, t_max_end, anneal_at, weighting,
                grad_clip, nfsd_threshold, negative=None, unconditional=None, clip=None, source=None,
                source_prompt=None, source_text=None, mask=None) -> io.NodeOutput:
        check_finite(cls, {"scale": scale, "t_min": t_min, "t_max": t_max, "t_max_end": t_max_end,
                           "anneal_at": anneal_at, "grad_clip": grad_clip})
        if source_text is not None:  # linked text, so first seen here: refused before any encode
            check_text("source_text", source_text, MAX_TEXT_CHARS)
        score_model = ComfyScoreModel(model)
        guidance_rule = make_rule(RULE_NAMES[rule], nfsd_threshold)
        prompts = prompt_conditioning(rule, guidance_rule, split_views(positive), negative, unconditional, clip)
        image = None
        if guidance_rule.edits or mask is not None:
            needed_by = f"the {rule} rule edits an image" if guidance_rule.edits else "'mask' is painted on an image"
            image = source_latents(source, score_model.latent_format, needed_by)
        if guidance_rule.edits:
            prompts = replace(prompts, source=source_conditioning(rule, source_prompt, source_text, clip))
        timesteps = TimestepSchedule(t_min=t_min, t_max=t_max, kind=timestep_schedule,
                                     t_max_end=t_max_end if t_max_end < t_max else None, anneal_at=anneal_at)
        guidance = ScoreDistillation(score_model, prompts, guidance_rule, scale=chosen_scale(scale),
                                     timesteps=timesteps, weighting=weighting, grad_clip=grad_clip or None,
                                     source_latents=image if guidance_rule.edits else None,
                                     mask=None if mask is None else latent_mask(mask, *image.shape[-2:]))
        return io.NodeOutput(guidance)
