"""`NerfState`: a NeRF as it travels on an NFSD_NERF socket.

It holds the NeRF's settings and, once optimised, its weights on the CPU; nodes downstream
rebuild the NeRF from them to render turntables and meshes (see `rendered.RenderedState`, which
it shares with the mesh texture, and which resolves the settings left to the model).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass

from ...nfsd_core import StepMemory, nerf_step_memory, turntable_bytes
from ...nfsd_core.nerf import NerfRepresentation, NerfSettings, queried_share
from ..adapters.preview import latent_to_rgb
from .rendered import RenderedState, with_model_call


@dataclass(frozen=True, eq=False)  # compared by identity: it holds tensors
class NerfState(RenderedState):
    """A NeRF: its settings, and the fields of every `RenderedState`."""

    settings: NerfSettings

    socket_type = "NFSD_NERF"
    noun = "NeRF"
    node_name = "NFSD NeRF Representation"
    elevation_setting = "NFSD NeRF Representation's elevation_max"

    @property
    def view_size(self) -> int:
        return self.settings.render_sizes[-1]

    def preview_size(self, done: int, steps: int) -> int:
        """The render size of the step just done."""
        return self.settings.render_size(max(done - 1, 0), steps)

    def step_memory(self, batch: int, denoiser: int, encode: tuple[int, int, int] = (0, 0, 0)) -> StepMemory:
        return max((self.stage_memory(size, batch, denoiser, encode) for size in self.settings.render_sizes),
                   key=lambda step: step.total)

    def stage_memory(self, size: int, batch: int, denoiser: int, encode: tuple[int, int, int]) -> StepMemory:
        """A step at render size `size` (see `step_memory`)."""
        return with_model_call(nerf_step_memory(dataclasses.replace(self.settings, batch_size=batch), size),
                               denoiser, encode)

    def new_representation(self, latent_format) -> NerfRepresentation:
        latent_rgb = self.latent_rgb if latent_format is None else latent_to_rgb(latent_format)
        return NerfRepresentation(self.settings, latent_rgb=latent_rgb)

    def turntable_estimate(self, elevation: float | None, distance: float | None) -> Callable[[int, int, bool], int]:
        """Once optimised, the samples its occupancy grid skips are counted as such (`queried_share`, probed
        once per size: a refusal's search for the views and the size that fit asks for each many times)."""

        @functools.cache
        def share(size: int) -> float:
            if self.weights is None:
                return 1.0
            return queried_share(self.settings, self.weights, size, elevation, distance)

        def estimate(views: int, size: int, normals: bool) -> int:
            return turntable_bytes(self.settings, views, size, normals, share(size))

        return estimate


def check_nerf(representation) -> NerfState:
    """`representation` if it is a NeRF, else a ValueError for a node's `nerf` input (its socket
    type refuses a canvas when the graph is validated; this catches what reaches it otherwise)."""
    if not isinstance(representation, NerfState):
        raise ValueError("nerf must come from NFSD NeRF Representation through NFSD Optimizer (a latent canvas has no "
                         "views: use NFSD Renderer for it)")
    return representation
