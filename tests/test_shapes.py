"""The 3D prior's data: rendered objects agree with the NeRF renderer and keep their exact truth."""

import pytest
import torch

pytest.importorskip("diffusers")

from nfsd_core.nerf import make_cameras  # noqa: E402
from nfsd_core.nerf.field import FieldSamples  # noqa: E402
from nfsd_core.nerf.rays import camera_rays  # noqa: E402
from nfsd_core.nerf.rendering import render_rays  # noqa: E402
from nfsd_core.priors.tokenizer import build_tokenizer  # noqa: E402
from nfsd_core.shapes.data import (  # noqa: E402
    CAPTION_PROBABILITIES, make_shape_set, real_caption, render_samples, vocabulary_words,
)
from nfsd_core.shapes.objects import FRONTED, OBJECTS  # noqa: E402
from nfsd_core.shapes.render import Scene, render_scenes  # noqa: E402

SIZE = 32


class SolidSphere(torch.nn.Module):
    """A NeRF field holding an opaque sphere of radius 0.3 (the objects' sphere)."""

    radius = 1.0

    def density(self, points):
        return 200.0 * (points.norm(dim=-1) < 0.3).float()

    def forward(self, points, normals=False, create_graph=False):
        return FieldSamples(self.density(points), torch.full(points.shape[:-1] + (3,), 0.5), None)


def test_a_sphere_rendered_here_and_by_the_nerf_renderer_covers_the_same_pixels_at_the_same_depth():
    cameras = make_cameras([-10.0, 15.0, 45.0], [0.0, 120.0, -60.0], [1.0, 1.25, 1.5], [40.0, 55.0, 70.0])
    ours = render_scenes([Scene("sphere", "red", (0.0, 0.0, 0.0))] * 3, cameras, SIZE, supersample=1)  # centre rays
    origins, directions = camera_rays(cameras, SIZE, SIZE)
    nerf = render_rays(SolidSphere(), origins.reshape(-1, 3), directions.reshape(-1, 3), samples_per_ray=512)
    nerf_mask = nerf.opacity.view(3, 1, SIZE, SIZE)
    intersection = torch.minimum(ours.mask, nerf_mask).sum()
    union = torch.maximum(ours.mask, nerf_mask).sum()
    assert intersection / union > 0.98
    inside = (ours.mask > 0.99) & (nerf_mask > 0.99)
    nerf_depth = nerf.depth.view(3, 1, SIZE, SIZE) / nerf_mask.clamp_min(1e-6)
    assert (ours.depth[inside] - nerf_depth[inside]).abs().max() < 0.02


def test_the_truth_of_each_image_renders_it_again_and_names_the_nerf_trainers_view():
    shape_set = make_shape_set(12, seed=3)
    samples = shape_set.samples
    cameras = make_cameras(*([getattr(s, name) for s in samples] for name in ("elevation", "azimuth", "distance", "fovy")))
    assert [s.view for s in samples] == cameras.views
    assert torch.allclose(render_samples(samples, cameras), shape_set.images, atol=1e-6)
    assert torch.equal(make_shape_set(12, seed=3).images, shape_set.images)


def test_fronted_objects_look_different_from_the_front_and_the_back():
    cameras = make_cameras([10.0] * 2, [0.0, 180.0], [1.25] * 2, [50.0] * 2)
    background = (0.5, 0.5, 0.5)
    mug = render_scenes([Scene("mug", "white", background)] * 2, cameras, SIZE).mask
    assert torch.allclose(mug[0], mug[1].flip(-1), atol=0.05)  # the handle changes sides
    assert (mug[0] - mug[1]).abs().sum() > 10
    house = render_scenes([Scene("house", "white", background)] * 2, cameras, SIZE).image
    dark = (house.mean(dim=1) < 0.3).sum(dim=(1, 2))  # the door
    assert dark[0] > 15 and dark[1] == 0
    assert set(FRONTED) <= set(OBJECTS) and len(OBJECTS) >= 6


def test_captions_name_colour_shape_and_view_in_words_the_tokenizer_keeps_whole():
    shape_set = make_shape_set(40, seed=0)
    generator = torch.Generator().manual_seed(0)
    captions = [real_caption(shape_set.samples[i % 40], generator) for i in range(2000)]
    empty = sum(c == "" for c in captions) / len(captions)
    assert abs(empty - (1 - sum(CAPTION_PROBABILITIES.values()))) < 0.03
    sample = shape_set.samples[0]
    assert {f"a {sample.colour} {sample.shape}, {sample.view} view", f"a {sample.shape}"} <= set(captions[::40])
    tokenizer = build_tokenizer(vocabulary_words())
    for caption in {c for c in captions if c}:
        words = caption.replace(",", " ").split()
        assert len(tokenizer(caption, add_special_tokens=False).input_ids) == len(words) + caption.count(",")
