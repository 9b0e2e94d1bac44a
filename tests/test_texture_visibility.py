"""The visibility pass of a fixed mesh against analytic answers, for both backends."""

import pytest
import torch
import torch.nn.functional as F

from nfsd_core.nerf import make_cameras, sample_cameras, CameraSettings
from nfsd_core.nerf.rays import camera_rays
from nfsd_core.texture import Visibility, embree_available
from nfsd_core.texture.visibility import resolve_backend

from texture_helpers import box, icosphere

BACKENDS = ["torch", pytest.param("embree", marks=pytest.mark.skipif(not embree_available(),
                                                                     reason="embreex is not installed"))]
# Camera on +x, +y, -x, -y, (almost) +z, (almost) -z: elevation, azimuth
AXIS_VIEWS = {(1, 0, 0): (0.0, 0.0), (0, 1, 0): (0.0, 90.0), (-1, 0, 0): (0.0, 180.0), (0, -1, 0): (0.0, -90.0),
              (0, 0, 1): (89.9, 0.0), (0, 0, -1): (-89.9, 0.0)}


def face_normals(vertices, faces):
    corners = vertices[faces]
    return F.normalize(torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), dim=-1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_cube_seen_along_each_axis_shows_only_the_faces_turned_to_the_camera(backend):
    vertices, faces = box(0.3)
    normals = face_normals(vertices, faces)
    elevation, azimuth = zip(*AXIS_VIEWS.values())
    cameras = make_cameras(list(elevation), list(azimuth), [1.5] * 6, [40.0] * 6)
    hits = Visibility(vertices, faces, backend)(cameras, 33, 33)
    for index, axis in enumerate(AXIS_VIEWS):
        seen = hits.face[index][hits.covered[index]]
        assert 200 < len(seen) < 33 * 33  # the cube fills part of the image
        assert torch.allclose(normals[seen], torch.tensor(axis, dtype=torch.float32).expand(len(seen), 3), atol=1e-5)
        assert hits.face[index, 16, 16] >= 0 and not hits.covered[index, 0, 0]  # centre on it, corner off it


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_spheres_depth_and_outline_match_the_analytic_sphere(backend):
    radius = 0.4
    vertices, faces = icosphere(subdivisions=5, radius=radius)
    cameras = make_cameras([20.0, -35.0], [30.0, 200.0], [1.5, 1.1], [40.0, 60.0])
    hits = Visibility(vertices, faces, backend)(cameras, 64, 64)
    origins, directions = camera_rays(cameras, 64, 64)
    along = -(origins * directions).sum(-1)
    miss_distance = (origins + along.unsqueeze(-1) * directions).norm(dim=-1)
    depth = along - (radius**2 - miss_distance.pow(2)).clamp_min(0).sqrt()
    inside, outside = miss_distance < radius - 0.01, miss_distance > radius + 1e-3
    assert hits.covered[inside].all() and not hits.covered[outside].any()
    assert (hits.depth[inside] - depth[inside]).abs().max() < 2e-3
    u, v = hits.barycentric[hits.covered].unbind(-1)
    assert (u >= -1e-5).all() and (v >= -1e-5).all() and (u + v <= 1 + 1e-5).all()
    corners = vertices[faces[hits.face[hits.covered]]]
    points = ((1 - u - v).unsqueeze(-1) * corners[:, 0] + u.unsqueeze(-1) * corners[:, 1]
              + v.unsqueeze(-1) * corners[:, 2])
    rays = origins[hits.covered] + hits.depth[hits.covered].unsqueeze(-1) * directions[hits.covered]
    assert (points - rays).norm(dim=-1).max() < 1e-4  # the barycentrics and the depth name the same point


@pytest.mark.skipif(not embree_available(), reason="embreex is not installed")
def test_the_rasteriser_and_embree_see_the_same_triangles():
    vertices, faces = icosphere(subdivisions=4, radius=0.45)
    vertices = vertices * (1 + 0.1 * torch.sin(7 * vertices[:, :1]) * torch.cos(5 * vertices[:, 1:2]))
    cameras = sample_cameras(CameraSettings(), 3, torch.Generator().manual_seed(0))
    raster = Visibility(vertices, faces, "torch")(cameras, 96, 96)
    embree = Visibility(vertices, faces, "embree")(cameras, 96, 96)
    assert torch.equal(raster.covered, embree.covered)
    assert (raster.face == embree.face).float().mean() > 0.999
    same = raster.face == embree.face
    assert (raster.depth - embree.depth)[same].abs().max() < 1e-4


def test_the_rasteriser_splits_its_work_without_changing_the_result():
    from nfsd_core.texture.visibility import rasterize

    vertices, faces = icosphere(subdivisions=3)
    cameras = make_cameras([10.0], [45.0], [1.3], [50.0])
    whole = rasterize(vertices, faces, cameras, 48, 48)
    pieces = rasterize(vertices, faces, cameras, 48, 48, pair_budget=64)
    assert torch.equal(whole.face, pieces.face) and torch.equal(whole.barycentric, pieces.barycentric)


def test_backends_are_chosen_and_refused_with_the_fix(monkeypatch):
    assert resolve_backend("torch", "cpu") == "torch"
    assert resolve_backend("auto", "cuda") == "torch"  # Embree runs on the CPU only
    assert resolve_backend("auto", "cpu") == ("embree" if embree_available() else "torch")
    monkeypatch.setattr("nfsd_core.texture.visibility.embree_available", lambda: False)
    assert resolve_backend("auto", "cpu") == "torch"
    with pytest.raises(ValueError, match="pip install embreex"):
        resolve_backend("embree", "cpu")
    with pytest.raises(ValueError, match="choose one of auto, torch, embree"):
        resolve_backend("optix", "cpu")


def interrupted_at(call: int):
    """(the calls so far, a check_interrupt that raises KeyboardInterrupt at its `call`-th call)."""
    calls = []

    def interrupt():
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt

    return calls, interrupt


def test_a_visibility_pass_stops_when_interrupted():
    vertices, faces = icosphere(subdivisions=2)
    cameras = make_cameras([0.0] * 3, [0.0, 120.0, 240.0], [1.5] * 3, [40.0] * 3)
    calls, interrupt = interrupted_at(2)
    with pytest.raises(KeyboardInterrupt):
        Visibility(vertices, faces, "torch")(cameras, 16, 16, interrupt)
    assert len(calls) == 2  # checked before each camera: stopped before the second


def test_the_rasteriser_checks_the_interrupt_between_chunks_of_its_work():
    from nfsd_core.texture.visibility import rasterize

    vertices, faces = icosphere(subdivisions=3)
    cameras = make_cameras([10.0], [45.0], [1.3], [50.0])
    calls, interrupt = interrupted_at(3)
    with pytest.raises(KeyboardInterrupt):
        rasterize(vertices, faces, cameras, 48, 48, pair_budget=64, check_interrupt=interrupt)
    assert len(calls) == 3  # one camera, many chunks: stopped at the third
