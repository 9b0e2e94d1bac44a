"""Baking the colour field into a UV texture image (and vertex colours) for mesh files.

1. Unwrap: xatlas's charts (optional: `pip install xatlas`; run in a child Python, which Cancel
   kills), or without it one small cell of the atlas per pair of triangles ("per_face": always
   works, instant, coarser, more seams).
2. Rasterise the triangles into texture space (the visibility pass's rasteriser on UV
   coordinates): every texel centre inside a triangle gets the field's colour at that surface
   point. A triangle too small to hold a texel centre writes its centroid's colour into the texel
   under its UV centroid, so every face has its own colour in the image.
3. Fill every other texel (gutters between charts) from the nearest written one, so bilinear
   filtering and mipmaps never reach an unwritten (black) texel: no seams, no holes. The field
   has a colour everywhere, also where no camera looked.

Texture images are RGB [S, S, 3] in [0, 1], row 0 at the top; UVs are OpenGL's (v up), as glTF
files store them after trimesh flips them.
"""

from __future__ import annotations

import io
import math
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from ..budget import Progress
from ..nerf.mesh import Mesh
from ..preview import fit_latent_to_rgb
from .representation import TextureRepresentation
from .visibility import rasterize_triangles

UNWRAPS = ("auto", "xatlas", "per_face")
XATLAS_HINT = "pip install xatlas (or the pack's [mesh] extra)"
# "auto" unwraps larger meshes per face: xatlas took 77 s for 253k faces and had not finished a 508k-face
# mesh after 10 minutes (benchmarks/texture_step.py, one CPU thread), and its unwrap shows no progress.
AUTO_XATLAS_MAX_FACES = 300_000
XATLAS_PADDING = 2  # texels between xatlas charts
CELL_MARGIN = 0.15  # per_face: the share of a cell's side left empty around and between its two triangles


@dataclass
class UVLayout:
    """A mesh cut open and laid out in [0, 1]^2: `vertex` [M] the original vertex of each new one,
    `faces` [F, 3] over the new vertices (face i is the mesh's face i, corners in the same order),
    `uvs` [M, 2] (v up)."""

    vertex: Tensor
    faces: Tensor
    uvs: Tensor


def xatlas_available() -> bool:
    try:
        import xatlas  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_unwrap(unwrap: str, faces: int = 0) -> str:
    """The unwrap that runs for a mesh of `faces` triangles: "auto" is xatlas where installed and the mesh
    has at most AUTO_XATLAS_MAX_FACES, else per_face; "xatlas" without it is refused."""
    if unwrap not in UNWRAPS:
        raise ValueError(f"unknown unwrap {unwrap!r}; choose one of {', '.join(UNWRAPS)}")
    if unwrap == "xatlas" and not xatlas_available():
        raise ValueError(f"the xatlas unwrap needs xatlas, which is not installed: {XATLAS_HINT}, or choose per_face")
    if unwrap == "auto":
        return "xatlas" if xatlas_available() and faces <= AUTO_XATLAS_MAX_FACES else "per_face"
    return unwrap


# xatlas's unwrap, run by a child Python: arrays in on stdin, arrays out on stdout (numpy's .npz), no file.
XATLAS_CHILD = """
import io, sys
import numpy as np
import xatlas
given = np.load(io.BytesIO(sys.stdin.buffer.read()))
atlas = xatlas.Atlas()
atlas.add_mesh(given["vertices"], given["faces"])
pack = xatlas.PackOptions()
pack.resolution, pack.padding, pack.bilinear = int(given["size"]), int(given["padding"]), True
atlas.generate(pack_options=pack)
vertex, faces, uvs = atlas[0]
answer = io.BytesIO()
np.savez(answer, vertex=vertex, faces=faces, uvs=uvs, atlases=np.array(atlas.atlas_count))
sys.stdout.buffer.write(answer.getvalue())
"""
POLL_SECONDS = 0.1  # how often the unwrap's parent checks for an interrupt


