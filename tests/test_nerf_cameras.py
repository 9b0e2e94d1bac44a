"""Camera conventions: threestudio's spherical placement, OpenGL frames, pixel-centre rays."""

import math

import pytest
import torch
from torch import Tensor

from nfsd_core.nerf import CameraSettings, make_cameras, orbit_cameras, sample_cameras, training_views, view_names
from nfsd_core.nerf.cameras import Cameras
from nfsd_core.nerf.rays import camera_rays


def project_points(cameras: Cameras, points: Tensor, height: int, width: int) -> Tensor:
    """The pinhole projection that `camera_rays` inverts: pixel coordinates [B, P, 2] (column, row;
    continuous, centre at (W/2, H/2)) of world `points` [P, 3]."""
    w2c = torch.linalg.inv(cameras.c2w)
    homogeneous = torch.cat([points, torch.ones_like(points[:, :1])], dim=-1)
    camera_points = torch.einsum("bij,pj->bpi", w2c, homogeneous)[..., :3]
    focal = cameras.focal_length(height).view(-1, 1)
    depth = -camera_points[..., 2]
    column = width / 2 + focal * camera_points[..., 0] / depth
    row = height / 2 - focal * camera_points[..., 1] / depth
    return torch.stack([column, row], dim=-1)


def test_the_origin_projects_to_the_image_centre_from_any_camera():
    cameras = sample_cameras(CameraSettings(), 16, torch.Generator().manual_seed(0))
    pixels = project_points(cameras, torch.zeros(1, 3), 48, 64)
    assert torch.allclose(pixels, torch.tensor([32.0, 24.0]).expand(16, 1, 2), atol=1e-4)


def test_azimuth_zero_is_the_front_camera_on_plus_x_with_y_right_and_z_up():
    camera = make_cameras([0.0], [0.0], [2.0], [60.0])
    assert torch.allclose(camera.c2w[0, :3, 3], torch.tensor([2.0, 0.0, 0.0]), atol=1e-6)
    assert camera.views == ["front"]
    centre = torch.tensor([16.0, 16.0])
    right, up = project_points(camera, torch.tensor([[0.0, 0.3, 0.0], [0.0, 0.0, 0.3]]), 32, 32)[0]
    assert right[0] > centre[0] and torch.isclose(right[1], centre[1])
    assert up[1] < centre[1] and torch.isclose(up[0], centre[0])


def test_rays_leave_the_camera_through_their_pixel_centres():
    cameras = sample_cameras(CameraSettings(), 3, torch.Generator().manual_seed(1))
    origins, directions = camera_rays(cameras, 6, 8)
    assert origins.shape == directions.shape == (3, 6, 8, 3)
    assert torch.allclose(directions.norm(dim=-1), torch.ones(3, 6, 8), atol=1e-6)
    for b in range(3):
        points = (origins[b] + 0.7 * directions[b]).reshape(-1, 3)
        pixels = project_points(cameras.select(b), points, 6, 8)[0]
        rows, columns = torch.meshgrid(torch.arange(6) + 0.5, torch.arange(8) + 0.5, indexing="ij")
        assert torch.allclose(pixels, torch.stack([columns, rows], -1).reshape(-1, 2), atol=1e-4)


@pytest.mark.parametrize(
    "elevation, azimuth, view",
    [(0, 0, "front"), (30, 44, "front"), (0, 46, "side"), (10, -90, "side"), (0, 180, "back"),
     (0, -150, "back"), (20, 500, "back"), (61, 0, "overhead"), (89, 180, "overhead")],
)
def test_view_names_follow_threestudio(elevation, azimuth, view):
    assert view_names(torch.tensor([float(elevation)]), torch.tensor([float(azimuth)])) == [view]


def test_random_cameras_stay_in_their_ranges_and_repeat_under_a_seed():
    settings = CameraSettings(elevation_range=(-10, 45), distance_range=(1.0, 1.5), fovy_range=(40, 70))
    cameras = sample_cameras(settings, 64, torch.Generator().manual_seed(3))
    again = sample_cameras(settings, 64, torch.Generator().manual_seed(3))
    assert torch.equal(cameras.c2w, again.c2w)
    assert cameras.elevation.min() >= -10 - 1e-4 and cameras.elevation.max() <= 45 + 1e-4
    assert cameras.distance.min() >= 1.0 and cameras.distance.max() <= 1.5
    assert torch.allclose(cameras.c2w[:, :3, 3].norm(dim=-1), cameras.distance, atol=1e-5)
    # batch_uniform_azimuth: one camera in each of the 64 azimuth slices
    slices = ((cameras.azimuth + 180) / (360 / 64)).floor()
    assert sorted(slices.long().tolist()) == list(range(64))


