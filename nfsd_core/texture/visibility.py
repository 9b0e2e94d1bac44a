"""Which triangle each pixel sees, and where on it: the visibility pass of a fixed mesh.

The geometry never changes and is never differentiated, so this runs without gradient and its
result (`Hits`) can be cached per camera. Two backends give the same answer for the same
cameras (pixel centres as in `nfsd_core.nerf.rays`):

- "torch": a rasteriser in plain PyTorch (any device, nothing to install). Each triangle is
  projected, the pixel centres inside its screen bounding box are enumerated, tested against its
  edges and given perspective-correct barycentrics, and a z-buffer keeps the nearest one: the
  camera depth's float bits and the face index packed into one int64, reduced with
  `scatter_reduce(amin)` (equal depths go to the lower face index). Work grows with the pixels the
  triangles cover, not with pixels x triangles, and is done `pair_budget` (pixel, triangle) pairs
  at a time.
- "embree": Intel Embree's ray casting through `embreex` (CPU; optional: `pip install embreex`).

Triangles are two-sided (no culling): meshes from scans and generators do not always wind their
faces consistently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ..nerf.cameras import Cameras
from ..nerf.rays import camera_rays

VISIBILITY_BACKENDS = ("auto", "torch", "embree")
NEAR = 1e-4  # triangles with a vertex closer to the camera plane than this are not drawn (cameras stay outside)
PAIR_BUDGET = 2**20  # (pixel, triangle) candidates tested at once by the torch rasteriser, ~100 bytes each
FACE_BITS = 32
EMBREE_HINT = "pip install embreex (or the pack's [mesh] extra)"


@dataclass
class Hits:
    """What each pixel of B images of H x W sees: `face` [B, H, W] int64, the triangle's index or -1
    for nothing; `barycentric` [B, H, W, 2] (u, v): the point is (1 - u - v) v0 + u v1 + v v2 of its
    triangle; `depth` [B, H, W], the distance along the pixel's ray (0 where nothing is hit)."""

    face: Tensor
    barycentric: Tensor
    depth: Tensor

    @property
    def covered(self) -> Tensor:
        return self.face >= 0

    def to(self, device: torch.device | str) -> "Hits":
        return Hits(self.face.to(device), self.barycentric.to(device), self.depth.to(device))

    def compact(self) -> "Hits":
        """The same hits in int32 face indices (12 bytes a pixel with the rest), for caching."""
        return Hits(self.face.int(), self.barycentric, self.depth)


def embree_available() -> bool:
    try:
        import embreex  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """The backend that runs: "auto" is Embree for meshes on the CPU where embreex is installed,
    else the torch rasteriser; "embree" without embreex is refused with the install hint."""
    if backend not in VISIBILITY_BACKENDS:
        raise ValueError(f"unknown visibility backend {backend!r}; choose one of {', '.join(VISIBILITY_BACKENDS)}")
    if backend == "embree" and not embree_available():
        raise ValueError(f"the embree visibility backend needs embreex, which is not installed: {EMBREE_HINT}, or "
                         "choose the torch backend")
    if backend == "auto":
        return "embree" if torch.device(device).type == "cpu" and embree_available() else "torch"
    return backend


def project(vertices: Tensor, cameras: Cameras, index: int, height: int, width: int) -> tuple[Tensor, Tensor, Tensor]:
    """Screen x, y [V] (pixel units, pixel (i, j) centred at (i + 0.5, j + 0.5)) and camera depth [V]
    of `vertices` [V, 3] seen from camera `index`."""
    rotation, position = cameras.c2w[index, :3, :3], cameras.c2w[index, :3, 3]
    local = (vertices - position) @ rotation  # camera frame: x right, y up, looking down -z
    depth = -local[:, 2]
    focal = cameras.focal_length(height)[index]
    safe = torch.where(depth.abs() < NEAR, torch.full_like(depth, NEAR), depth)
    return width / 2 + focal * local[:, 0] / safe, height / 2 - focal * local[:, 1] / safe, depth


def edge(ax: Tensor, ay: Tensor, bx: Tensor, by: Tensor, px: Tensor, py: Tensor) -> Tensor:
    """Twice the signed area of the triangle (a, b, p): > 0 when p is left of a -> b (y down)."""
    return (bx - ax) * (py - ay) - (by - ay) * (px - ax)


