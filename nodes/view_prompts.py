"""NFSD View Prompts: one prompt per camera view (front, side, back, overhead) on one CONDITIONING wire.

DreamFusion and threestudio append the view to the prompt ("<prompt>, back view") so the model
does not paint a face on every side of the object. The node encodes each variant with the CLIP
and tags its CONDITIONING entries with the view under VIEW_KEY; NFSD Score Distillation Guidance
splits a tagged positive back into one CONDITIONING per view (`guidance.split_views`). Conditioning nodes
copy the entries' options, so area, ControlNet and combine nodes keep working on the tagged wire;
untagged entries (e.g. combined in afterwards) apply to every view. Nodes that know nothing of
views (KSampler) see the variants as combined prompts.
"""

from __future__ import annotations

from comfy_api.latest import io

from ..nfsd_core import VIEW_SUFFIXES, check_text
from .adapters.conditioning import VIEW_KEY, encode_text
from .guards.limits import validation
from .schema import CATEGORY

MAX_TEXT_CHARS = 10_000  # about 2,500 CLIP tokens, encoded once per view: far beyond any prompt a model follows


def view_conditioning(clip, text: str) -> list:
    """CONDITIONING with the entries of `text, <view> view` for every view, each tagged with its view."""
    tagged = []
    for view, suffix in VIEW_SUFFIXES.items():
        tagged += [[cond, {**options, VIEW_KEY: view}] for cond, options in encode_text(clip, f"{text}, {suffix}")]
    return tagged


class ViewPrompts(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        views = ", ".join(f"'<text>, {suffix}'" for suffix in VIEW_SUFFIXES.values())
        return io.Schema(
            node_id="NFSD_ViewPrompts",
            display_name="NFSD View Prompts",
            category=f"{CATEGORY}/guidance",
            description="View-dependent prompting for NeRFs: encodes the prompt once per camera view "
                        f"({views}) on one CONDITIONING. Wire it into NFSD Score Distillation Guidance's positive "
                        "in place of CLIP Text Encode; every training camera then sees the variant for its view.",
            inputs=[
                io.Clip.Input("clip", tooltip="The text encoder of the checkpoint."),
                io.String.Input("text", multiline=True, dynamic_prompts=True,
                                tooltip="The prompt, without a view: the node appends ', front view', ', side view', "
                                "', back view' or ', overhead view' (overhead: cameras above 60 degrees; front and "
                                f"back: within 45 degrees of them). At most {MAX_TEXT_CHARS:,} characters."),
            ],
            outputs=[io.Conditioning.Output(display_name="positive",
                                            tooltip="The four view variants, tagged by view, for the Guidance's "
                                            "positive. A latent canvas has no views: use CLIP Text Encode there.")],
        )

    @classmethod
    def validate_inputs(cls, text=None) -> bool | str:
        """Refuses text no tokenizer should see when the graph is queued (None: linked, checked when it runs)."""
        return text is None or validation(lambda: check_text("text", text, MAX_TEXT_CHARS))

    @classmethod
    def execute(cls, clip, text) -> io.NodeOutput:
        check_text("text", text, MAX_TEXT_CHARS)
        if clip is None:
            raise ValueError("clip is None: this checkpoint has no text encoder; load one with a CLIP loader")
        return io.NodeOutput(view_conditioning(clip, text))
