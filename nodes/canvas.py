"""NFSD Latent Canvas: the image to optimise, as latents."""

from __future__ import annotations

from comfy_api.latest import io

from ..nfsd_core import SD_LATENT_CHANNELS, SD_PIXELS_PER_LATENT, canvas_bytes
from .guards.limits import check_memory
from .schema import CATEGORY, SEED_CONTROL
from .sockets import Canvas
from .sockets.canvas import CanvasState


def canvas_state(width: int, height: int, batch: int, seed: int, initial_latent: dict | None,
                 downscale: int = SD_PIXELS_PER_LATENT, channels: int = SD_LATENT_CHANNELS) -> CanvasState:
    """A CanvasState of `width` x `height` pixels at `downscale` pixels per latent (the VAE's),
    optionally starting from a LATENT of that size."""
    if width % downscale or height % downscale:
        raise ValueError(f"width and height must be multiples of {downscale} pixels (the VAE's pixels per latent), "
                         f"got {width}x{height}")
    check_canvas_memory(width, height, batch, downscale, channels)
    if initial_latent is None:
        return CanvasState(batch, channels, height // downscale, width // downscale, seed, pixels_per_latent=downscale)
    samples = initial_latent["samples"]
    if samples.dim() != 4:
        raise ValueError(f"initial_latent must be an image LATENT [batch, channels, height, width], "
                         f"got shape {tuple(samples.shape)}")
    size = (samples.shape[-2] * downscale, samples.shape[-1] * downscale)
    if size != (height, width):
        raise ValueError(f"initial_latent is {size[1]}x{size[0]} pixels but the canvas is {width}x{height}: set "
                         f"width and height to the latent's size, or resize the latent (Upscale Latent)")
    if samples.shape[0] not in (1, batch):
        raise ValueError(f"initial_latent holds {samples.shape[0]} latents but batch is {batch}: use a batch of 1 "
                         f"(repeated) or {batch}")
    samples = samples.expand(batch, -1, -1, -1).float().cpu().clone()
    return CanvasState(batch, samples.shape[1], height // downscale, width // downscale, seed, samples,
                       pixels_per_latent=downscale)


def check_canvas_memory(width: int, height: int, batch: int, downscale: int, channels: int) -> None:
    """Refuse a canvas whose latents and their working copies in a step would not fit in memory."""
    def of_size(side_w: int, side_h: int, images: int) -> int:
        return canvas_bytes(images, channels, side_h // downscale, side_w // downscale)

    check_memory(of_size(width, height, batch), f"a {width}x{height} canvas of batch_size {batch}", {
        "batch_size": (lambda images: of_size(width, height, images), 1, batch, 1),
        "width and height": (lambda side: of_size(side, side, batch), downscale, max(width, height), downscale),
    })


class LatentCanvas(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NFSD_LatentCanvas",
            display_name="NFSD Latent Canvas",
            category=f"{CATEGORY}/representations",
            description="A latent image for NFSD Optimizer to optimise: random (seeded) or from a LATENT.",
            inputs=[
                io.Int.Input("width", default=512, min=SD_PIXELS_PER_LATENT, max=8192, step=SD_PIXELS_PER_LATENT,
                             tooltip="Image width in pixels (a multiple of the VAE's pixels per latent: 8 for SD "
                             "checkpoints, 4 for NFSD Demo Model)."),
                io.Int.Input("height", default=512, min=SD_PIXELS_PER_LATENT, max=8192, step=SD_PIXELS_PER_LATENT,
                             tooltip="Image height in pixels (a multiple of the VAE's pixels per latent)."),
                io.Int.Input("batch_size", default=1, min=1, max=64,
                             tooltip="Number of images optimised together (each gets its own timestep and noise)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the random start (standard normal in the model's latent space). "
                             f"{SEED_CONTROL}"),
                io.Latent.Input("initial_latent", optional=True,
                                tooltip="Start from this LATENT instead of noise (e.g. VAE Encode of an image); its "
                                "size must match width and height."),
                io.Vae.Input("vae", optional=True,
                             tooltip="The checkpoint's VAE, whose pixels per latent and latent channels size the "
                             "canvas (NFSD Demo Model's: 4 pixels per latent). Not wired: SD 1.x/2.x/SDXL's 8 pixels "
                             "per latent and 4 channels."),
            ],
            outputs=[Canvas.Output(display_name="canvas", tooltip="The canvas, for NFSD Optimizer.")],
        )

    @classmethod
    def execute(cls, width, height, batch_size, seed, initial_latent=None, vae=None) -> io.NodeOutput:
        if vae is None:
            return io.NodeOutput(canvas_state(width, height, batch_size, seed, initial_latent))
        vae.throw_exception_if_invalid()
        return io.NodeOutput(canvas_state(width, height, batch_size, seed, initial_latent,
                                          vae.spacial_compression_encode(), vae.latent_channels))