def screen_barycentrics(corners_x: Tensor, corners_y: Tensor, px: Tensor, py: Tensor) -> tuple[Tensor, Tensor]:
    """Screen-space barycentrics [P, 3] of points (px, py) [P] in triangles with corners [P, 3],
    and whether each point is inside (edges included, either winding)."""
    x0, x1, x2 = corners_x.unbind(-1)
    y0, y1, y2 = corners_y.unbind(-1)
    area = edge(x0, y0, x1, y1, x2, y2)
    weights = torch.stack([edge(x1, y1, x2, y2, px, py), edge(x2, y2, x0, y0, px, py),
                           edge(x0, y0, x1, y1, px, py)], dim=-1)
    weights = weights / torch.where(area == 0, torch.ones_like(area), area).unsqueeze(-1)
    inside = (area != 0) & (weights >= 0).all(dim=-1)
    return weights, inside


def perspective(weights: Tensor, corner_depth: Tensor) -> tuple[Tensor, Tensor]:
    """Perspective-correct barycentrics [P, 3] and camera depth [P] from screen-space `weights` [P, 3]
    and the corners' camera depths [P, 3]."""
    scaled = weights / corner_depth
    depth = 1.0 / scaled.sum(dim=-1)
    return scaled * depth.unsqueeze(-1), depth


