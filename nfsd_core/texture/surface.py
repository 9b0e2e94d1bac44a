"""The fixed mesh a texture is optimised on: checked, turned into the renderer's frame, digested.

Meshes arrive in glTF's convention (y up; the pack's NeRF meshes face +z, and so do most
generators' and scanners' meshes) and are rendered in the NeRF's frame (z up, front +x, see
`nfsd_core.nerf.cameras`), so the same cameras, view names and view prompts apply. `front` names
the axis the mesh's front faces when it is not +z. With `fit_radius` > 0 the mesh is centred (its
bounding box) and scaled so that its farthest vertex lies `fit_radius` from the centre; 0 keeps
it where it is (e.g. the shapes prior's objects, which already sit where its cameras look).
Only the render sees the moved mesh: the textured mesh keeps the vertices it came with.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

FRONTS = ("+z", "-z", "+x", "-x")
MAX_FACES = 2**22  # 4.2M triangles; Hunyuan3D-style meshes have 100k to 500k
MAX_VERTICES = 3 * MAX_FACES
MESH_FILE_SUFFIXES = (".glb", ".gltf", ".obj", ".ply", ".stl", ".off")


def check_mesh(vertices: Tensor, faces: Tensor, colours: Tensor | None = None,
               what: str = "the mesh") -> tuple[Tensor, Tensor, Tensor | None]:
    """`vertices` float32 [N, 3], `faces` int64 [F, 3] and `colours` float32 [N, 3] in [0, 1] (or None),
    or a ValueError naming what is wrong with them: empty, too large, NaN or infinite vertices, face
    indices that are not whole numbers or point past the vertices, no triangle of any area.
    Nothing of the mesh's size is allocated before its sizes are checked."""
    if vertices.dim() != 2 or vertices.shape[-1] != 3 or faces.dim() != 2 or faces.shape[-1] != 3:
        raise ValueError(f"{what} must have vertices [N, 3] and faces [F, 3], got {list(vertices.shape)} and "
                         f"{list(faces.shape)}")
    if len(faces) == 0 or len(vertices) == 0:
        raise ValueError(f"{what} is empty ({len(vertices)} vertices, {len(faces)} faces): nothing to texture")
    if len(faces) > MAX_FACES or len(vertices) > MAX_VERTICES:
        raise ValueError(f"{what} has {len(faces)} faces and {len(vertices)} vertices, more than the {MAX_FACES} faces "
                         f"and {MAX_VERTICES} vertices NFSD textures: simplify (decimate) it first")
    vertices = vertices.detach().float().cpu()
    if not torch.isfinite(vertices).all():
        raise ValueError(f"{what} has NaN or infinite vertex coordinates: repair or re-export it")
    faces = faces.detach().cpu()
    if faces.is_floating_point():
        if not (torch.isfinite(faces).all() and torch.equal(faces, faces.round())):
            raise ValueError(f"{what}'s face indices are not whole numbers: repair or re-export it")
    faces = faces.long()
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise ValueError(f"{what}'s faces index vertices {int(faces.min())} to {int(faces.max())}, but it has "
                         f"{len(vertices)} vertices (0 to {len(vertices) - 1}): repair or re-export it")
    if not (face_areas(vertices, faces) > 0).any():
        raise ValueError(f"{what} has no triangle of any area (every face is degenerate): nothing to texture")
    if colours is not None:
        if colours.shape[0] != len(vertices) or colours.dim() != 2 or colours.shape[1] not in (3, 4):
            raise ValueError(f"{what}'s vertex colours must be [N, 3 or 4] for its {len(vertices)} vertices, got "
                             f"{list(colours.shape)}")
        colours = colours[:, :3].detach().float().cpu()
        if not torch.isfinite(colours).all():
            raise ValueError(f"{what}'s vertex colours hold NaN or infinite values")
        colours = colours.clamp(0.0, 1.0)
    return vertices, faces, colours