def run_child(code: str, request: bytes, check_interrupt: Callable[[], None] | None) -> bytes:
    """stdout of `python -c code` given `request` on stdin; `check_interrupt` is called every POLL_SECONDS
    while it runs, and the child is killed when it raises (or on any other exit)."""
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    answer: dict[str, bytes] = {}
    talk = threading.Thread(target=lambda: answer.update(zip(("out", "err"), child.communicate(request))), daemon=True)
    talk.start()
    try:
        while talk.is_alive():
            if check_interrupt is not None:
                check_interrupt()
            talk.join(POLL_SECONDS)
    finally:
        if child.poll() is None:
            child.kill()
        talk.join()
    if child.returncode != 0:
        raise RuntimeError(f"the unwrap failed (exit status {child.returncode}): "
                           f"{answer.get('err', b'').decode(errors='replace')[-2000:]}")
    return answer["out"]


def xatlas_layout(vertices: Tensor, faces: Tensor, size: int,
                  check_interrupt: Callable[[], None] | None = None) -> UVLayout:
    """xatlas's charts of the mesh, packed into one atlas for a size x size texture. xatlas cannot be
    interrupted and takes minutes on meshes of 100k+ faces, so it runs in a child Python that is
    killed when `check_interrupt` raises."""
    request = io.BytesIO()
    np.savez(request, vertices=vertices.numpy().astype(np.float32), faces=faces.numpy().astype(np.uint32),
             size=np.array(size), padding=np.array(XATLAS_PADDING))
    answer = np.load(io.BytesIO(run_child(XATLAS_CHILD, request.getvalue(), check_interrupt)))
    if int(answer["atlases"]) != 1:
        raise ValueError(f"xatlas needed {int(answer['atlases'])} images for this mesh at {size} px: use a larger "
                         "texture_size, or the per_face unwrap")
    return UVLayout(torch.from_numpy(answer["vertex"].astype(np.int64)), torch.from_numpy(answer["faces"].astype(np.int64)),
                    torch.from_numpy(answer["uvs"].astype(np.float32)))


