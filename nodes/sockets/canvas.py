"""`CanvasState`: a latent canvas as it travels on an NFSD_CANVAS socket."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ...nfsd_core import SD_PIXELS_PER_LATENT, LatentCanvas, Representation, StepMemory, canvas_bytes, initial_latents
from .representation import NodeRepresentation


@dataclass(frozen=True, eq=False)  # compared by identity: it holds a tensor
class CanvasState(NodeRepresentation):
    """A latent canvas: `samples` [B, C, h, w] in VAE units, or None for a seeded random start;
    `pixels_per_latent` is the downscale factor of the VAE it was sized for.

    The random start is standard normal in the score model's latent space, where distillation
    starts from; it has no VAE units until a model fixes the scale, so it can be optimised but not
    rendered.
    """

    batch: int
    channels: int
    height: int
    width: int
    seed: int = 0
    samples: Tensor | None = None
    pixels_per_latent: int = SD_PIXELS_PER_LATENT

    socket_type = "NFSD_CANVAS"
    size_input = "width and height"
    renders_through_vae = True

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.channels, self.height, self.width)

    def step_memory(self, batch: int, denoiser: int, encode: tuple[int, int, int] = (0, 0, 0)) -> StepMemory:
        return StepMemory(state=canvas_bytes(batch, self.channels, self.height, self.width), denoiser=denoiser)

    def check_vae(self, vae) -> None:
        if vae.spacial_compression_decode() != self.pixels_per_latent or vae.latent_channels != self.channels:
            raise ValueError(f"this canvas was sized for a VAE of {self.pixels_per_latent} pixels per latent and "
                             f"{self.channels} latent channels, but the VAE has {vae.spacial_compression_decode()} and "
                             f"{vae.latent_channels}: wire this VAE into NFSD Latent Canvas's 'vae' input too, so that "
                             "its width and height are this VAE's pixels")

    def build(self, latent_format, device: torch.device, vae=None) -> LatentCanvas:
        if self.channels != latent_format.latent_channels:
            raise ValueError(f"the canvas has {self.channels} latent channels but the MODEL works on "
                             f"{latent_format.latent_channels}; make the canvas for this model's latents")
        model_pixels = getattr(latent_format, "spacial_downscale_ratio", None)  # ComfyUI 0.3.64's SD formats lack it
        if model_pixels is not None and model_pixels != self.pixels_per_latent:
            raise ValueError(f"this canvas was sized for {self.pixels_per_latent} pixels per latent but the MODEL's "
                             f"latents are {model_pixels} pixels wide (e.g. NFSD Demo Model's): wire the model's VAE "
                             "into NFSD Latent Canvas's 'vae' input, so that its width and height are this model's "
                             "pixels")
        if self.samples is None:
            latents = initial_latents(self.latent_shape, self.seed)
        else:
            latents = latent_format.process_in(self.samples.float().clone())
        return LatentCanvas(latents).to(device)

    def with_result(self, trained: Representation, latent_format) -> "CanvasState":
        return replace(self, samples=latent_format.process_out(trained.latents.detach().float()).cpu())

    def latent(self) -> dict[str, Tensor]:
        return {"samples": self._optimised_samples()}

    def render(self, vae) -> Tensor:
        samples = self._optimised_samples()
        if vae is None:
            raise ValueError("a latent canvas becomes an image through the VAE: wire the checkpoint's VAE into NFSD "
                             "Renderer's 'vae' input")
        self.check_vae(vae)
        return vae.decode(samples)

    def _optimised_samples(self) -> Tensor:
        if self.samples is None:
            raise ValueError("this canvas holds only a random start, which has no image yet: connect it through "
                             "NFSD Optimizer first (or give NFSD Latent Canvas an initial_latent)")
        return self.samples
