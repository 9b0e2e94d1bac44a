"""NFSD Demo Model: a miniature Stable Diffusion that ships with the pack, as MODEL, CLIP and VAE.

The priors ship inside nfsd_core (`SHIPPED_PRIORS`, diffusers SD directories): `digits`, 32x32
images of handwritten digits, and `shapes`, 32x32 renders of simple objects for text to NeRF;
both have 4x8x8 latents (4 pixels per latent) and a 64-wide CLIP over the project's own
tokenizer. The MODEL carries both sizes (its latent format's pixels per latent, its config's
image size), so NFSD Optimizer sizes a NeRF for it without settings. Each is built once per
process with ComfyUI's own classes (adapters.diffusers_sd), so every core and NFSD node takes it
like a loaded checkpoint and the demo workflows run on a CPU with nothing to download.
"""

from __future__ import annotations

import functools

import torch
from comfy_api.latest import io

from ..nfsd_core import SHIPPED_PRIORS
from .adapters.diffusers_sd import load_diffusers_sd
from .schema import CATEGORY

DEFAULT_PRIOR = "digits"


@functools.cache
def demo_models(name: str):
    """(MODEL, CLIP, VAE) of the shipped prior `name`, built on first use (about a second) and kept."""
    prior = SHIPPED_PRIORS[name]
    if not prior.directory.is_dir():
        raise FileNotFoundError(f"the {name} prior that ships with the pack is missing ({prior.directory}): "
                                "reinstall the pack (ComfyUI-Manager: Try Fix, or git pull)")
    with torch.inference_mode():  # as CheckpointLoaderSimple's models are built, whoever asks first
        return load_diffusers_sd(prior.directory, calibration_images=prior.calibration_images(),
                                 preview_through_vae=True)


class DemoModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        priors = "; ".join(f"{name}: {prior.subject} (e.g. {', '.join(repr(p) for p in prior.example_prompts)})"
                           for name, prior in SHIPPED_PRIORS.items())
        return io.Schema(
            node_id="NFSD_DemoModel",
            display_name="NFSD Demo Model",
            category=f"{CATEGORY}/loaders",
            description="A miniature Stable Diffusion shipped with the pack: no download, runs on a CPU in seconds. "
                        "It makes 32x32 images (8x8 latents, 4 pixels per latent: give NFSD Latent Canvas this VAE; "
                        "NFSD NeRF Representation takes both from the model, with guidance_size 0, its default); "
                        f"its negative prompt means blurry, low-contrast images. Priors: {priors}.",
            inputs=[
                io.Combo.Input("prior", options=list(SHIPPED_PRIORS), default=DEFAULT_PRIOR, optional=True,
                               tooltip="digits: handwritten digits, for latent canvases. shapes: renders of simple "
                               "objects from the NeRF's own cameras, for text to NeRF (prompts such as 'a red mug', "
                               "with view prompts)."),
            ],
            outputs=[
                io.Model.Output(display_name="MODEL", tooltip="The UNet (eps-prediction, SD's schedule), for NFSD "
                                "guidance, KSampler or any node that takes a MODEL."),
                io.Clip.Output(display_name="CLIP", tooltip="Its 64-wide text encoder with the project's tokenizer, "
                               "for CLIP Text Encode and NFSD View Prompts."),
                io.Vae.Output(display_name="VAE", tooltip="Its VAE: 32x32 RGB images <-> 4x8x8 latents (4 pixels per "
                              "latent). Wire it into NFSD Latent Canvas so the canvas has this size."),
            ],
        )

    @classmethod
    def execute(cls, prior: str | None = None) -> io.NodeOutput:
        model, clip, vae = demo_models(prior or DEFAULT_PRIOR)
        return io.NodeOutput(model.clone(), clip.clone(), vae)
