"""Lambertian shading of NeRF renders: the lit share follows the rendered normals, its gradient reaches
the geometry, and the settings refuse what cannot be shaded."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from nfsd_core.nerf import NerfRepresentation, field, make_cameras
from nfsd_core.nerf.shading import lambertian

from nerf_helpers import TINY_VOLUME, tiny_settings


def test_lambertian_is_the_full_albedo_facing_the_light_and_the_ambient_share_facing_away():
    albedo = torch.tensor([[0.2, 0.4, 0.8]]).expand(3, 3)
    light = torch.tensor([0.0, 0.0, 1.0])
    normals = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    shaded = lambertian(albedo, normals, light, ambient=0.25)
    assert torch.allclose(shaded, albedo * torch.tensor([[1.0], [0.25], [0.25]]))


def blob_nerf(**overrides) -> NerfRepresentation:
    """A NeRF whose networks output zeros: a grey (0.5) Magic3D blob, radially symmetric and sharp."""
    settings = tiny_settings(volume=replace(TINY_VOLUME, blob_scale=60.0, blob_std=0.4), **overrides)
    nerf = NerfRepresentation(settings)
    for network in (nerf.field.density_net, nerf.field.colour_net):
        for parameter in network.parameters():
            torch.nn.init.zeros_(parameter)
    return nerf


def test_a_shaded_blob_is_lit_by_its_rendered_normals_under_the_settings_light():
    light = (0.3, -0.5, 0.8)
    nerf = blob_nerf(shading="lambertian", light=light, ambient=0.3, samples_per_ray=128)
    camera = make_cameras([20.0], [40.0], [1.6], [50.0])
    albedo = nerf.render(camera, 24, 24, shaded=False, normals=True)
    shaded = nerf.render(camera, 24, 24)
    inside = albedo.opacity[..., 0] > 0.99
    assert inside.sum() > 50
    normal = F.normalize(albedo.normal[inside], dim=-1)
    expected = 0.3 + 0.7 * (normal @ F.normalize(torch.tensor(light), dim=0)).clamp_min(0.0)
    lit_share = shaded.colour[inside][:, 0] / albedo.colour[inside][:, 0]
    assert (lit_share - expected).abs().max() < 0.05, (lit_share - expected).abs().max()
    assert lit_share.max() - lit_share.min() > 0.4  # lit and unlit sides are both in view


def shaded_gradient(nerf: NerfRepresentation) -> torch.Tensor:
    camera = make_cameras([20.0], [40.0], [1.6], [50.0])
    render = nerf.render(camera, 12, 12, torch.Generator().manual_seed(0))
    (gradient,) = torch.autograd.grad(render.colour.sum(), nerf.field.encoding.tables[0])
    return gradient


def test_the_shading_gradient_reaches_the_density_through_the_normals_and_recomputation_keeps_it(monkeypatch):
    torch.manual_seed(0)
    nerf = NerfRepresentation(tiny_settings(shading="lambertian"))
    recomputed = shaded_gradient(nerf)
    nerf.recompute = False
    kept = shaded_gradient(nerf)
    assert torch.equal(recomputed, kept)

    def normals_without_graph(density, points, create_graph):
        (gradient,) = torch.autograd.grad(density.sum(), points, retain_graph=True)
        return -F.normalize(gradient, dim=-1)

    monkeypatch.setattr(field, "density_normals", normals_without_graph)
    assert not torch.allclose(kept, shaded_gradient(nerf))


def test_training_renders_are_unshaded_before_shaded_from():
    settings = tiny_settings(shading="lambertian", shaded_from=0.25)
    assert [settings.shaded(step, 100) for step in (0, 24, 25, 99)] == [False, False, True, True]
    assert not tiny_settings().shaded(50, 100)


@pytest.mark.parametrize("overrides, message", [
    ({"shading": "phong"}, "unknown shading"),
    ({"light": (0.0, 0.0, 0.0)}, "light must be a direction"),
    ({"colour": "latent", "shading": "lambertian"}, "use shading 'albedo'"),
])
def test_settings_refuse_what_cannot_be_shaded(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_settings(**overrides)
