"""What an NFSD_CANVAS or NFSD_NERF socket carries: a `NodeRepresentation`.

ComfyUI caches node outputs and may hand one to several nodes, so a socket value is immutable:
an Optimizer `build`s a fresh trainable nfsd_core representation from it and returns a new value
`with_result`. Latents cross the socket in ComfyUI's LATENT convention (the VAE's units); the
Optimizer converts them with the MODEL's latent format, as KSampler does.

To add a representation: subclass `NodeRepresentation` beside canvas.py and nerf.py, return it
from a node, and the Optimizer and Renderer nodes work with it unchanged.
"""

from __future__ import annotations

import abc

import torch
from PIL import Image
from torch import Tensor

from ...nfsd_core import SD_PIXELS_PER_LATENT, Representation, StepMemory


class NodeRepresentation(abc.ABC):
    """An immutable description of something to optimise, as it flows between nodes.

    `needs_vae`: it renders pixels, which reach the model only through the VAE's encoder.
    `has_views`: its renders come from cameras with view names (for view-dependent prompts);
    `camera_views` names the views they can get.
    `checkpoint_by_default`: its runs are long enough to keep their state in ComfyUI's temp folder
    when no checkpoint directory is given, so that an interrupted run resumes.
    `socket_type`: the type of the sockets that carry it (see this package); `size_input`: the input that
    sets the size of the latents it renders, in pixels of `pixels_per_latent` each.
    `renders_through_vae`: `render` shows it through the VAE (it needs one, that `check_vae` accepts).
    """

    needs_vae: bool = False
    renders_through_vae: bool = False
    has_views: bool = False
    checkpoint_by_default: bool = False
    socket_type: str = ""
    size_input: str = ""
    pixels_per_latent: int = SD_PIXELS_PER_LATENT

    @abc.abstractmethod
    def step_memory(self, batch: int, denoiser: int, encode: tuple[int, int, int] = (0, 0, 0)) -> StepMemory:
        """The memory of an optimisation step with `batch` images (nfsd_core's StepMemory), given
        the model call's memory `denoiser` and the VAE encode's (weights, kept, backward)
        bytes `encode` (zeros when it does not encode); a representation whose steps differ (a
        NeRF's render sizes) gives its largest."""

    @property
    def camera_views(self) -> tuple[str, ...]:
        """The views its cameras can be named during optimisation (none: it has no cameras)."""
        return ()

    @property
    def views_name_elevation(self) -> bool:
        """Whether those view names say the camera's elevation ("side, elevation 20")."""
        return False

    def for_model(self, model, vae) -> "NodeRepresentation":
        """Itself with the settings it leaves to the model resolved for the MODEL of the run (a
        ComfyScoreModel) and its VAE (or None); by default it leaves none."""
        return self

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

    def check_render(self) -> None:
        """Refuse (ValueError) a `render` that cannot fit in memory, before it starts; by default none can't."""

    def preview(self, trained: Representation, done: int, steps: int, previewer) -> Image.Image | None:
        """An image of `trained` after `done` of `steps` steps for the progress bar (None: none).

        By default its first latent through `previewer` (adapters.preview.select_previewer's, or None), as
        ComfyUI's samplers show theirs.
        """
        if previewer is None:
            return None
        with torch.no_grad():
            latents = trained.render_for_guidance(0, 1, torch.Generator()).latents
        return previewer.decode_latent_to_preview(latents)
