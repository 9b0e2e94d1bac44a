"""ComfyUI's core MESH <-> nfsd_core's `Mesh`.

ComfyUI 0.3.6x's MESH holds `vertices` [B, N, 3] and `faces` [B, F, 3] only; newer releases widen
it with optional `uvs` [B, N, 2], `vertex_colors` [B, N, 3 or 4] and `texture` [B, H, W, 3], which
their Save GLB and Preview 3D show. The pack's meshes pass those fields to the constructor where
the running ComfyUI's MESH class takes them (read from its signature, not assumed from a
version), and always carry them as attributes, which NFSD Save Mesh writes on any ComfyUI.
"""

from __future__ import annotations

import inspect

import torch

from ...nfsd_core.nerf import Mesh

try:  # newer ComfyUI: the MESH type of the V3 API, with optional colours, UVs and texture
    from comfy_api.latest._util.geometry_types import MESH as CoreMesh
except ImportError:  # ComfyUI up to 0.3.6x: vertices and faces only
    from comfy_extras.nodes_hunyuan3d import MESH as CoreMesh

OPTIONAL_FIELDS = ("uvs", "vertex_colors", "texture")


def accepted_fields(mesh_class=None) -> set[str]:
    """The optional fields (of OPTIONAL_FIELDS) that `mesh_class`'s constructor takes (default: CoreMesh)."""
    parameters = inspect.signature((mesh_class or CoreMesh).__init__).parameters
    return {name for name in OPTIONAL_FIELDS if name in parameters}


def core_mesh(mesh: Mesh, mesh_class=None):
    """ComfyUI's MESH of one nfsd_core Mesh: a batch of one, its vertex colours as `vertex_colors`, a
    texture as `uvs` and `texture` (see the module doc)."""
    mesh_class = mesh_class or CoreMesh
    optional = {"vertex_colors": mesh.colours, "uvs": mesh.uvs if mesh.textured else None,
                "texture": mesh.texture if mesh.textured else None}
    optional = {name: None if value is None else value[None] for name, value in optional.items()}
    taken = accepted_fields(mesh_class)
    batch = mesh_class(vertices=mesh.vertices[None], faces=mesh.faces[None],
                       **{name: value for name, value in optional.items() if name in taken and value is not None})
    for name, value in optional.items():
        setattr(batch, name, value)
    return batch


def meshes_of(batch) -> list[Mesh]:
    """The nfsd_core Meshes of a core MESH batch, coloured where it has `vertex_colors` [B, N, 3 or 4]
    (float in [0, 1] or uint8), textured where it has `uvs` and `texture`."""
    colours, uvs, texture = (getattr(batch, name, None) for name in ("vertex_colors", "uvs", "texture"))
    meshes = []
    for index in range(batch.vertices.shape[0]):
        vertex_colours = None
        if colours is not None:
            vertex_colours = colours[index, :, :3].float().cpu()
            if colours.dtype == torch.uint8:
                vertex_colours = vertex_colours / 255.0
        textured = uvs is not None and texture is not None
        meshes.append(Mesh(batch.vertices[index].float().cpu(), batch.faces[index].long().cpu(), vertex_colours,
                           uvs=uvs[index].float().cpu() if textured else None,
                           texture=texture[index, ..., :3].float().cpu() if textured else None))
    return meshes
