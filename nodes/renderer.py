"""NFSD Renderer: a representation's images, plus its LATENT for core nodes (VAE Decode, Save Image)."""

from __future__ import annotations

from comfy_api.latest import io

from .schema import CATEGORY
from .sockets import Representation
from .sockets.representation import NodeRepresentation


class Renderer(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NFSD_Renderer",
            display_name="NFSD Renderer",
            category=f"{CATEGORY}/rendering",
            description="Renders an optimised representation to images: a latent canvas through the VAE, a NeRF as "
                        "a short turntable (NFSD NeRF Turntable gives every view and pass).",
            inputs=[
                Representation.Input("representation", tooltip="An optimised representation (NFSD Optimizer)."),
                io.Vae.Input("vae", optional=True,
                             tooltip="The VAE of the checkpoint the representation was optimised with; latent "
                             "canvases need it, NeRFs render without it."),
            ],
            outputs=[
                io.Image.Output(display_name="image", tooltip="The rendered images."),
                io.Latent.Output(display_name="latent", tooltip="The representation's latents (VAE units); for a "
                                 "NeRF its front view as the model sees it."),
            ],
        )

    @classmethod
    def check_before_optimizer(cls, inputs: dict, upstream) -> None:
        """What `execute` would refuse of the representation an Optimizer upstream is about to optimise
        (guards.graph): a render that cannot fit, a canvas without a VAE or with one of another size."""
        representation = upstream.representation
        representation.check_render()
        if not representation.renders_through_vae:
            return
        link = inputs.get("vae")
        if link is None:
            raise ValueError("a latent canvas becomes an image through the VAE, and 'vae' is not wired: wire the "
                             "checkpoint's VAE into NFSD Renderer's 'vae' input")
        vae = upstream.known_vae(link)
        if vae is not None and not upstream.sized_with(link):
            representation.check_vae(vae)

    @classmethod
    def execute(cls, representation, vae=None) -> io.NodeOutput:
        if not isinstance(representation, NodeRepresentation):
            raise ValueError("representation must come from an NFSD node (NFSD Latent Canvas or NFSD Optimizer)")
        return io.NodeOutput(representation.render(vae), representation.latent())
