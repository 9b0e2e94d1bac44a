"""What travels on an NFSD_REPRESENTATION socket, and the latent canvas that does.

ComfyUI caches node outputs and may hand one to several nodes, so a socket value is immutable:
an Optimizer `build`s a fresh trainable nfsd_core representation from it and returns a new value
`with_result`. Latents cross the socket in ComfyUI's LATENT convention (the VAE's units); the
Optimizer converts them with the MODEL's latent format, as KSampler does.

To add a representation (a NeRF, say): subclass `NodeRepresentation`, return it from a node, and
the Optimizer and Renderer nodes work with it unchanged.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..nfsd_core import LatentCanvas, Representation
from ..nfsd_core.representations import initial_latents
from .fingerprint import fingerprint


class NodeRepresentation(abc.ABC):
    """An immutable description of something to optimise, as it flows between nodes."""

    @property
    @abc.abstractmethod
    def latent_shape(self) -> tuple[int, int, int, int]:
        """[B, C, h, w] of the latents it renders for the score model."""

    @abc.abstractmethod
    def build(self, latent_format, device: torch.device) -> Representation:
        """A fresh, trainable nfsd_core representation (call with autograd enabled)."""

    @abc.abstractmethod
    def with_result(self, trained: Representation, latent_format) -> "NodeRepresentation":
        """The socket value holding the state of `trained`."""

    @abc.abstractmethod
    def latent(self) -> dict[str, Tensor]:
        """A ComfyUI LATENT of the current state (VAE units)."""

    @abc.abstractmethod
    def render(self, vae) -> Tensor:
        """ComfyUI IMAGE [B, H, W, 3] in [0, 1]."""

    @abc.abstractmethod
    def identity(self) -> dict[str, Any]:
        """What a checkpoint of a run on this representation must match (JSON values), beyond its shape."""

    def preview_latents(self, trained: Representation) -> Tensor:
        """Model-space latents [B, C, h, w] to preview while `trained` is optimised."""
        with torch.no_grad():
            return trained.render_for_guidance(0, 1, torch.Generator()).latents


@dataclass(frozen=True, eq=False)  # compared by identity: it holds a tensor
class CanvasState(NodeRepresentation):
    """A latent canvas: `samples` [B, C, h, w] in VAE units, or None for a seeded random start.

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

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.channels, self.height, self.width)

    def build(self, latent_format, device: torch.device) -> LatentCanvas:
        if self.channels != latent_format.latent_channels:
            raise ValueError(f"the canvas has {self.channels} latent channels but the MODEL works on "
                             f"{latent_format.latent_channels}; make the canvas for this model's latents")
        if self.samples is None:
            latents = initial_latents(self.latent_shape, self.seed)
        else:
            latents = latent_format.process_in(self.samples.float().clone())
        return LatentCanvas(latents).to(device)

    def with_result(self, trained: Representation, latent_format) -> "CanvasState":
        samples = latent_format.process_out(trained.latents.detach().float()).cpu()
        return CanvasState(self.batch, self.channels, self.height, self.width, self.seed, samples)

    def latent(self) -> dict[str, Tensor]:
        return {"samples": self._optimised_samples()}

    def identity(self) -> dict[str, Any]:
        return {"seed": self.seed, "samples": None if self.samples is None else fingerprint(self.samples)}

    def render(self, vae) -> Tensor:
        return vae.decode(self._optimised_samples())

    def _optimised_samples(self) -> Tensor:
        if self.samples is None:
            raise ValueError("this canvas holds only a random start, which has no image yet: connect it through "
                             "NFSD Optimizer first (or give NFSD Latent Canvas an initial_latent)")
        return self.samples