def per_face_layout(faces: Tensor) -> UVLayout:
    """Each pair of triangles in its own square cell of a grid: triangle 2k in the cell's lower-left
    half, 2k + 1 in its upper-right half, CELL_MARGIN apart."""
    count = len(faces)
    side = math.ceil(math.sqrt(math.ceil(count / 2)))
    cell = torch.arange(count) // 2
    corner = torch.stack([cell % side, cell // side], dim=-1).float()  # [F, 2] in cells
    low, high = CELL_MARGIN, 1.0 - CELL_MARGIN
    lower = torch.tensor([[low, low], [high - CELL_MARGIN, low], [low, high - CELL_MARGIN]])
    upper = torch.tensor([[high, high], [low + CELL_MARGIN, high], [high, low + CELL_MARGIN]])
    local = torch.where((torch.arange(count) % 2 == 0).view(-1, 1, 1), lower, upper)  # [F, 3, 2]
    uvs = (corner.unsqueeze(1) + local) / side
    return UVLayout(faces.reshape(-1), torch.arange(3 * count).view(count, 3), uvs.reshape(-1, 2))


def unwrap_mesh(vertices: Tensor, faces: Tensor, size: int, unwrap: str = "auto",
                check_interrupt: Callable[[], None] | None = None) -> UVLayout:
    """The UV layout of a mesh (vertices [N, 3], faces [F, 3], CPU) for a size x size texture."""
    if resolve_unwrap(unwrap, len(faces)) == "xatlas":
        return xatlas_layout(vertices, faces, size, check_interrupt)
    return per_face_layout(faces)


def texel_faces(layout: UVLayout, size: int,
                check_interrupt: Callable[[], None] | None = None) -> tuple[Tensor, Tensor]:
    """The face [S * S] (-1: none) and barycentrics (u, v) [S * S, 2] of each texel of a size x size
    texture: texel centres inside a triangle, then the centroid texel of each triangle holding none
    (`check_interrupt`: called between chunks of the rasteriser's work)."""
    texel_x = layout.uvs[:, 0] * size
    texel_y = (1.0 - layout.uvs[:, 1]) * size
    corners = layout.faces
    face, barycentric, _ = rasterize_triangles(texel_x[corners], texel_y[corners], torch.ones(corners.shape),
                                               size, size, check_interrupt=check_interrupt)
    barycentric = barycentric[:, 1:]
    seen = torch.zeros(len(corners), dtype=torch.bool)
    seen[face[face >= 0]] = True
    unseen = (~seen).nonzero().squeeze(-1)
    column = texel_x[corners[unseen]].mean(-1).floor().long().clamp(0, size - 1)
    row = texel_y[corners[unseen]].mean(-1).floor().long().clamp(0, size - 1)
    texel = row * size + column
    free = face[texel] < 0
    face[texel[free]] = unseen[free]
    barycentric[texel[free]] = 1.0 / 3.0
    return face, barycentric


def fill_from_nearest(image: Tensor, written: Tensor) -> Tensor:
    """`image` [S, S, C] with every texel where `written` [S, S] is False replaced by the nearest written one."""
    from scipy.ndimage import distance_transform_edt

    if written.all():
        return image
    _, (rows, columns) = distance_transform_edt(~written.numpy(), return_indices=True)
    return image[torch.from_numpy(rows), torch.from_numpy(columns)]


@torch.no_grad()
def bake_texture(texture: TextureRepresentation, vertices: Tensor, size: int = 1024, unwrap: str = "auto",
                 progress: Progress | None = None) -> Mesh:
    """The mesh `vertices` [N, 3] (its own frame, e.g. the y-up file it came from; the same vertices,
    in the same order, as `texture.surface`) cut along its UV seams, with `uvs`, the baked `texture`
    [size, size, 3] and the field's `colours` at its vertices. `progress(done, 4)` follows the four
    stages (unwrap, rasterise, colour, fill) and may raise to stop."""
    if size < 8:
        raise ValueError(f"texture size must be at least 8 px, got {size}")
    surface = texture.surface
    if len(vertices) != len(surface.vertices):
        raise ValueError(f"the mesh has {len(vertices)} vertices but the texture was made for "
                         f"{len(surface.vertices)}")

    def advance(stage: int) -> None:
        if progress is not None:
            progress(stage, 4)

    layout = unwrap_mesh(vertices.float(), surface.faces, size, unwrap, texture.check_interrupt)
    advance(1)
    face, barycentric = texel_faces(layout, size, texture.check_interrupt)
    advance(2)
    written = face >= 0
    colour = texture.surface_colour(face[written].to(texture.device), barycentric[written].to(texture.device))
    vertex_colour = texture.vertex_colour()
    to_rgb = texel_rgb(texture)
    image = torch.zeros(size * size, 3)
    image[written] = to_rgb(colour).cpu()
    advance(3)
    image = fill_from_nearest(image.view(size, size, 3), written.view(size, size))
    advance(4)
    return Mesh(vertices[layout.vertex].float(), layout.faces, to_rgb(vertex_colour).cpu()[layout.vertex],
                uvs=layout.uvs, texture=image)


def texel_rgb(texture: TextureRepresentation):
    """Colours [P, C] -> RGB [P, 3] in [0, 1]: clamped, or latents through a linear map (the
    texture's own, else one fitted to its codec), one latent pixel at a time."""
    if not texture.latent_colour:
        return lambda colour: colour.clamp(0.0, 1.0)
    latent_rgb = texture.latent_rgb
    if latent_rgb is None:
        if texture.codec is None:
            raise ValueError("a latent texture needs a latent_rgb map (nfsd_core.preview) or a codec to be baked")
        latent_rgb = fit_latent_to_rgb(texture.codec)
    return lambda colour: latent_rgb(colour[:, :, None, None])[:, :, 0, 0]
