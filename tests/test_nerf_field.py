"""The hash grid, the density field and its normals, the occupancy grid."""

import math

import pytest
import torch
from torch import nn

from nfsd_core.nerf import HashGrid, NerfRepresentation, make_cameras
from nfsd_core.nerf.field import magic3d_blob
from nfsd_core.nerf.hashgrid import level_resolutions
from nfsd_core.nerf.rendering import render_step_size

from nerf_helpers import tiny_settings


def test_threestudio_defaults_give_16_levels_from_16_to_4096():
    resolutions = level_resolutions(16, 16, 4096)
    assert len(resolutions) == 16 and resolutions[0] == 16 and resolutions[-1] == 4096
    assert math.isclose(resolutions[1] / resolutions[0], 1.4473, rel_tol=0.03)


def test_hash_grid_gradients_reach_the_tables_of_every_level():
    grid = HashGrid(levels=4, features_per_level=2, log2_table_size=10, base_resolution=4, finest_resolution=64)
    assert grid.dense == [True, True, False, False]  # 4^3, 10^3 fit in 2^10 rows; 25^3, 64^3 are hashed
    points = torch.rand(50, 3, generator=torch.Generator().manual_seed(0))
    features = grid(points)
    assert features.shape == (50, 8)
    features.pow(2).sum().backward()
    for level, table in enumerate(grid.tables):
        touched = (table.grad.abs().sum(-1) > 0).sum()
        assert 0 < touched <= 8 * 50, f"level {level}"


def test_hash_grid_interpolates_trilinearly_inside_a_cell():
    grid = HashGrid(levels=1, features_per_level=1, log2_table_size=12, base_resolution=5, finest_resolution=5)
    with torch.no_grad():
        x, y, z = torch.meshgrid(*[torch.arange(5.0)] * 3, indexing="ij")
        grid.tables[0].copy_((2 * x + 3 * y - z + 1).permute(2, 1, 0).reshape(-1, 1))  # row = x + 5 (y + 5 z)
    points = torch.rand(20, 3, generator=torch.Generator().manual_seed(1))
    expected = 4 * (2 * points[:, 0] + 3 * points[:, 1] - points[:, 2]) + 1  # a linear field is reproduced
    assert torch.allclose(grid(points).squeeze(-1), expected, atol=1e-5)


def blob_only(nerf):
    """Zero the learnt density so the field is exactly softplus(blob)."""
    nn.init.zeros_(nerf.field.density_net[-1].weight)
    return nerf


def test_the_blob_density_and_its_normals_have_closed_forms():
    nerf = blob_only(NerfRepresentation(tiny_settings()))
    points = torch.randn(40, 3, generator=torch.Generator().manual_seed(2)) * 0.4
    samples = nerf.field(points, normals=True)
    expected = torch.nn.functional.softplus(magic3d_blob(points, 10.0, 0.5))
    assert torch.allclose(samples.density, expected, atol=1e-5)
    assert torch.allclose(samples.normal, torch.nn.functional.normalize(points, dim=-1), atol=1e-4)
    assert samples.colour.shape == (40, 3) and 0 <= samples.colour.min() and samples.colour.max() <= 1


def test_the_occupancy_grid_marks_the_blob_and_skipping_empty_cells_changes_no_pixel():
    nerf = blob_only(NerfRepresentation(tiny_settings()))
    step_size = render_step_size(nerf.settings.radius, nerf.settings.samples_per_ray)
    cameras = make_cameras([20.0], [30.0], [1.5], [60.0])
    before = nerf.render(cameras, 16, 16)
    nerf.occupancy.update(0, nerf.field.density, step_size, torch.Generator().manual_seed(0))
    assert nerf.occupancy.occupied(torch.tensor([[0.0, 0.0, 0.0], [0.9, 0.9, 0.9]])).tolist() == [True, False]
    occupied = nerf.occupancy.estimator.binaries.float().mean()
    assert 0.005 < occupied < 0.5
    after = nerf.render(cameras, 16, 16)
    assert torch.allclose(before.colour, after.colour, atol=2e-3)


@pytest.mark.parametrize("step", [1, 3])
def test_the_occupancy_grid_only_updates_every_n_steps(step):
    nerf = blob_only(NerfRepresentation(tiny_settings()))  # update_every=2
    occs = nerf.occupancy.estimator.occs.clone()
    nerf.occupancy.update(step, nerf.field.density, 0.1, torch.Generator().manual_seed(0))
    assert torch.equal(occs, nerf.occupancy.estimator.occs)
