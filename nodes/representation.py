"""What travels on an NFSD_CANVAS or NFSD_NERF socket (types.py), and the latent canvas.

ComfyUI caches node outputs and may hand one to several nodes, so a socket value is immutable:
an Optimizer `build`s a fresh trainable nfsd_core representation from it and returns a new value
`with_result`. Latents cross the socket in ComfyUI's LATENT convention (the VAE's units); the
Optimizer converts them with the MODEL's latent format, as KSampler does.

To add a representation: subclass `NodeRepresentation`, return it from a node, and the Optimizer
and Renderer nodes work with it unchanged (the NeRF's is `NerfState`, in nerf.py).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, replace

import latent_preview
import torch
from comfy.cli_args import LatentPreviewMethod, args
from PIL import Image
from torch import Tensor

from ..nfsd_core import SD_PIXELS_PER_LATENT, LatentCanvas, Representation
from ..nfsd_core.budget import canvas_bytes
from ..nfsd_core.image_files import to_pil
from ..nfsd_core.representations import initial_latents
from .codec import ComfyLatentCodec



class VAEPreviewer(latent_preview.LatentPreviewer):
    """Previews through the model's own VAE: the image the Renderer will show, for models whose VAE
    is cheap enough to decode at every preview (NFSD Demo Model's)."""

    def __init__(self, vae, latent_format):
        self.codec = ComfyLatentCodec(vae, latent_format)

    def decode_latent_to_preview(self, x0: Tensor) -> Image.Image:
        return to_pil(self.codec.decode(x0[:1])[0])


def select_previewer(latent_format, device: torch.device) -> latent_preview.LatentPreviewer | None:
    """The previewer for model latents in `latent_format` (None: the format has none).

    A latent format that carries a `preview_vae` (NFSD Demo Model's) is previewed through that VAE.
    Otherwise ComfyUI's samplers' choice (`latent_preview.get_previewer`): the user's --preview-method,
    TAESD from models/vae_approx, else the latent-to-RGB factors. The Optimizer's own `preview_every`
    says whether to preview, so ComfyUI's default method, none, counts as auto (the factors) here.
    """
    vae = getattr(latent_format, "preview_vae", None)
    if vae is not None:
        return VAEPreviewer(vae, latent_format)
    if args.preview_method == LatentPreviewMethod.NoPreviews:
        if latent_format.latent_rgb_factors is None:
            return None
        return latent_preview.Latent2RGBPreviewer(latent_format.latent_rgb_factors,
                                                  latent_format.latent_rgb_factors_bias)
    return latent_preview.get_previewer(device, latent_format)


class NodeRepresentation(abc.ABC):
    """An immutable description of something to optimise, as it flows between nodes.

    `needs_vae`: it renders pixels, which reach the model only through the VAE's encoder.
    `has_views`: its renders come from cameras with view names (for view-dependent prompts).
    `checkpoint_by_default`: its runs are long enough to keep their state in ComfyUI's temp folder
    when no checkpoint directory is given, so that an interrupted run resumes.
    `socket_type`: the type of the sockets that carry it (types.py); `size_input`: the input that
    sets the size of the latents it renders, in pixels of `pixels_per_latent` each.
    """

    needs_vae: bool = False
    has_views: bool = False
    checkpoint_by_default: bool = False
    socket_type: str = ""
    size_input: str = ""
    pixels_per_latent: int = SD_PIXELS_PER_LATENT

    @abc.abstractmethod
    def memory_needed(self, batch: int) -> int:
        """Bytes of its own memory in an optimisation step with `batch` images (the score model's
        and the VAE's left out), an nfsd_core.budget estimate."""

    def check_vae(self, vae) -> None:
        """Refuse (ValueError) a VAE that cannot go with it; by default any."""

    @property
    @abc.abstractmethod
    def latent_shape(self) -> tuple[int, int, int, int]:
        """[B, C, h, w] of the latents it renders for the score model."""

    @abc.abstractmethod
    def build(self, latent_format, device: torch.device, vae=None) -> Representation:
        """A fresh, trainable nfsd_core representation (call with autograd enabled); `vae` is
        ComfyUI's VAE, given when `needs_vae`."""

    @abc.abstractmethod
    def with_result(self, trained: Representation, latent_format) -> "NodeRepresentation":
        """The socket value holding the state of `trained`."""

    @abc.abstractmethod
    def latent(self) -> dict[str, Tensor]:
        """A ComfyUI LATENT of the current state (VAE units)."""

    @abc.abstractmethod
    def render(self, vae) -> Tensor:
        """ComfyUI IMAGE [B, H, W, 3] in [0, 1]; `vae` is ComfyUI's VAE, or None when not wired."""

    def preview(self, trained: Representation, done: int, steps: int, previewer) -> Image.Image | None:
        """An image of `trained` after `done` of `steps` steps for the progress bar (None: none).

        By default its first latent through `previewer` (from `select_previewer`, or None), as
        ComfyUI's samplers show theirs.
        """
        if previewer is None:
            return None
        with torch.no_grad():
            latents = trained.render_for_guidance(0, 1, torch.Generator()).latents
        return previewer.decode_latent_to_preview(latents)


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

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.channels, self.height, self.width)

    def memory_needed(self, batch: int) -> int:
        return canvas_bytes(batch, self.channels, self.height, self.width)

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
