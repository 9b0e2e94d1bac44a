"""Volume rendering against closed forms, and nerfacc on CPU without its CUDA backend."""

import math
import sys
from dataclasses import replace

import pytest
import torch
from torch import nn

from nfsd_core.nerf import NerfRepresentation, make_cameras
from nfsd_core.nerf.acceleration import BACKEND_MODULE, nerfacc_extension_available, weights_from_density
from nfsd_core.nerf.field import FieldSamples
from nfsd_core.nerf.rays import camera_rays, ray_box_intersection
from nfsd_core.nerf.rendering import render_rays

from nerf_helpers import TINY_VOLUME, tiny_settings


class ConstantVolume(nn.Module):
    """Density `sigma` and colour `colour` everywhere in [-1, 1]^3 (its normals point along +x)."""

    radius = 1.0

    def __init__(self, sigma: float, colour=(0.2, 0.4, 0.6)):
        super().__init__()
        self.sigma, self.rgb = sigma, torch.tensor(colour)

    def density(self, points):
        return torch.full(points.shape[:-1], self.sigma)

    def forward(self, points, normals=False, create_graph=False):
        normal = torch.tensor([1.0, 0.0, 0.0]).expand_as(points) if normals else None
        return FieldSamples(self.density(points), self.rgb.expand(points.shape[:-1] + (3,)), normal)


def slab(sigma=1.3, length=2.0, samples=16):
    t = torch.linspace(0, length, samples + 1).unsqueeze(0)
    return t[:, :-1], t[:, 1:], torch.full((1, samples), sigma)


def test_weights_through_a_slab_of_constant_density_match_the_closed_form():
    sigma, length, samples = 1.3, 2.0, 16
    t_starts, t_ends, density = slab(sigma, length, samples)
    transmittance = torch.exp(-sigma * t_starts)
    expected = transmittance * (1 - math.exp(-sigma * length / samples))
    weights = weights_from_density(t_starts, t_ends, density)
    assert torch.allclose(weights, expected, atol=1e-6)
    assert math.isclose(float(weights.sum()), 1 - math.exp(-sigma * length), rel_tol=1e-5)


def test_a_cpu_render_never_loads_nerfacc_cuda_backend():
    origins = torch.tensor([[3.0, 0.0, 0.0]])
    directions = torch.tensor([[-1.0, 0.0, 0.0]])
    density = torch.tensor(0.8, requires_grad=True)

    class Volume(ConstantVolume):
        def density(self, points):
            return density.expand(points.shape[:-1])

    render_rays(Volume(0.8), origins, directions, samples_per_ray=8).opacity.sum().backward()
    assert density.grad is not None and density.grad.abs() > 0
    assert BACKEND_MODULE not in sys.modules, "a CPU render must never load nerfacc's CUDA backend"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only answer")
def test_without_cuda_the_packed_path_is_never_chosen():
    assert not nerfacc_extension_available()


def test_rays_through_a_constant_box_get_the_closed_form_opacity_colour_and_depth():
    sigma = 0.8
    origins = torch.tensor([[3.0, 0.0, 0.0], [3.0, 0.5, 0.2], [0.0, 0.0, 0.0], [3.0, 3.0, 0.0]])
    directions = torch.nn.functional.normalize(torch.tensor([[-1.0, 0, 0], [-1.0, 0.1, 0], [0, 0, 1.0], [-1.0, 0, 0]]), dim=-1)
    near, far = ray_box_intersection(origins, directions, 1.0)
    out = render_rays(ConstantVolume(sigma), origins, directions, samples_per_ray=256, normals=True)
    length = far - near
    expected_opacity = 1 - torch.exp(-sigma * length)
    assert torch.allclose(out.opacity.squeeze(-1), expected_opacity, atol=1e-5)
    assert torch.allclose(out.colour, out.opacity * torch.tensor([0.2, 0.4, 0.6]), atol=1e-5)
    # E[t] under w(t) = sigma exp(-sigma (t - near)) on [near, far]
    inside = length > 0
    mean_offset = 1 / sigma - length * torch.exp(-sigma * length) / (1 - torch.exp(-sigma * length))
    expected_depth = (near + mean_offset) * expected_opacity
    assert torch.allclose(out.depth.squeeze(-1)[inside], expected_depth[inside], atol=2e-3)
    assert length[2] == 1.0 and length[3] == 0.0  # from inside the box; a ray that misses it
    assert torch.allclose(out.normal, out.opacity * torch.tensor([1.0, 0, 0]), atol=1e-6)


def test_an_empty_scene_is_transparent_and_shows_only_the_background():
    # a blob bias of -30 everywhere (softplus(-30) ~ 1e-13) and no learnt density
    nerf = NerfRepresentation(tiny_settings(volume=replace(TINY_VOLUME, blob_scale=-30.0, blob_std=1e9)))
    nn.init.zeros_(nerf.field.density_net[-1].weight)
    cameras = make_cameras([10.0, 30.0], [0.0, 120.0], [1.5, 1.5], [60.0, 60.0])
    render = nerf.render(cameras, 8, 8)
    assert render.opacity.max() < 1e-9
    _, directions = camera_rays(cameras, 8, 8)
    assert torch.allclose(render.colour, nerf.background(directions), atol=1e-6)