def test_relative_distances_show_every_fovy_the_same_frame_at_the_origin():
    settings = CameraSettings(distance_range=(0.5, 0.5), fovy_range=(40, 55), relative_distance=True)
    cameras = sample_cameras(settings, 32, torch.Generator().manual_seed(0))
    half_height = cameras.distance * torch.tan(torch.deg2rad(cameras.fovy) / 2)
    assert torch.allclose(half_height, torch.full((32,), 0.5), atol=1e-5)
    assert cameras.distance.min() > 0.95 and cameras.distance.max() < 1.38  # 0.5 / tan(27.5) .. 0.5 / tan(20)
    assert torch.allclose(cameras.c2w[:, :3, 3].norm(dim=-1), cameras.distance, atol=1e-5)


def test_an_orbit_turns_once_at_one_elevation_starting_at_the_front():
    orbit = orbit_cameras(8, elevation=15.0, distance=1.5, fovy=70.0)
    assert orbit.views[0] == "front" and orbit.views[4] == "back"
    heights = orbit.c2w[:, 2, 3]
    assert torch.allclose(heights, torch.full((8,), 1.5 * math.sin(math.radians(15))), atol=1e-5)
    assert torch.allclose(orbit.azimuth.diff().remainder(360), torch.full((7,), 45.0))


def test_bad_camera_ranges_are_refused():
    with pytest.raises(ValueError, match="elevation_range"):
        CameraSettings(elevation_range=(30, 10))
    with pytest.raises(ValueError, match="distance_range must be a finite number from 0.01 to 100, got 0.0"):
        CameraSettings(distance_range=(0.0, 1.0))
    with pytest.raises(ValueError, match="eval_fovy must be a finite number"):
        CameraSettings(eval_fovy=float("nan"))


@pytest.mark.parametrize("elevation, azimuth, views", [
    ((-10.0, 45.0), (-180.0, 180.0), ["front", "side", "back"]),  # the defaults: never overhead
    ((-10.0, 80.0), (-180.0, 180.0), ["front", "side", "back", "overhead"]),
    ((70.0, 80.0), (-180.0, 180.0), ["overhead"]),
    ((0.0, 60.0), (-30.0, 30.0), ["front"]),  # 60 itself is not above 60
    ((0.0, 30.0), (100.0, 200.0), ["side", "back"]),
    ((0.0, 30.0), (170.0, 300.0), ["side", "back"]),  # past +180: the back, then the other side
    ((0.0, 30.0), (-360.0, -320.0), ["front"]),  # a turn below: -360 to -320 is 0 to 40
    ((0.0, 30.0), (-360.0, -300.0), ["front", "side"]),
])
def test_training_views_are_the_views_the_training_cameras_get(elevation, azimuth, views):
    settings = CameraSettings(elevation_range=elevation, azimuth_range=azimuth)
    assert training_views(settings) == views
    drawn = sample_cameras(settings, 4000, torch.Generator().manual_seed(0))
    assert sorted(set(drawn.views)) == sorted(views)


def test_view_names_say_the_rounded_elevation_when_asked():
    elevation = torch.tensor([14.9, 15.0, -4.9, -5.0, 44.0, 70.0])
    azimuth = torch.tensor([0.0, 90.0, 180.0, 0.0, -90.0, 0.0])
    assert view_names(elevation, azimuth) == ["front", "side", "back", "front", "side", "overhead"]
    assert view_names(elevation, azimuth, elevation_step=10) == [
        "front, elevation 10", "side, elevation 20", "back, elevation 0", "front, elevation 0",
        "side, elevation 40", "overhead, elevation 70"]
    assert view_names(torch.tensor([-5.1, -16.0]), torch.tensor([0.0, 0.0]), 10) == [
        "front, elevation minus 10", "front, elevation minus 20"]


@pytest.mark.parametrize("step", [10, 15])
def test_training_views_with_elevations_are_every_name_the_training_cameras_get(step):
    settings = CameraSettings(view_elevation_step=step)
    drawn = sample_cameras(settings, 4000, torch.Generator().manual_seed(1))
    names = view_names(drawn.elevation, drawn.azimuth, step)
    listed = training_views(settings)
    assert set(names) <= set(listed)
    # the range's edges can round to a name (45 -> 50) that a draw in [-10, 45) never gets: at most one per view
    assert len(set(listed) - set(names)) <= 3
    assert listed[0] == f"front, elevation minus {10 if step == 10 else 15}"
    with pytest.raises(ValueError, match="view_elevation_step"):
        CameraSettings(view_elevation_step=2.5)
