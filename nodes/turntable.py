"""NFSD NeRF Turntable: a NeRF's views around it as IMAGE batches (colour, depth, normals, opacity).

Depth and opacity become greyscale IMAGEs the way depth ControlNets and ComfyUI's depth
estimators draw them: near is white, far and empty space black, normalised over the whole batch
so the frames of one turntable compare.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from comfy_api.latest import io
from torch import Tensor

from ..nfsd_core.nerf import CameraSettings
from .guards.limits import check_finite
from .schema import CATEGORY
from .sockets import Nerf
from .sockets.nerf import check_nerf

CAMERAS = CameraSettings()  # the evaluation view's defaults

FOREGROUND = 0.5  # opacity above which a pixel counts as the object when the depth range is measured


def greyscale(values: Tensor) -> Tensor:
    """IMAGE [B, H, W, 3] of one-channel values [B, H, W, 1] in [0, 1]."""
    return values.clamp(0.0, 1.0).expand(-1, -1, -1, 3).contiguous()


def depth_image(depth: Tensor, opacity: Tensor) -> Tensor:
    """Greyscale IMAGE [B, H, W, 3] of renders' accumulated depth and opacity [B, H, W, 1].

    The distance of the surface, depth / opacity, is mapped from the nearest (1, white) to the
    farthest (0) object pixel of the batch, then faded to black where the opacity falls.
    """
    distance = depth / opacity.clamp_min(1e-6)
    solid = opacity > FOREGROUND
    if not solid.any():
        return torch.zeros(depth.shape[:-1] + (3,))
    near, far = distance[solid].min(), distance[solid].max()
    closeness = (far - distance) / (far - near).clamp_min(1e-6)
    return greyscale(closeness.clamp(0.0, 1.0) * opacity)


def normal_image(normal: Tensor, opacity: Tensor) -> Tensor:
    """IMAGE [B, H, W, 3] of renders' opacity-weighted world normals [B, H, W, 3]: (n + 1) / 2, black where empty."""
    return ((F.normalize(normal, dim=-1) + 1.0) / 2.0 * opacity).clamp(0.0, 1.0)


class NeRFTurntable(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NFSD_NeRFTurntable",
            display_name="NFSD NeRF Turntable",
            category=f"{CATEGORY}/rendering",
            description="Renders an optimised NeRF from cameras turning once around it, starting at the front: "
                        "colour, depth, normal and opacity, one IMAGE per view (e.g. for Save Animated WEBP).",
            inputs=[
                Nerf.Input("nerf", tooltip="An optimised NeRF (NFSD Optimizer)."),
                io.Int.Input("views", default=30, min=1, max=720,
                             tooltip="Number of views, evenly spaced around the object. On a CPU keep views x size^2 "
                             "small (e.g. 8 views of 128 px). Views that would not fit in memory are refused before "
                             "rendering, with the number that fits."),
                io.Int.Input("size", default=256, min=8, max=2048, step=8,
                             tooltip="Side of the square renders in pixels."),
                io.Float.Input("elevation", default=CAMERAS.eval_elevation, min=-89.0, max=89.0, step=1.0,
                               tooltip="Camera elevation in degrees (0: level with the centre)."),
                io.Float.Input("distance", default=CAMERAS.eval_distance, min=0.1, max=10.0, step=0.05,
                               tooltip="Camera distance from the centre (the NeRF fills a cube from -1 to 1)."),
            ],
            hidden=[io.Hidden.unique_id],
            outputs=[
                io.Image.Output(display_name="colour", tooltip="The views in colour, over the evaluation background."),
                io.Image.Output(display_name="depth", tooltip="Depth, greyscale: near white, far and empty black, "
                                "normalised over all views."),
                io.Image.Output(display_name="normal", tooltip="World-space normals (z up) as (n + 1) / 2, black "
                                "where empty."),
                io.Image.Output(display_name="opacity", tooltip="Accumulated opacity, greyscale: white is solid."),
            ],
        )

    @classmethod
    def check_before_optimizer(cls, inputs: dict, upstream) -> None:
        """Views that cannot fit, refused by an Optimizer upstream before its first step (guards.graph)."""
        views, size = inputs.get("views"), inputs.get("size")
        if isinstance(views, int) and isinstance(size, int):
            check_nerf(upstream.representation).check_turntable(views, size, normals=True)

    @classmethod
    def execute(cls, nerf, views, size, elevation, distance) -> io.NodeOutput:
        check_finite(cls, {"elevation": elevation, "distance": distance})
        render = check_nerf(nerf).turntable(views, size, elevation, distance, normals=True,
                                            node_id=cls.hidden.unique_id)
        return io.NodeOutput(render.colour, depth_image(render.depth, render.opacity),
                             normal_image(render.normal, render.opacity), greyscale(render.opacity))