@pytest.mark.parametrize("part", [None, 100])
def test_the_packed_path_composites_exactly_like_the_batched_one(monkeypatch, part):
    """The CUDA path's plumbing, on CPU: nerfacc's kernels (grid marching, packed weights) are
    replaced by plain-torch equivalents that return the batched path's own samples, flattened.
    With parts of at most 100 queried samples (6 rays of 16), both layouts composite in parts and
    still give the whole render's rays."""
    import nerfacc

    from nfsd_core.nerf import rendering
    from nfsd_core.nerf.rays import stratified_samples

    nerf = NerfRepresentation(tiny_settings())
    origins, directions = (t.reshape(-1, 3) for t in camera_rays(make_cameras([20.0], [40.0], [1.5], [60.0]), 6, 6))
    rays, samples = origins.shape[0], 16
    batched = render_rays(nerf.field, origins, directions, samples, normals=True, orientation=True)
    if part is not None:
        monkeypatch.setattr(rendering, "QUERIED_SAMPLES_PER_PART", part)
        parts = render_rays(nerf.field, origins, directions, samples, normals=True, orientation=True)
        for name in ("colour", "opacity", "depth", "normal", "orientation"):
            assert torch.allclose(getattr(parts, name), getattr(batched, name), atol=1e-6), name

    near, far = ray_box_intersection(origins, directions, nerf.settings.radius)
    t_starts, t_ends, _ = stratified_samples(near, far, samples, None)

    def grid_marching(rays_o, rays_d, **options):
        return torch.arange(rays).repeat_interleave(samples), t_starts.flatten(), t_ends.flatten()

    def packed_weights(t_starts, t_ends, sigmas, ray_indices, n_rays):
        shape = (n_rays, -1)
        return weights_from_density(t_starts.view(shape), t_ends.view(shape), sigmas.view(shape)).flatten(), None, None

    monkeypatch.setattr(rendering, "use_packed_rendering", lambda device: True)
    monkeypatch.setattr(nerf.occupancy.estimator, "sampling", grid_marching)
    monkeypatch.setattr(nerfacc, "render_weight_from_density", packed_weights)
    packed = render_rays(nerf.field, origins, directions, samples, occupancy=nerf.occupancy, normals=True,
                         orientation=True)
    for name in ("colour", "opacity", "depth", "normal", "orientation"):
        assert torch.allclose(getattr(packed, name), getattr(batched, name), atol=1e-6), name


def test_random_backgrounds_are_one_solid_colour_per_image_drawn_from_the_generator():
    from nfsd_core.nerf import BackgroundSettings
    from nfsd_core.nerf.background import Background

    directions = torch.nn.functional.normalize(torch.randn(6, 4, 5, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    solid = Background(BackgroundSettings(kind="random"), 3, latent_colour=False)
    drawn = solid(directions, torch.Generator().manual_seed(1))
    assert torch.equal(drawn, solid(directions, torch.Generator().manual_seed(1)))
    assert torch.equal(drawn, drawn[:, :1, :1].expand_as(drawn)) and drawn[0, 0, 0].ne(drawn[1, 0, 0]).any()
    assert torch.equal(solid(directions), torch.ones(6, 4, 5, 3))  # evaluation: the eval colour
    environment = Background(BackgroundSettings(kind="environment", random_probability=0.5), 3, latent_colour=False)
    mixed = environment(directions, torch.Generator().manual_seed(2))
    flat = [bool(torch.equal(image, image[:1, :1].expand_as(image))) for image in mixed]
    assert any(flat) and not all(flat)  # some images replaced by a solid colour, the rest from the map
    assert not any(bool(torch.equal(image, image[:1, :1].expand_as(image))) for image in environment(directions))


class Ball(ConstantVolume):
    """Density `sigma` inside the ball of radius 0.5, none outside."""

    def density(self, points):
        return self.sigma * (points.norm(dim=-1) < 0.5).float()


def test_a_render_larger_than_the_training_samples_its_rays_finely_enough_to_lose_the_depth_rings(monkeypatch):
    monkeypatch.setattr(NerfRepresentation, "device", torch.device("cpu"))  # the ball has no hash grid to ask

    def opacity(samples_per_ray, training_size, size=64):
        settings = tiny_settings(samples_per_ray=samples_per_ray, render_sizes=(training_size,), size_milestones=())
        nerf = NerfRepresentation(settings)
        nerf.field = Ball(sigma=8.0)
        return nerf.render(make_cameras([15.0], [30.0], [1.5], [60.0]), size, size).opacity

    reference = opacity(512, 64)
    trained_at_16 = tiny_settings(samples_per_ray=8, render_sizes=(16,), size_milestones=())
    assert [trained_at_16.evaluation_samples_per_ray(size) for size in (8, 16, 17, 32, 64, 256)] == [8, 8, 16, 16, 32, 32]
    at_training_spacing = (opacity(8, 64) - reference).abs().mean()
    at_finer_spacing = (opacity(8, 16) - reference).abs().mean()
    assert at_finer_spacing < 0.5 * at_training_spacing, (at_finer_spacing, at_training_spacing)
