"""`TextureState`: a texture on a fixed mesh as it travels on an NFSD_TEXTURE socket.

It holds the mesh as it came (y-up vertices, faces, the vertex colours it starts from), the
texture's settings and, once optimised, its weights on the CPU (see `rendered.RenderedState`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from ...nfsd_core import StepMemory, bake_bytes, texture_step_memory, texture_turntable_bytes
from ...nfsd_core.texture import Surface, TextureRepresentation, TextureSettings
from ..adapters.preview import latent_to_rgb
from .rendered import RenderedState, with_model_call

PREVIEW_SIZE = 256  # the Optimizer's previews are at most this many pixels per side


@dataclass(frozen=True, eq=False)  # compared by identity: it holds tensors
class TextureState(RenderedState):
    """A mesh texture: the mesh (`vertices` [N, 3] y up, `faces` [F, 3], start `colours` [N, 3] or
    None), its settings, and the fields of every `RenderedState`."""

    settings: TextureSettings
    vertices: Tensor
    faces: Tensor
    colours: Tensor | None = None

    socket_type = "NFSD_TEXTURE"
    noun = "mesh texture"
    node_name = "NFSD Mesh Texture"
    elevation_setting = 'NFSD Mesh Texture\'s advanced {"cameras": {"elevation_range": [-10, 45]}}'

    @property
    def view_size(self) -> int:
        return self.settings.render_size

    def preview_size(self, done: int, steps: int) -> int:
        return min(self.settings.render_size, PREVIEW_SIZE)

    def surface(self) -> Surface:
        """The mesh as the cameras see it (checked, turned z up, fitted)."""
        return Surface.from_mesh(self.vertices, self.faces, self.colours, self.settings.front, self.settings.fit_radius)

    def step_memory(self, batch: int, denoiser: int, encode: tuple[int, int, int] = (0, 0, 0)) -> StepMemory:
        own = texture_step_memory(dataclasses.replace(self.settings, batch_size=batch), len(self.faces),
                                  len(self.vertices))
        return with_model_call(own, denoiser, encode)

    def new_representation(self, latent_format) -> TextureRepresentation:
        latent_rgb = self.latent_rgb if latent_format is None else latent_to_rgb(latent_format)
        return TextureRepresentation(self.surface(), self.settings, latent_rgb=latent_rgb)

    def turntable_estimate(self, elevation: float | None, distance: float | None) -> Callable[[int, int, bool], int]:
        """The same wherever the camera is (and a mesh has no normals to render)."""
        return lambda views, size, normals: texture_turntable_bytes(self.settings, views, size, len(self.faces),
                                                                     len(self.vertices))

    def bake_bytes(self, size: int) -> int:
        return bake_bytes(self.settings, size, len(self.faces), len(self.vertices))


def check_texture(representation) -> TextureState:
    """`representation` if it is a mesh texture, else a ValueError for a node's `texture` input."""
    if not isinstance(representation, TextureState):
        raise ValueError("texture must come from NFSD Mesh Texture through NFSD Optimizer")
    return representation