def face_areas(vertices: Tensor, faces: Tensor) -> Tensor:
    """Areas [F] of the triangles."""
    corners = vertices[faces]
    return 0.5 * torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]).norm(dim=-1)


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Unit normals [N, 3]: the area-weighted sum of the normals of the faces around each vertex."""
    corners = vertices[faces]
    weighted = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])  # length 2 x area
    normals = torch.zeros_like(vertices).index_add_(0, faces.reshape(-1), weighted.repeat_interleave(3, dim=0))
    return F.normalize(normals, dim=-1)


def y_up_to_renderer(points: Tensor, front: str = "+z") -> Tensor:
    """Points [..., 3] from glTF's frame (y up, front `front`) to the renderer's (z up, front +x)."""
    if front not in FRONTS:
        raise ValueError(f"front must be one of {', '.join(FRONTS)}, got {front!r}")
    x, y, z = points.unbind(-1)
    turned = {"+z": (x, z), "-z": (-x, -z), "+x": (-z, x), "-x": (z, -x)}[front]  # (x, z) with the front on +z
    return torch.stack([turned[1], turned[0], y], dim=-1)  # the inverse of nerf.mesh.z_up_to_y_up


def fitted(points: Tensor, fit_radius: float) -> Tensor:
    """`points` [N, 3] centred on their bounding box and scaled to a farthest distance of `fit_radius`
    (0: unchanged)."""
    if fit_radius == 0:
        return points
    centre = (points.amin(0) + points.amax(0)) / 2
    extent = (points - centre).norm(dim=-1).max().clamp_min(1e-12)
    return (points - centre) * (fit_radius / extent)


def mesh_digest(*tensors: Tensor | None) -> str:
    """SHA-256 of the tensors' bytes (None counts as absent): the mesh in a run's identity."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(b"none" if tensor is None else f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        if tensor is not None:
            digest.update(tensor.contiguous().view(torch.uint8).reshape(-1).numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True, eq=False)
class Surface:
    """A mesh in the renderer's frame: `vertices` [N, 3] float32, `faces` [F, 3] int64, unit
    `normals` [N, 3] and the start `colours` [N, 3] in [0, 1] or None; CPU tensors."""

    vertices: Tensor
    faces: Tensor
    normals: Tensor
    colours: Tensor | None = None

    @classmethod
    def from_mesh(cls, vertices: Tensor, faces: Tensor, colours: Tensor | None = None, front: str = "+z",
                  fit_radius: float = 0.0) -> "Surface":
        """The renderer's view of a y-up mesh (checked by `check_mesh`)."""
        vertices, faces, colours = check_mesh(vertices, faces, colours)
        placed = fitted(y_up_to_renderer(vertices, front), fit_radius)
        return cls(placed, faces, vertex_normals(placed, faces), colours)

    @property
    def radius(self) -> float:
        """The distance of the farthest vertex from the origin (where the cameras look)."""
        return float(self.vertices.norm(dim=-1).max())

    def digest(self) -> str:
        return mesh_digest(self.vertices, self.faces, self.colours)


MAX_MESH_FILE_BYTES = 2**30  # 1 GiB: a mesh file larger than this is refused before it is read


def load_mesh_file(path: str | Path) -> tuple[Tensor, Tensor, Tensor | None]:
    """Vertices [N, 3], faces [F, 3] and vertex colours [N, 3] in [0, 1] (or None) of a GLB, glTF,
    OBJ, PLY, STL or OFF file, its parts joined into one mesh (trimesh; a texture becomes vertex
    colours), checked by `check_mesh`. Refuses other suffixes and files over MAX_MESH_FILE_BYTES."""
    import trimesh

    path = Path(path)
    if path.suffix.lower() not in MESH_FILE_SUFFIXES:
        raise ValueError(f"{path.name}: NFSD reads meshes from {', '.join(MESH_FILE_SUFFIXES)} files")
    if not path.is_file():
        raise ValueError(f"{path.name}: no such mesh file")
    if path.stat().st_size > MAX_MESH_FILE_BYTES:
        raise ValueError(f"{path.name} is {path.stat().st_size / 2**30:.1f} GB, more than the "
                         f"{MAX_MESH_FILE_BYTES / 2**30:.0f} GB mesh files NFSD reads: simplify (decimate) it first")
    try:
        mesh = trimesh.load(str(path), force="mesh", process=False)
    except Exception as error:  # trimesh raises many kinds on a malformed file
        raise ValueError(f"{path.name} is not a mesh file trimesh can read ({type(error).__name__}: {error})") from None
    if not isinstance(mesh, trimesh.Trimesh):
        raise ValueError(f"{path.name} holds no triangle mesh (a point cloud or an empty scene)")
    colours = None
    if mesh.visual.kind == "texture":
        mesh.visual = mesh.visual.to_color()
    if mesh.visual.kind == "vertex":
        colours = torch.from_numpy(np.asarray(mesh.visual.vertex_colors[:, :3], dtype=np.float32) / 255.0)
    vertices = torch.from_numpy(np.asarray(mesh.vertices, dtype=np.float32))
    faces = torch.from_numpy(np.asarray(mesh.faces, dtype=np.int64))
    return check_mesh(vertices, faces, colours, what=path.name)
