"""Mesh extraction from the density and export through trimesh."""

import math

import numpy as np
import pytest
import torch
import trimesh
from torch import nn

from nfsd_core.nerf import Mesh, NerfRepresentation, export_mesh, extract_mesh
from nfsd_core.nerf.mesh import density_grid, isosurface_threshold, z_up_to_y_up

from nfsd_core.preview import LatentToRGB

from nerf_helpers import PoolingCodec, tiny_settings


def blob_nerf(**overrides):
    nerf = NerfRepresentation(tiny_settings(**overrides))
    nn.init.zeros_(nerf.field.density_net[-1].weight)  # density = softplus(10 (1 - |x| / 0.5)) exactly
    return nerf


def blob_radius(level):
    """|x| where softplus(10 (1 - |x| / 0.5)) == level."""
    return 0.5 * (1 - math.log(math.expm1(level)) / 10)


@pytest.fixture(scope="module")
def mesh():
    return extract_mesh(blob_nerf(), resolution=48, threshold=5.0, y_up=False)


def test_the_blob_isosurface_is_a_sphere_of_the_closed_form_radius(mesh):
    radius = mesh.vertices.norm(dim=-1)
    cell = 2.0 / 47
    assert abs(float(radius.mean()) - blob_radius(5.0)) < 0.1 * cell
    assert float(radius.max() - radius.min()) < cell
    assert mesh.faces.dtype == torch.int64 and mesh.vertices.dtype == torch.float32
    assert mesh.colours.shape == mesh.vertices.shape and 0 <= mesh.colours.min() and mesh.colours.max() <= 1
    assert mesh.to_trimesh().is_watertight
    assert mesh.to_trimesh().volume > 0  # faces wind counter-clockwise seen from outside


def test_y_up_is_a_rotation_taking_z_up_to_y_up_and_the_front_to_plus_z():
    points = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert torch.equal(z_up_to_y_up(points), torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))
    rotation = z_up_to_y_up(torch.eye(3))
    assert math.isclose(float(torch.linalg.det(rotation)), 1.0)


@pytest.mark.parametrize("file_format", ["glb", "obj", "ply"])
def test_each_format_reloads_with_the_same_counts_and_colours(tmp_path, mesh, file_format):
    path = export_mesh(mesh, tmp_path / f"blob.{file_format}")
    loaded = trimesh.load(path, force="mesh", process=False)
    assert len(loaded.vertices) == len(mesh.vertices) and len(loaded.faces) == len(mesh.faces)
    np.testing.assert_allclose(loaded.vertices, mesh.vertices.numpy(), atol=1e-5)
    colours = loaded.visual.vertex_colors[:, :3] / 255.0
    np.testing.assert_allclose(colours, mesh.colours.numpy(), atol=1 / 255 + 1e-6)


def test_auto_threshold_and_small_components_and_errors():
    nerf = blob_nerf()
    auto = extract_mesh(nerf, resolution=32, threshold="auto")
    level = isosurface_threshold(density_grid(nerf, 32), "auto")
    assert abs(float(auto.vertices.norm(dim=-1).mean()) - blob_radius(level)) < 0.1 * 2 / 31
    with pytest.raises(ValueError, match="no surface at threshold 1000"):
        extract_mesh(nerf, resolution=16, threshold=1000.0)
    with pytest.raises(ValueError, match="format"):
        export_mesh(auto, "blob.stl")
    # a second, small blob far from the first is dropped as a floater
    field = nerf.field
    original = field.density

    def two_blobs(points):
        far = torch.tensor([0.7, 0.7, 0.7])
        return original(points) + torch.nn.functional.softplus(40 * (1 - (points - far).norm(dim=-1) / 0.1))

    field.density = two_blobs
    kept = extract_mesh(nerf, resolution=48, threshold=5.0, min_component=0.2, y_up=False)
    both = extract_mesh(nerf, resolution=48, threshold=5.0, min_component=0.0, y_up=False)
    assert len(both.faces) > len(kept.faces)
    assert float(kept.vertices.norm(dim=-1).max()) < 0.5


def test_latent_nerf_meshes_are_coloured_through_a_latent_to_rgb_map():
    nerf = blob_nerf(colour="latent")
    with pytest.raises(ValueError, match="latent_rgb"):
        extract_mesh(nerf, resolution=16, threshold=5.0)
    white = LatentToRGB(torch.zeros(3, 4), bias=torch.ones(3))
    assert torch.equal(extract_mesh(nerf, resolution=16, threshold=5.0, latent_rgb=white).colours.unique(), torch.ones(1))
    fitted = extract_mesh(nerf.attach(codec=PoolingCodec()), resolution=16, threshold=5.0)  # a map fitted to the codec
    assert fitted.colours.shape == fitted.vertices.shape and fitted.colours.std() > 0


def test_a_mesh_without_colours_exports_without_vertex_colours(tmp_path, mesh):
    uncoloured = Mesh(mesh.vertices, mesh.faces)
    loaded = trimesh.load(export_mesh(uncoloured, tmp_path / "plain.ply"), force="mesh", process=False)
    assert len(loaded.faces) == len(mesh.faces)
    assert loaded.visual.kind is None  # no colours were written
