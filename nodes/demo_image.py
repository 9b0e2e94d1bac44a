"""NFSD Demo Image: an image to edit with no file to load, rendered from the shapes prior's objects.

A demo workflow cannot ship a picture for Load Image, which reads ComfyUI's input folder (and a
pack writes nothing outside output and temp). So the picture is made where it is needed: one of
the objects NFSD Demo Model's `shapes` prior was trained on, rendered as its training images show
them, with the object's mask.
"""

from __future__ import annotations

from comfy_api.latest import io

from ..nfsd_core import render_shape, shape_choices
from .schema import CATEGORY

MAX_SIZE = 256


class DemoImage(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        choices = shape_choices()
        return io.Schema(
            node_id="NFSD_DemoImage",
            display_name="NFSD Demo Image",
            category=f"{CATEGORY}/loaders",
            description="An image of one of NFSD Demo Model's shapes-prior objects (sphere, cube, ... mug, house) in "
                        "one of its colours, seen from the front, side or back over mid grey, as the prior's own "
                        "images show them: something to edit with the demo model, with no file to load.",
            inputs=[
                io.Combo.Input("object", options=list(choices["object"]), default="cube",
                               tooltip="The object (the prior knows these seven)."),
                io.Combo.Input("colour", options=list(choices["colour"]), default="red",
                               tooltip="Its colour (the prior knows these six)."),
                io.Combo.Input("view", options=list(choices["view"]), default="front",
                               tooltip="Where the camera stands (the mug's handle and the house's door show the "
                               "front)."),
                io.Int.Input("size", default=32, min=8, max=MAX_SIZE, step=4,
                             tooltip="Pixels per side. The demo model's images are 32x32 (8x8 latents, 4 pixels per "
                             "latent)."),
            ],
            outputs=[
                io.Image.Output(display_name="image", tooltip="The render, for VAE Encode."),
                io.Mask.Output(display_name="mask", tooltip="The object's coverage (1 on the object, 0 on the "
                               "background), e.g. for the guidance's mask."),
            ],
        )

    @classmethod
    def execute(cls, object: str, colour: str, view: str, size: int) -> io.NodeOutput:  # noqa: A002 (the input's name)
        image, mask = render_shape(object, colour, view, size)
        return io.NodeOutput(image.movedim(1, -1).contiguous(), mask[:, 0].contiguous())
