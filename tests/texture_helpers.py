"""Meshes and tiny texture settings for the mesh-texture tests (CPU, seconds)."""

from __future__ import annotations

import torch
import trimesh
from torch import Tensor

from nfsd_core.nerf import BackgroundSettings
from nfsd_core.texture import ColourFieldSettings, TextureSettings

TINY_FIELD = ColourFieldSettings(levels=4, log2_table_size=10, base_resolution=4, finest_resolution=32, hidden_width=16)


def tiny_texture_settings(**overrides) -> TextureSettings:
    """A texture small enough to render 16 x 16 images in milliseconds, seen by a 4x codec at 32 px."""
    values = dict(render_size=16, guidance_size=32, latent_downscale=4, batch_size=2, colour_field=TINY_FIELD,
                  fit_radius=0.5, background=BackgroundSettings(kind="environment"))
    values.update(overrides)
    return TextureSettings(**values)


def icosphere(subdivisions: int = 3, radius: float = 0.5) -> tuple[Tensor, Tensor]:
    """Vertices [N, 3] and faces [F, 3] of an icosphere at the origin."""
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return torch.tensor(mesh.vertices, dtype=torch.float32), torch.tensor(mesh.faces, dtype=torch.int64)


def box(half: float = 0.3) -> tuple[Tensor, Tensor]:
    """The 12 triangles of an axis-aligned cube of half side `half`."""
    mesh = trimesh.creation.box(extents=(2 * half,) * 3)
    return torch.tensor(mesh.vertices, dtype=torch.float32), torch.tensor(mesh.faces, dtype=torch.int64)


def position_colours(vertices: Tensor) -> Tensor:
    """Vertex colours in [0.1, 0.9] that encode position: every face's colour differs."""
    return 0.4 * vertices / vertices.abs().max() + 0.5
