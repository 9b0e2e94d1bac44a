"""ComfyUI's core MESH <-> nfsd_core's `Mesh`.

ComfyUI 0.3.6x's MESH holds `vertices` [B, N, 3] and `faces` [B, F, 3] only; newer releases widen
it with optional `uvs` [B, N, 2], `vertex_colors` [B, N, 3 or 4] and `texture` [B, H, W, 3], which
their Save GLB and Preview 3D show. The pack's meshes pass those fields to the constructor where
the running ComfyUI's MESH class takes them (read from its signature, not assumed from a
version), and always carry them as attributes, which NFSD Save Mesh writes on any ComfyUI. A
textured mesh carries its UVs (in glTF's convention, as core Save GLB writes them) and texture, an
untextured one its vertex colours.
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor

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


def flip_v(uvs: Tensor) -> Tensor:
    """UVs [..., 2] between OpenGL's convention (v up: nfsd_core's Mesh, trimesh) and glTF's (v down:
    the MESH's `uvs`, which core Save GLB writes as they are); its own inverse."""
    return torch.stack([uvs[..., 0], 1.0 - uvs[..., 1]], dim=-1)


def core_mesh(mesh: Mesh, mesh_class=None):
    """ComfyUI's MESH of one nfsd_core Mesh, a batch of one: a textured mesh as `uvs` (glTF's convention)
    and `texture`, an untextured one with its vertex colours as `vertex_colors` (never both: glTF
    multiplies a texture by vertex colours). See the module doc."""
    mesh_class = mesh_class or CoreMesh
    optional = {"uvs": flip_v(mesh.uvs), "texture": mesh.texture} if mesh.textured else {"vertex_colors": mesh.colours}
    optional = {name: None if value is None else value[None] for name, value in optional.items()}
    taken = accepted_fields(mesh_class)
    batch = mesh_class(vertices=mesh.vertices[None], faces=mesh.faces[None],
                       **{name: value for name, value in optional.items() if name in taken and value is not None})
    for name in OPTIONAL_FIELDS:
        setattr(batch, name, optional.get(name))
    return batch


def meshes_of(batch) -> list[Mesh]:
    """The nfsd_core Meshes of a core MESH batch, coloured where it has `vertex_colors` [B, N, 3 or 4]
    (float in [0, 1] or uint8), textured where it has `uvs` and `texture`; a padded batch is cut to
    its `vertex_counts` and `face_counts`."""
    colours, uvs, texture = (getattr(batch, name, None) for name in ("vertex_colors", "uvs", "texture"))
    vertex_counts, face_counts = getattr(batch, "vertex_counts", None), getattr(batch, "face_counts", None)
    meshes = []
    for index in range(batch.vertices.shape[0]):
        vertices, faces = batch.vertices[index], batch.faces[index]
        if vertex_counts is not None and face_counts is not None:
            vertices, faces = vertices[:int(vertex_counts[index])], faces[:int(face_counts[index])]
        count = len(vertices)
        vertex_colours = None
        if colours is not None:
            vertex_colours = colours[index, :count, :3].float().cpu()
            if colours.dtype == torch.uint8:
                vertex_colours = vertex_colours / 255.0
        textured = uvs is not None and texture is not None
        meshes.append(Mesh(vertices.float().cpu(), faces.long().cpu(), vertex_colours,
                           uvs=flip_v(uvs[index, :count].float().cpu()) if textured else None,
                           texture=texture[index, ..., :3].float().cpu() if textured else None))
    return meshes
