"""Baking a mesh texture into a UV image: every face covered, no unwritten texel, files that keep it."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import trimesh

from nfsd_core.nerf import export_mesh
from nfsd_core.texture import Surface, TextureRepresentation, bake_texture, resolve_unwrap, xatlas_available
from nfsd_core.texture.bake import AUTO_XATLAS_MAX_FACES, texel_faces, unwrap_mesh

from texture_helpers import icosphere, position_colours, tiny_texture_settings

UNWRAPS = ["per_face", pytest.param("xatlas", marks=pytest.mark.skipif(not xatlas_available(),
                                                                       reason="xatlas is not installed"))]


def coloured_texture(subdivisions: int = 4) -> tuple[TextureRepresentation, torch.Tensor, torch.Tensor]:
    """A texture that starts from position colours (which the untrained field reproduces), and its mesh."""
    vertices, faces = icosphere(subdivisions=subdivisions, radius=0.4)
    surface = Surface.from_mesh(vertices, faces, position_colours(vertices))
    return TextureRepresentation(surface, tiny_texture_settings()), vertices, faces


def sample(texture: torch.Tensor, uvs: torch.Tensor) -> torch.Tensor:
    """Bilinear samples [P, 3] of an image [S, S, 3] at UVs [P, 2] (v up), as a viewer reads a texture."""
    grid = torch.stack([uvs[:, 0] * 2 - 1, 1 - uvs[:, 1] * 2], dim=-1).view(1, -1, 1, 2)
    return F.grid_sample(texture.permute(2, 0, 1)[None], grid, align_corners=False)[0, :, :, 0].T


@pytest.mark.parametrize("unwrap, size", [("per_face", 1024), ("xatlas", 256)])
def test_every_face_reads_its_own_colour_from_the_baked_image(unwrap, size):
    """With a few texels per triangle (per_face packs each pair of triangles in its own cell, so it needs a
    larger image than xatlas's charts), a viewer reads each face's own colour, also next to its corners."""
    if unwrap == "xatlas" and not xatlas_available():
        pytest.skip("xatlas is not installed")
    texture, vertices, faces = coloured_texture()
    mesh = bake_texture(texture, vertices, size=size, unwrap=unwrap)
    layout = unwrap_mesh(vertices, faces, size, unwrap)
    assert torch.equal(mesh.vertices, vertices[layout.vertex]) and torch.equal(mesh.faces, layout.faces)
    start = position_colours(vertices)
    corners_uv, corners_colour = mesh.uvs[mesh.faces], start[layout.vertex][mesh.faces]
    for towards_corner in (0.0, 0.8):  # the centroid, and near each corner (by a seam or gutter)
        for corner in range(3):
            weights = torch.full((3,), (1 - towards_corner) / 3)
            weights[corner] += towards_corner
            read = sample(mesh.texture, (corners_uv * weights[None, :, None]).sum(1))
            truth = (corners_colour * weights[None, :, None]).sum(1)
            assert (read - truth).abs().max() < 0.03, (towards_corner, corner)
    assert torch.allclose(mesh.colours, start[layout.vertex], atol=1e-3)


@pytest.mark.parametrize("unwrap", UNWRAPS)
def test_no_texel_is_left_unwritten_even_when_faces_outnumber_texels(unwrap):
    texture, vertices, faces = coloured_texture(subdivisions=4)  # 5120 faces on 32 x 32 = 1024 texels
    layout = unwrap_mesh(vertices, faces, 32, unwrap)
    face, _ = texel_faces(layout, 32)
    assert (face >= 0).sum() > 0
    mesh = bake_texture(texture, vertices, size=32, unwrap=unwrap)
    assert mesh.texture.min() >= 0.09  # position colours lie in [0.1, 0.9]: no black (unwritten) texel anywhere


def test_tiny_triangles_write_their_centroid():
    vertices, faces = icosphere(subdivisions=3)
    layout = unwrap_mesh(vertices, faces, 16, "per_face")  # 1280 faces, 256 texels: most hold no texel centre
    face, barycentric = texel_faces(layout, 16)
    written = face[face >= 0]
    assert len(written) == len(set(written.tolist()))  # a texel holds one face
    centroid = (barycentric[face >= 0] - 1 / 3).abs().max(-1).values < 1e-6
    assert centroid.any()  # some faces are only there through their centroid


@pytest.mark.parametrize("unwrap", UNWRAPS)
def test_glb_and_obj_files_keep_the_texture_and_uvs(tmp_path, unwrap):
    texture, vertices, _ = coloured_texture(subdivisions=2)
    mesh = bake_texture(texture, vertices, size=64, unwrap=unwrap)
    expected = (mesh.texture * 255).round().byte()
    glb = trimesh.load(export_mesh(mesh, tmp_path / "mesh.glb"), force="mesh", process=False)
    image = torch.from_numpy(np.array(glb.visual.material.baseColorTexture.convert("RGB")))
    assert torch.equal(image, expected)
    assert torch.allclose(torch.from_numpy(glb.visual.uv).float(), mesh.uvs, atol=1e-6)
    assert glb.visual.material.metallicFactor == 0.0
    export_mesh(mesh, tmp_path / "mesh_00001_.obj")
    assert {path.name for path in tmp_path.iterdir()} >= {"mesh_00001_.obj", "mesh_00001_.mtl", "mesh_00001_.png"}
    obj = trimesh.load(tmp_path / "mesh_00001_.obj", force="mesh", process=False)
    assert obj.visual.material.image.size == (64, 64) and len(obj.faces) == len(mesh.faces)
    coloured = trimesh.load(export_mesh(mesh, tmp_path / "colours.glb", colours="vertex colours"), force="mesh",
                            process=False)
    assert coloured.visual.kind == "vertex"
    assert torch.allclose(torch.from_numpy(coloured.visual.vertex_colors[:, :3]).float() / 255, mesh.colours,
                          atol=1 / 255)


def test_unwraps_are_chosen_and_refused_with_the_fix(monkeypatch):
    assert resolve_unwrap("per_face") == "per_face"
    monkeypatch.setattr("nfsd_core.texture.bake.xatlas_available", lambda: True)
    assert resolve_unwrap("auto", faces=1000) == "xatlas"
    assert resolve_unwrap("auto", faces=AUTO_XATLAS_MAX_FACES + 1) == "per_face"  # xatlas takes minutes there
    assert resolve_unwrap("xatlas", faces=AUTO_XATLAS_MAX_FACES + 1) == "xatlas"  # asked for: as asked
    monkeypatch.setattr("nfsd_core.texture.bake.xatlas_available", lambda: False)
    assert resolve_unwrap("auto") == "per_face"
    with pytest.raises(ValueError, match="pip install xatlas"):
        resolve_unwrap("xatlas")
    texture, vertices, _ = coloured_texture(subdivisions=1)
    with pytest.raises(ValueError, match="at least 8 px"):
        bake_texture(texture, vertices, size=4)
    with pytest.raises(ValueError, match="vertices but the texture was made for"):
        bake_texture(texture, vertices[:-1], size=16)


@pytest.mark.skipif(not xatlas_available(), reason="xatlas is not installed")
def test_xatlas_runs_in_a_child_that_an_interrupt_kills():
    import time

    from nfsd_core.texture import bake

    vertices, faces = icosphere(subdivisions=5)  # 20k faces: seconds of xatlas
    started, checks = time.perf_counter(), []

    def interrupt():
        checks.append(1)
        if len(checks) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        bake.xatlas_layout(vertices, faces, 512, interrupt)
    assert time.perf_counter() - started < 2.0  # polled every POLL_SECONDS, not after the unwrap
    with pytest.raises(RuntimeError, match="the unwrap failed"):
        bake.run_child("import sys; sys.exit('broken')", b"", None)


def test_a_textured_mesh_without_vertex_colours_gives_its_textures_colours_at_the_vertices(tmp_path):
    texture, vertices, _ = coloured_texture(subdivisions=2)
    mesh = bake_texture(texture, vertices, size=256, unwrap="per_face")
    bare = type(mesh)(mesh.vertices, mesh.faces, uvs=mesh.uvs, texture=mesh.texture)
    coloured = trimesh.load(export_mesh(bare, tmp_path / "read.ply"), force="mesh", process=False)
    read = torch.from_numpy(coloured.visual.vertex_colors[:, :3].copy()).float() / 255
    assert (read - mesh.colours).abs().max() < 0.06  # the nearest texel at each corner of its own cell
