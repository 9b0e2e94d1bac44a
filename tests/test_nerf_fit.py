"""A NeRF fitted to exact renders of a coloured sphere: image quality, turntables and its mesh."""

import pytest
import torch
import torch.nn.functional as F

from nfsd_core.nerf import (
    BackgroundSettings,
    CameraSettings,
    NerfRepresentation,
    OccupancySettings,
    VolumeSettings,
    extract_mesh,
    orbit_cameras,
    render_turntable,
    sample_cameras,
)
from nfsd_core.nerf.rendering import render_step_size

from nerf_helpers import psnr, sphere_images, tiny_settings

SPHERE_RADIUS = 0.5
STEPS, SIZE, BATCH = 150, 20, 2
CAMERAS = CameraSettings(distance_range=(1.5, 2.0), fovy_range=(40, 50), eval_distance=1.8, eval_fovy=45)


def fit_sphere() -> NerfRepresentation:
    """150 Adam steps of a photometric loss on random views (about 5 s on one core)."""
    settings = tiny_settings(
        radius=0.75,
        samples_per_ray=24,
        cameras=CAMERAS,
        background=BackgroundSettings(kind="random"),  # white when evaluated, as the targets
        occupancy=OccupancySettings(resolution=16, update_every=4, warmup_steps=8),
        volume=VolumeSettings(levels=8, log2_table_size=14, base_resolution=8, finest_resolution=128, hidden_width=32),
    )
    nerf = NerfRepresentation(settings)
    optimizer = torch.optim.Adam(nerf.parameter_groups(0.03), betas=(0.9, 0.99), eps=1e-15)
    step_size = render_step_size(settings.radius, settings.samples_per_ray)
    for step in range(STEPS):
        generator = torch.Generator().manual_seed(step)
        nerf.occupancy.update(step, nerf.field.density, step_size, generator)
        cameras = sample_cameras(CAMERAS, BATCH, generator)
        loss = F.mse_loss(nerf.render(cameras, SIZE, SIZE).colour, sphere_images(cameras, SIZE, SPHERE_RADIUS))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return nerf


@pytest.fixture(scope="module")
def fitted():
    return fit_sphere()


def test_the_fit_reaches_25_db_on_held_out_orbit_views(fitted):
    cameras = orbit_cameras(6, elevation=20.0, distance=1.8, fovy=45.0, start_azimuth=10.0)
    with torch.no_grad():
        render = fitted.render(cameras, 32, 32)
    assert psnr(render.colour, sphere_images(cameras, 32, SPHERE_RADIUS)) > 25.0  # 27.2 dB when written


def test_the_fitted_mesh_is_a_sphere_of_the_right_radius(fitted):
    mesh = extract_mesh(fitted, resolution=64, threshold="auto")
    radius = mesh.vertices.norm(dim=-1)
    assert abs(float(radius.mean()) - SPHERE_RADIUS) < 0.04  # 0.521 when written
    assert float(radius.std()) < 0.04  # 0.022
    # coloured by the field: a vertex's colour approximates (normal + 1) / 2 of the target sphere
    normals = F.normalize(mesh.vertices[:, [2, 0, 1]], dim=-1)  # back from y-up to the NeRF's z-up frame
    assert F.l1_loss(mesh.colours, (normals + 1) / 2) < 0.15  # 0.125


def test_a_turntable_starts_at_the_front_and_is_deterministic(fitted):
    turntable = render_turntable(fitted, frames=4, size=16, normals=True)
    assert turntable.colour.shape == (4, 16, 16, 3) and turntable.normal.shape == (4, 16, 16, 3)
    front = fitted.render(orbit_cameras(1, CAMERAS.eval_elevation, CAMERAS.eval_distance, CAMERAS.eval_fovy), 16, 16)
    assert torch.allclose(turntable.colour[0], front.colour[0].detach(), atol=1e-5)
    assert torch.equal(turntable.colour, render_turntable(fitted, frames=4, size=16).colour)
    # the sphere covers the centre, and its normals lean towards each camera: +x, +y, -x, -y
    assert turntable.opacity[:, 8, 8].min() > 0.9
    towards_camera = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [-1.0, 0, 0], [0, -1.0, 0]])
    covered = turntable.opacity > 0.5
    mean_normals = torch.stack([turntable.normal[k][covered[k, ..., 0]].mean(0) for k in range(4)])
    facing = (mean_normals * towards_camera).sum(-1)
    assert facing.min() > 0.1 and torch.equal(mean_normals.abs().argmax(-1), towards_camera.abs().argmax(-1))
