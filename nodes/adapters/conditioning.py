"""ComfyUI CONDITIONING as nfsd_core `Prompts`: the empty and negative prompts a rule needs, the
source prompt of an edit, and view-tagged prompts (NFSD View Prompts) split by view."""

from __future__ import annotations

from ...nfsd_core import DEFAULT_NEGATIVE_PROMPT, Prompts

VIEW_KEY = "nfsd_view"  # the CONDITIONING option naming an entry's camera view (NFSD View Prompts)
# SDXL's size conditioning, as CLIPTextEncodeSDXL sets it; where absent, ComfyUI takes the latents' size.
SIZE_KEYS = ("width", "height", "crop_w", "crop_h", "target_width", "target_height")


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


def shared_size(positive: list | dict[str, list]) -> dict:
    """The size options (SIZE_KEYS) that every entry of `positive` (a CONDITIONING, or one per view)
    carries alike; {} when they differ or there are none."""
    entries = positive if isinstance(positive, list) else [entry for view in positive.values() for entry in view]
    sizes = {tuple((key, options[key]) for key in SIZE_KEYS if key in options) for _, options in entries}
    return dict(sizes.pop()) if len(sizes) == 1 else {}


def prompt_conditioning(rule_label: str, rule, positive, negative, unconditional, clip) -> Prompts:
    """The Prompts `rule` reads (others are left out), encoding the empty and the default negative
    prompt with `clip` where they are not wired.

    Encoded prompts take the positive's SDXL size conditioning when all its entries share one (a
    CLIPTextEncodeSDXL positive), as diffusers' SDXL pipeline gives its negative prompt the positive's
    sizes: the difference of two predictions is then the prompt's alone, not a change of size too.
    """
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
    size = shared_size(positive)

    def encoded(text: str) -> list:
        return [[cond, {**options, **size}] for cond, options in encode_text(clip, text)]

    resolved = {name: (wired if wired is not None else encoded(text)) if needed else None
                for name, (needed, wired, text, _) in wanted.items()}
    return Prompts(positive, resolved["unconditional"], resolved["negative"])


def source_conditioning(rule_label: str, source_prompt, source_text: str | None, clip):
    """The CONDITIONING of what the edited image shows: `source_prompt`, or `source_text` encoded
    with `clip` (exactly one of them)."""
    if source_prompt is not None and source_text is not None:
        raise ValueError(f"the {rule_label} rule takes one source prompt: wire 'source_prompt' (a CLIPTextEncode) or "
                         "'source_text', not both")
    if source_prompt is not None:
        return source_prompt
    if source_text is None or not source_text.strip():
        raise ValueError(f"the {rule_label} rule edits an image and needs what the image shows: wire 'source_prompt' "
                         "(a CLIPTextEncode of, e.g., 'a photo of a red car'), or 'source_text' and 'clip'")
    if clip is None:
        raise ValueError("'source_text' is encoded with 'clip': wire the checkpoint's CLIP into 'clip', or wire a "
                         "CLIPTextEncode into 'source_prompt' instead")
    return encode_text(clip, source_text)
