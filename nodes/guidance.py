"""NFSD Score Distillation Guidance: MODEL + CONDITIONING + rule settings -> NFSD_GUIDANCE."""

from __future__ import annotations

from comfy_api.latest import io

from ..nfsd_core import (
    DEFAULT_NEGATIVE_PROMPT,
    DEFAULT_WEIGHTING,
    NFSD_THRESHOLD,
    RULES,
    WEIGHTINGS,
    Prompts,
    ScoreDistillation,
    TimestepSchedule,
    make_rule,
)
from ..nfsd_core.timesteps import SCHEDULE_KINDS

TIMESTEPS = TimestepSchedule()  # the core's defaults, shown by the widgets
from .backend import ComfyScoreModel
from .limits import check_finite
from .types import CATEGORY, Guidance

VIEW_KEY = "nfsd_view"  # the CONDITIONING option naming an entry's camera view (NFSD View Prompts)
RULE_NAMES = {"NFSD": "nfsd", "SDS": "sds", "CSD": "csd", "SDS with negative prompt": "sds_negative"}
RULE_DEFAULTS = ", ".join(f"{label} {RULES[key].default_scale:g}" for label, key in RULE_NAMES.items())


def encode_text(clip, text: str):
    """CONDITIONING for `text`, as CLIPTextEncode makes it."""
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def split_views(positive: list) -> list | dict[str, list]:
    """`positive` itself if no entry names a view, else {view: its entries + the untagged ones}."""
    views = [options[VIEW_KEY] for _, options in positive if VIEW_KEY in options]
    if not views:
        return positive
    shared = [entry for entry in positive if VIEW_KEY not in entry[1]]
    return {view: [entry for entry in positive if entry[1].get(VIEW_KEY) == view] + shared
            for view in dict.fromkeys(views)}


def prompt_conditioning(rule_label: str, rule, positive, negative, unconditional, clip) -> Prompts:
    """The Prompts `rule` reads (others are left out), encoding the empty and the default negative
    prompt with `clip` where they are not wired."""
    wanted = {  # input name: (needed, wired conditioning, text to encode, what it is)
        "unconditional": (rule.needs_unconditional, unconditional, "", "the empty prompt"),
        "negative": (rule.needs_negative_prompt, negative, DEFAULT_NEGATIVE_PROMPT, "a negative prompt"),
    }
    missing = [name for name, (needed, wired, _, _) in wanted.items() if needed and wired is None]
    if missing and clip is None:
        raise ValueError(
            f"the {rule_label} rule needs {' and '.join(wanted[name][3] for name in missing)}: wire "
            + " and ".join(f"'{name}' (a CLIPTextEncode of {wanted[name][2]!r})" for name in missing)
            + ", or wire 'clip' and the node encodes them for you"
        )
    resolved = {name: (wired if wired is not None else encode_text(clip, text)) if needed else None
                for name, (needed, wired, text, _) in wanted.items()}
    return Prompts(positive, resolved["unconditional"], resolved["negative"])


def optional_prompt_inputs() -> list[io.Input]:
    """The `negative`, `unconditional` and `clip` inputs of the nodes that take prompts."""
    return [
        io.Conditioning.Input("negative", optional=True,
                              tooltip="Negative prompt, used by NFSD (t >= nfsd_threshold) and by SDS with negative "
                              f"prompt. If not wired, 'clip' encodes the paper's default: {DEFAULT_NEGATIVE_PROMPT!r}."),
        io.Conditioning.Input("unconditional", optional=True,
                              tooltip="The empty prompt's conditioning (CLIPTextEncode of ''). If not wired, 'clip' "
                              "encodes it."),
        io.Clip.Input("clip", optional=True,
                      tooltip="Text encoder for the empty and default negative prompts when 'unconditional' or "
                      "'negative' are not wired."),
    ]


class ScoreDistillationGuidance(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NFSD_ScoreDistillationGuidance",
            display_name="NFSD Score Distillation Guidance",
            category=f"{CATEGORY}/guidance",
            description="Turns a diffusion MODEL and prompts into guidance for NFSD Optimizer: the score-distillation "
                        "rule (NFSD, SDS, CSD), its scale, the timestep schedule and the weighting.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model that scores the images: an eps- or v-prediction "
                               "SD 1.x, 2.x or SDXL checkpoint (flow-matching models are not supported)."),
                io.Conditioning.Input("positive", tooltip="The prompt to distil (CLIPTextEncode), or one prompt per "
                                      "camera view for a NeRF (NFSD View Prompts)."),
                io.Combo.Input("rule", options=list(RULE_NAMES), default="NFSD",
                               tooltip="NFSD: noise-free score distillation (Katzir et al. 2024). SDS: DreamFusion's "
                               "score distillation. CSD: classifier score distillation. SDS with negative prompt: SDS "
                               "with the negative prompt in place of the empty one."),
                io.Float.Input("scale", default=RULES["nfsd"].default_scale, min=0.0, max=1000.0, step=0.1,
                               round=0.01,
                               tooltip=f"Guidance scale s, like KSampler's cfg. Set it with the rule; the papers' "
                               f"values: {RULE_DEFAULTS}."),
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
                             tooltip="NFSD only: below this timestep the empty prompt's prediction is used alone; from "
                             "it on the negative prompt's prediction is subtracted (the paper uses 200)."),
                *optional_prompt_inputs(),
            ],
            outputs=[Guidance.Output(display_name="guidance", tooltip="Guidance for NFSD Optimizer.")],
        )

    @classmethod
    def execute(cls, model, positive, rule, scale, t_min, t_max, timestep_schedule, t_max_end, anneal_at, weighting,
                grad_clip, nfsd_threshold, negative=None, unconditional=None, clip=None) -> io.NodeOutput:
        check_finite(cls, {"scale": scale, "t_min": t_min, "t_max": t_max, "t_max_end": t_max_end,
                           "anneal_at": anneal_at, "grad_clip": grad_clip})
        score_model = ComfyScoreModel(model)
        guidance_rule = make_rule(RULE_NAMES[rule], nfsd_threshold)
        prompts = prompt_conditioning(rule, guidance_rule, split_views(positive), negative, unconditional, clip)
        timesteps = TimestepSchedule(t_min=t_min, t_max=t_max, kind=timestep_schedule,
                                     t_max_end=t_max_end if t_max_end < t_max else None, anneal_at=anneal_at)
        guidance = ScoreDistillation(score_model, prompts, guidance_rule, scale=scale,
                                     timesteps=timesteps, weighting=weighting, grad_clip=grad_clip or None)
        return io.NodeOutput(guidance)
