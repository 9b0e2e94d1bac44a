"""NFSD Demo Model (digits): the pack's own miniature Stable Diffusion as MODEL, CLIP and VAE.

The digits prior ships inside nfsd_core (`nfsd_core/assets/digits_prior`, a diffusers SD
directory): 32x32 RGB images of handwritten digits, 4x8x8 latents (4 pixels per latent), a
64-wide CLIP over the project's own tokenizer. It is built once per process with ComfyUI's own
classes (diffusers_sd.py), so every core and NFSD node takes it like a loaded checkpoint and the
demo workflows run on a CPU with nothing to download.
"""

from __future__ import annotations

import functools

import torch
from comfy_api.latest import io

from ..nfsd_core.digits.evaluator import load_digits_evaluator
from ..nfsd_core.digits.prior import DIGITS_PRIOR_DIR
from ..nfsd_core.digits.data import to_images
from .diffusers_sd import load_diffusers_sd
from .types import CATEGORY

CALIBRATION_DIGITS = 64  # real digits shipped with the prior that fit the latent preview factors (KSampler's)


@functools.cache
def demo_models():
    """(MODEL, CLIP, VAE) of the digits prior, built on first use (well under a second) and kept."""
    if not DIGITS_PRIOR_DIR.is_dir():
        raise FileNotFoundError(f"the digits prior that ships with the pack is missing ({DIGITS_PRIOR_DIR}): "
                                "reinstall the pack (ComfyUI-Manager: Try Fix, or git pull)")
    with torch.inference_mode():  # as CheckpointLoaderSimple's models are built, whoever asks first
        digits = load_digits_evaluator().split.train_digits[:CALIBRATION_DIGITS]
        return load_diffusers_sd(DIGITS_PRIOR_DIR, calibration_images=to_images(digits), preview_through_vae=True)


class DemoModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NFSD_DemoModel",
            display_name="NFSD Demo Model (digits)",
            category=f"{CATEGORY}/loaders",
            description="The pack's own miniature Stable Diffusion, trained on handwritten digits and shipped with "
                        "it: no download, runs on a CPU in seconds. It makes 32x32 images (8x8 latents, 4 pixels "
                        "per latent: give the NFSD Latent Canvas this VAE); prompts such as 'a handwritten digit "
                        "seven', 'an odd handwritten digit'; its negative prompt means blurry, low-contrast digits.",
            inputs=[],
            outputs=[
                io.Model.Output(display_name="MODEL", tooltip="The digits UNet (eps-prediction, SD's schedule), for "
                                "NFSD guidance, KSampler or any node that takes a MODEL."),
                io.Clip.Output(display_name="CLIP", tooltip="Its 64-wide text encoder with the project's tokenizer, "
                               "for CLIP Text Encode and NFSD View Prompts."),
                io.Vae.Output(display_name="VAE", tooltip="Its VAE: 32x32 RGB images <-> 4x8x8 latents (4 pixels per "
                              "latent). Wire it into NFSD Latent Canvas so the canvas has this size."),
            ],
        )

    @classmethod
    def execute(cls) -> io.NodeOutput:
        model, clip, vae = demo_models()
        return io.NodeOutput(model.clone(), clip.clone(), vae)
