"""Meshes from the NeRF: marching cubes on its density, vertex colours from its colour field.

The density is sampled on a resolution^3 grid over the bounding box (chunked queries), the
isosurface at `threshold` is extracted with scikit-image, components with less than
`min_component` of the faces are dropped (floaters), and every vertex is coloured by the colour
field (latent colours through a linear map, `nfsd_core.preview.LatentToRGB`). Vertices are
converted from the NeRF's z-up frame to glTF's y-up frame (the front, +x in the NeRF, becomes
+z) unless asked not to. Files are written by trimesh.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import trimesh
from PIL import Image
from skimage.measure import marching_cubes
from torch import Tensor
from trimesh.visual import TextureVisuals
from trimesh.visual.material import PBRMaterial

from ..budget import SAMPLE_CHUNK, Progress
from ..preview import LatentToRGB, fit_latent_to_rgb
from .representation import NerfRepresentation

# threestudio's "auto" isosurface threshold: the mean of the density where it exceeds this.
AUTO_MIN_DENSITY = 1e-5
MESH_FORMATS = ("glb", "obj", "ply")
COLOUR_OUTPUTS = ("texture", "vertex colours")  # what a file of a textured mesh carries (PLY: vertex colours)
QUERY_CHUNK = SAMPLE_CHUNK


@dataclass
class Mesh:
    """A triangle mesh: `vertices` float32 [N, 3], `faces` int64 [M, 3] (counter-clockwise seen
    from outside), `colours` float32 [N, 3] in [0, 1] or None (an uncoloured mesh); a textured mesh
    also has `uvs` float32 [N, 2] (OpenGL's: v up) and its `texture` image float32 [H, W, 3] in
    [0, 1] (row 0 at the top); CPU tensors."""

    vertices: Tensor
    faces: Tensor
    colours: Tensor | None = None
    uvs: Tensor | None = None
    texture: Tensor | None = None

    @property
    def textured(self) -> bool:
        return self.uvs is not None and self.texture is not None

    def to_trimesh(self, colours: str = "texture", name: str = "texture") -> trimesh.Trimesh:
        """The trimesh mesh, coloured by its texture (a PBR material named `name`, not metallic) when
        it has one and `colours` is "texture", else by its vertex colours (a file holds one or the
        other: glTF multiplies a texture by vertex colours); a textured mesh without vertex colours
        gives its texture's colour at each vertex."""
        if colours not in COLOUR_OUTPUTS:
            raise ValueError(f"colours must be one of {', '.join(COLOUR_OUTPUTS)}, got {colours!r}")
        if self.textured and (colours == "texture" or self.colours is None):
            image = Image.fromarray((self.texture.clamp(0, 1) * 255).round().to(torch.uint8).numpy())
            material = PBRMaterial(name=name, baseColorTexture=image, metallicFactor=0.0, roughnessFactor=1.0)
            textured = trimesh.Trimesh(self.vertices.numpy(), self.faces.numpy(), process=False,
                                       visual=TextureVisuals(uv=self.uvs.numpy(), material=material))
            if colours == "vertex colours":
                textured.visual = textured.visual.to_color()
            return textured
        vertex_colors = None if self.colours is None else (
            (self.colours.clamp(0, 1) * 255).round().to(torch.uint8).numpy())
        return trimesh.Trimesh(self.vertices.numpy(), self.faces.numpy(), vertex_colors=vertex_colors, process=False)


def z_up_to_y_up(points: Tensor) -> Tensor:
    """(x, y, z) in the NeRF frame (z up, front +x) to (y, z, x): y up, front +z (a rotation)."""
    return points[..., [1, 2, 0]]


def grid_points(axis: Tensor, start: int, stop: int) -> Tensor:
    """Points [stop - start, 3] number start..stop-1 of the grid axis^3, in (x, y, z) "ij" order."""
    index = torch.arange(start, stop, device=axis.device)
    size = axis.shape[0]
    return torch.stack([axis[index // (size * size)], axis[index // size % size], axis[index % size]], dim=-1)


@torch.no_grad()
def density_grid(nerf: NerfRepresentation, resolution: int, chunk: int = QUERY_CHUNK,
                 progress: Progress | None = None) -> Tensor:
    """Density [R, R, R] (indexed x, y, z) at the vertices of a grid spanning [-radius, radius]^3.

    The points are made and queried `chunk` at a time (never the whole grid at once), with
    `progress(chunks done, chunks)` after each.
    """
    radius = nerf.settings.radius
    axis = torch.linspace(-radius, radius, resolution, device=nerf.device)
    total = resolution**3
    density = torch.empty(total)
    chunks = -(-total // chunk)
    for index, start in enumerate(range(0, total, chunk)):
        stop = min(start + chunk, total)
        density[start:stop] = nerf.field.density(grid_points(axis, start, stop)).float().cpu()
        if progress is not None:
            progress(index + 1, chunks)
    return density.reshape(resolution, resolution, resolution)


def isosurface_threshold(density: Tensor, threshold: float | str) -> float:
    """`threshold` itself, or for "auto" the mean density where it exceeds 1e-5 (threestudio)."""
    if threshold == "auto":
        occupied = density[density > AUTO_MIN_DENSITY]
        if occupied.numel() == 0:
            raise ValueError("the NeRF is empty (no density anywhere): nothing to mesh")
        return float(occupied.mean())
    if isinstance(threshold, str):
        raise ValueError(f"threshold must be a number or 'auto', got {threshold!r}")
    return float(threshold)


def keep_large_components(mesh: trimesh.Trimesh, min_component: float) -> trimesh.Trimesh:
    """Drop connected components with fewer than `min_component` x (all faces) faces."""
    if min_component <= 0 or len(mesh.faces) == 0:
        return mesh
    components = trimesh.graph.connected_components(mesh.face_adjacency, nodes=np.arange(len(mesh.faces)))
    keep = np.zeros(len(mesh.faces), dtype=bool)
    for component in components:
        if len(component) >= min_component * len(mesh.faces):
            keep[component] = True
    mesh.update_faces(keep)
    mesh.remove_unreferenced_vertices()
    return mesh


@torch.no_grad()
def vertex_colours(
    nerf: NerfRepresentation, vertices: Tensor, latent_rgb: LatentToRGB | None, chunk: int = QUERY_CHUNK
) -> Tensor:
    """RGB [N, 3] in [0, 1] of the colour field at `vertices` [N, 3] (NeRF frame).

    Latent colours go through `latent_rgb`, else the NeRF's own map, else one fitted to its codec.
    """
    if nerf.latent_colour:
        latent_rgb = latent_rgb or nerf.latent_rgb
        if latent_rgb is None and nerf.codec is None:
            raise ValueError("a latent NeRF needs a latent_rgb map (nfsd_core.preview) or a codec to colour a mesh")
        latent_rgb = latent_rgb or fit_latent_to_rgb(nerf.codec)
    points = vertices.to(nerf.device)
    colour = torch.cat([nerf.field.colour(points[i : i + chunk]) for i in range(0, points.shape[0], chunk)])
    if nerf.latent_colour:
        return latent_rgb(colour[:, :, None, None])[:, :, 0, 0].float().cpu()  # each vertex as a 1x1 latent
    return colour.clamp(0.0, 1.0).float().cpu()


def extract_mesh(
    nerf: NerfRepresentation,
    resolution: int = 128,
    threshold: float | str = "auto",
    min_component: float = 0.01,
    latent_rgb: LatentToRGB | None = None,
    y_up: bool = True,
    chunk: int = QUERY_CHUNK,
    progress: Progress | None = None,
) -> Mesh:
    """The isosurface density == `threshold` of `nerf` on a `resolution`^3 grid.

    "auto" (the default) adapts to the run; threestudio's fixed default for NeRFs is 25.
    `progress` follows the density queries (see `density_grid`), the long part.
    """
    if resolution < 8:
        raise ValueError(f"mesh resolution must be at least 8, got {resolution}")
    density = density_grid(nerf, resolution, chunk, progress)
    level = isosurface_threshold(density, threshold)
    low, high = float(density.min()), float(density.max())
    if not low < level < high:
        raise ValueError(
            f"no surface at threshold {level:g}: the density ranges over [{low:g}, {high:g}]; "
            "choose a threshold inside that range or 'auto'"
        )
    radius = nerf.settings.radius
    spacing = 2.0 * radius / (resolution - 1)
    # "ascent": the density grows inwards, so faces wind counter-clockwise seen from outside
    vertices, faces, _, _ = marching_cubes(
        density.numpy(), level=level, spacing=(spacing,) * 3, gradient_direction="ascent"
    )
    mesh = trimesh.Trimesh(vertices - radius, faces, process=False)
    mesh = keep_large_components(mesh, min_component)
    vertices = torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32)
    colours = vertex_colours(nerf, vertices, latent_rgb, chunk)
    faces = torch.as_tensor(np.asarray(mesh.faces), dtype=torch.int64)
    return Mesh(z_up_to_y_up(vertices) if y_up else vertices, faces, colours)


def export_mesh(mesh: Mesh, path: str | Path, file_format: str | None = None, colours: str = "texture") -> Path:
    """Write `mesh` as GLB, OBJ or PLY (from the suffix unless given): with its texture when it has one
    and `colours` is "texture" (GLB: embedded; OBJ: beside it, `<stem>.mtl` and `<stem>.png`; PLY
    holds none and gets the vertex colours), else with its vertex colours."""
    path = Path(path)
    file_format = (file_format or path.suffix.lstrip(".")).lower()
    if file_format not in MESH_FORMATS:
        raise ValueError(f"mesh format must be one of {', '.join(MESH_FORMATS)}, got {file_format!r} (from {path})")
    if len(mesh.faces) == 0:
        raise ValueError("the mesh has no faces; nothing to export")
    path.parent.mkdir(parents=True, exist_ok=True)
    textured = colours == "texture" and mesh.textured and file_format != "ply"
    exported = mesh.to_trimesh(colours if textured else "vertex colours", name=path.stem)
    if textured and file_format == "obj":
        text, files = trimesh.exchange.obj.export_obj(exported, return_texture=True, mtl_name=f"{path.stem}.mtl")
        for name, data in files.items():  # the material and its image, named after the OBJ
            (path.parent / name).write_bytes(data)
        path.write_text(text)
        return path
    exported.export(str(path), file_type=file_format)
    return path
