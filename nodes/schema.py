"""What the nodes' schemas share: their menu category, the seeds' control, and the optional prompt inputs."""

from __future__ import annotations

from comfy_api.latest import io

from ..nfsd_core import DEFAULT_NEGATIVE_PROMPT

CATEGORY = "NFSD"
MAX_TEXT_CHARS = 10_000  # about 2,500 CLIP tokens, far beyond any prompt a model follows
# Every NFSD seed widget starts "fixed" (web/seeds.js), unlike ComfyUI's default, "randomize".
SEED_CONTROL = ("Starts 'fixed': queueing again repeats the run, or resumes a cancelled one; set control after "
                "generate to 'randomize' for a new run per queue.")


def optional_prompt_inputs() -> list[io.Input]:
    """The `negative`, `unconditional` and `clip` inputs of the nodes that take prompts
    (adapters.conditioning.prompt_conditioning turns them into Prompts)."""
    return [
        io.Conditioning.Input("negative", optional=True,
                              tooltip="Negative prompt, used by NFSD (t >= nfsd_threshold) and by SDS with negative "
                              "prompt. If not wired, 'clip' encodes the paper's default: "
                              f"{DEFAULT_NEGATIVE_PROMPT!r}."),
        io.Conditioning.Input("unconditional", optional=True,
                              tooltip="The empty prompt's conditioning (CLIPTextEncode of ''). If not wired, 'clip' "
                              "encodes it."),
        io.Clip.Input("clip", optional=True,
                      tooltip="Text encoder for the empty and default negative prompts when 'unconditional' or "
                      "'negative' are not wired. An SDXL positive's size conditioning (CLIPTextEncodeSDXL) is given "
                      "to them too."),
    ]
