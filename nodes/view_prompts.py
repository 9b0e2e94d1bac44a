"""NFSD View Prompts: one prompt per camera view (front, side, back; overhead on request) on one CONDITIONING wire.

DreamFusion and threestudio append the view to the prompt ("<prompt>, back view") so the model
does not paint a face on every side of the object. The node encodes each variant with the CLIP
and tags its CONDITIONING entries with the view under VIEW_KEY; NFSD Score Distillation Guidance
splits a tagged positive back into one CONDITIONING per view (`guidance.split_views`). Conditioning nodes
copy the entries' options, so area, ControlNet and combine nodes keep working on the tagged wire;
untagged entries (e.g. combined in afterwards) apply to every view. Nodes that know nothing of
views (KSampler) see the variants as combined prompts.

Cameras are named "overhead" only above 60 degrees of elevation, which NFSD NeRF
Representation's default cameras (up to 45) never reach, so that variant is encoded only when
asked for; NFSD Optimizer checks, before its first step, that every view its cameras get has one.
"""

from __future__ import annotations

from comfy_api.latest import io

from ..nfsd_core import VIEW_SUFFIXES, check_text
from .adapters.conditioning import VIEW_KEY, encode_text
from .guards.limits import validation
from .schema import CATEGORY, MAX_TEXT_CHARS

OVERHEAD = "overhead"


def view_conditioning(clip, text: str, overhead: bool = False) -> list:
    """CONDITIONING with the entries of `text, <view> view` for every view (the overhead one if
    `overhead`), each tagged with its view."""
    tagged = []
    for view, suffix in VIEW_SUFFIXES.items():
        if view != OVERHEAD or overhead:
            tagged += [[cond, {**options, VIEW_KEY: view}] for cond, options in encode_text(clip, f"{text}, {suffix}")]
    return tagged


class ViewPrompts(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        views = ", ".join(f"'<text>, {suffix}'" for view, suffix in VIEW_SUFFIXES.items() if view != OVERHEAD)
        return io.Schema(
            node_id="NFSD_ViewPrompts",
            display_name="NFSD View Prompts",
            category=f"{CATEGORY}/guidance",
            description="View-dependent prompting for NeRFs: encodes the prompt once per camera view "
                        f"({views}, and '<text>, {VIEW_SUFFIXES[OVERHEAD]}' with overhead_view on) on one "
                        "CONDITIONING. Wire it into NFSD Score Distillation Guidance's positive in place of CLIP "
                        "Text Encode; every training camera then sees the variant for its view.",
            inputs=[
                io.Clip.Input("clip", tooltip="The text encoder of the checkpoint."),
                io.String.Input("text", multiline=True, dynamic_prompts=True,
                                tooltip="The prompt, without a view: the node appends ', front view', ', side view' "
                                "or ', back view' (front and back: within 45 degrees of them). At most "
                                f"{MAX_TEXT_CHARS:,} characters."),
                io.Boolean.Input("overhead_view", default=False, optional=True,
                                 tooltip="Also encode ', overhead view', the prompt of cameras above 60 degrees of "
                                 "elevation. Turn it on when NFSD NeRF Representation's elevation_max is above 60; "
                                 "its default cameras (up to 45 degrees) never look from there."),
            ],
            outputs=[io.Conditioning.Output(display_name="positive",
                                            tooltip="The view variants, tagged by view, for the Guidance's "
                                            "positive. A latent canvas has no views: use CLIP Text Encode there.")],
        )

    @classmethod
    def validate_inputs(cls, text=None) -> bool | str:
        """Refuses text no tokenizer should see when the graph is queued (None: linked, checked when it runs)."""
        return text is None or validation(lambda: check_text("text", text, MAX_TEXT_CHARS))

    @classmethod
    def execute(cls, clip, text, overhead_view=False) -> io.NodeOutput:
        check_text("text", text, MAX_TEXT_CHARS)
        if clip is None:
            raise ValueError("clip is None: this checkpoint has no text encoder; load one with a CLIP loader")
        return io.NodeOutput(view_conditioning(clip, text, overhead_view))