def pixel_candidates(x: Tensor, y: Tensor, width: int, height: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per triangle (corner screen coordinates x, y [F, 3]): the first column and row of the pixel
    centres inside its bounding box, and how many columns (0: none); rows are counted by the caller."""
    column0 = torch.ceil(x.amin(-1) - 0.5).clamp(0, width)
    column1 = torch.floor(x.amax(-1) - 0.5).clamp(-1, width - 1)
    row0 = torch.ceil(y.amin(-1) - 0.5).clamp(0, height)
    row1 = torch.floor(y.amax(-1) - 0.5).clamp(-1, height - 1)
    columns = (column1 - column0 + 1).clamp_min(0).long()
    rows = (row1 - row0 + 1).clamp_min(0).long()
    return torch.stack([column0.long(), row0.long()], -1), columns, rows


def rasterize_triangles(corners_x: Tensor, corners_y: Tensor, corners_depth: Tensor, height: int, width: int,
                        pair_budget: int = PAIR_BUDGET,
                        check_interrupt: Callable[[], None] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The nearest triangle at each pixel centre of an H x W image, given each triangle's corners in
    pixel units, x [F, 3] and y [F, 3] (y down), and their camera depths [F, 3] (> NEAR, drawn) or
    ones (a flat layout, e.g. a UV atlas: the lowest face index wins a tie). `check_interrupt` is
    called before each chunk of `pair_budget` candidates.

    Returns face [H * W] (-1: none), perspective-correct barycentrics [H * W, 3] and depth [H * W].
    """
    device = corners_x.device
    drawable = (corners_depth > NEAR).all(-1) & torch.isfinite(corners_x).all(-1) & torch.isfinite(corners_y).all(-1)
    candidates = drawable.nonzero().squeeze(-1)
    origin, columns, rows = pixel_candidates(corners_x[candidates], corners_y[candidates], width, height)
    counts = columns * rows
    keep = counts > 0
    candidates, origin, columns, counts = candidates[keep], origin[keep], columns[keep], counts[keep]
    empty = torch.iinfo(torch.int64).max
    nearest = torch.full((height * width,), empty, dtype=torch.int64, device=device)
    ends = torch.cumsum(counts, 0)
    start = 0
    while start < len(candidates):
        if check_interrupt is not None:
            check_interrupt()
        done = ends[start - 1] if start else 0
        stop = max(int(torch.searchsorted(ends, done + pair_budget, right=True)), start + 1)
        chunk_counts = counts[start:stop]
        owner = torch.repeat_interleave(torch.arange(stop - start, device=device), chunk_counts)
        offset = torch.arange(len(owner), device=device) - (torch.cumsum(chunk_counts, 0) - chunk_counts)[owner]
        owner = owner + start
        column = origin[owner, 0] + offset % columns[owner]
        row = origin[owner, 1] + offset // columns[owner]
        face = candidates[owner]
        weights, inside = screen_barycentrics(corners_x[face], corners_y[face], column + 0.5, row + 0.5)
        _, pair_depth = perspective(weights, corners_depth[face])
        inside &= pair_depth > NEAR
        keys = (pair_depth[inside].float().view(torch.int32).long() << FACE_BITS) | face[inside]
        nearest.scatter_reduce_(0, (row * width + column)[inside], keys, "amin")
        start = stop
    covered = nearest != empty
    face = torch.where(covered, nearest & (2**FACE_BITS - 1), torch.full_like(nearest, -1))
    pixels = covered.nonzero().squeeze(-1)
    barycentric = torch.zeros(height * width, 3, device=device)
    depth = torch.zeros(height * width, device=device)
    won = face[pixels]
    weights, _ = screen_barycentrics(corners_x[won], corners_y[won], (pixels % width) + 0.5, (pixels // width) + 0.5)
    barycentric[pixels], depth[pixels] = perspective(weights, corners_depth[won])
    return face, barycentric, depth


def rasterize(vertices: Tensor, faces: Tensor, cameras: Cameras, height: int, width: int,
              pair_budget: int = PAIR_BUDGET, check_interrupt: Callable[[], None] | None = None) -> Hits:
    """`Hits` of `cameras` on the mesh (vertices [V, 3], faces [F, 3] int64) with the torch rasteriser,
    on the vertices' device (`check_interrupt`: see `rasterize_triangles`)."""
    cameras = cameras.to(vertices.device)
    _, directions = camera_rays(cameras, height, width)
    forward = -cameras.c2w[:, :3, 2]  # [B, 3]: the optical axis
    views = []
    for index in range(len(cameras)):
        x, y, depth = project(vertices, cameras, index, height, width)
        views.append(rasterize_triangles(x[faces], y[faces], depth[faces], height, width, pair_budget,
                                         check_interrupt))
    face = torch.stack([view[0] for view in views]).view(-1, height, width)
    barycentric = torch.stack([view[1] for view in views]).view(-1, height, width, 3)[..., 1:]
    camera_depth = torch.stack([view[2] for view in views]).view(-1, height, width)
    cosine = torch.einsum("bhwc,bc->bhw", directions, forward)
    return Hits(face, barycentric, camera_depth / cosine)


def cast_embree(cameras: Cameras, height: int, width: int, scene) -> Hits:
    """`Hits` of `cameras` by ray casting with Embree (embreex) in `scene` (`embree_scene`), on the CPU."""
    import numpy as np

    origins, directions = camera_rays(cameras.to("cpu"), height, width)
    result = scene.run(origins.reshape(-1, 3).numpy().astype(np.float32),
                       directions.reshape(-1, 3).numpy().astype(np.float32), output=1)
    face = torch.from_numpy(result["primID"].astype(np.int64))
    hit = torch.from_numpy(result["geomID"].astype(np.int64)) >= 0
    face = torch.where(hit, face, torch.full_like(face, -1))
    barycentric = torch.stack([torch.from_numpy(result["u"]), torch.from_numpy(result["v"])], dim=-1).float()
    depth = torch.from_numpy(result["tfar"]).float()
    barycentric = torch.where(hit.unsqueeze(-1), barycentric, torch.zeros_like(barycentric))
    depth = torch.where(hit, depth, torch.zeros_like(depth))
    shape = (len(cameras), height, width)
    return Hits(face.view(shape), barycentric.view(shape + (2,)), depth.view(shape))


def embree_scene(vertices: Tensor, faces: Tensor):
    """An Embree scene of the mesh (built once per mesh: a BVH over its triangles)."""
    import numpy as np
    from embreex import rtcore_scene
    from embreex.mesh_construction import TriangleMesh

    scene = rtcore_scene.EmbreeScene()
    TriangleMesh(scene=scene, vertices=vertices.detach().cpu().numpy().astype(np.float32),
                 indices=faces.cpu().numpy().astype(np.int32))
    return scene


class Visibility:
    """The visibility pass of one mesh (vertices [V, 3], faces [F, 3] int64) with one backend, the
    Embree scene built once; hits come on the vertices' device."""

    def __init__(self, vertices: Tensor, faces: Tensor, backend: str = "auto"):
        self.vertices, self.faces = vertices, faces
        self.backend = resolve_backend(backend, vertices.device)
        self._scene = None

    @torch.no_grad()
    def __call__(self, cameras: Cameras, height: int, width: int,
                 check_interrupt: Callable[[], None] | None = None) -> Hits:
        """The hits of `cameras` at height x width pixels; `check_interrupt` is called before each camera
        (and each chunk of the torch rasteriser's work)."""
        views = []
        for index in range(len(cameras)):
            if check_interrupt is not None:
                check_interrupt()
            camera = cameras.select(index)
            if self.backend == "embree":
                if self._scene is None:
                    self._scene = embree_scene(self.vertices, self.faces)
                views.append(cast_embree(camera, height, width, self._scene).to(self.vertices.device))
            else:
                views.append(rasterize(self.vertices, self.faces, camera, height, width,
                                       check_interrupt=check_interrupt))
        return Hits(*(torch.cat([getattr(view, name) for view in views]) for name in ("face", "barycentric", "depth")))
