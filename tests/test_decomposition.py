"""The score decomposition view equals the rules' own components, one model call per timestep."""

import pytest
import torch

from nfsd_core import CallableScoreModel, Prompts, ScoreDistillation
from nfsd_core.decomposition import COMPONENTS, decompose_score, decomposition_images
from nfsd_core.preview import LatentToRGB

GAINS = {"a cat": 0.3, "": 0.1, "blurry": -0.2}


def analytic_denoiser(x_t, t, conditions):
    """eps = gain(condition) x_t + t / 1000: every prompt and timestep gives a different answer."""
    gain = torch.tensor([GAINS[c] for c in conditions]).view(-1, 1, 1, 1)
    return gain * x_t + t.view(-1, 1, 1, 1) / 1000


@pytest.fixture
def setup():
    model = CallableScoreModel(analytic_denoiser)
    prompts = Prompts.from_text(model, "a cat", "blurry")
    latents = torch.randn(2, 4, 5, 6, generator=torch.Generator().manual_seed(1))
    return model, prompts, latents


def test_maps_equal_the_rule_components_at_every_t(setup):
    model, prompts, latents = setup
    timesteps = [100, 500, 900]
    reported = []
    decomposition = decompose_score(model, prompts, latents, timesteps, seed=3,
                                    progress=lambda done, total: reported.append((done, total)))
    assert model.forward_calls == 3 and reported == [(1, 3), (2, 3), (3, 3)]
    assert set(decomposition.maps) == set(COMPONENTS)
    assert all(m.shape == (3, 2, 4, 5, 6) for m in decomposition.maps.values())
    for i, t in enumerate(timesteps):
        rows_t = torch.full((2,), t)
        nfsd = ScoreDistillation(model, prompts, "nfsd")(latents, 0, 1, t=rows_t, noise=decomposition.noise)
        sds = ScoreDistillation(model, prompts, "sds")(latents, 0, 1, t=rows_t, noise=decomposition.noise)
        maps = {name: m[i] for name, m in decomposition.maps.items()}
        torch.testing.assert_close(maps["delta_C"], nfsd.components["delta_C"])
        torch.testing.assert_close(maps["delta_D"], nfsd.components["delta_D"])
        torch.testing.assert_close(maps["noise_residual"], sds.components["noise_residual"])
        torch.testing.assert_close(maps["delta_N"], maps["noise_residual"] - maps["delta_D"])
    # Below the threshold delta_D is e_u itself, so delta_N is exactly -eps there.
    torch.testing.assert_close(decomposition.maps["delta_N"][0], -decomposition.noise)


def test_noise_is_seeded_and_shared_across_timesteps(setup):
    model, prompts, latents = setup
    first = decompose_score(model, prompts, latents, [300], seed=5)
    again = decompose_score(model, prompts, latents, [300, 700], seed=5)
    torch.testing.assert_close(first.noise, again.noise)
    torch.testing.assert_close(first.maps["delta_C"][0], again.maps["delta_C"][0])
    assert not torch.equal(first.noise, decompose_score(model, prompts, latents, [300], seed=6).noise)
    with pytest.raises(ValueError, match="at least one timestep"):
        decompose_score(model, prompts, latents, [])


def test_images_have_grid_shapes_and_normalised_maps(setup):
    model, prompts, latents = setup
    decomposition = decompose_score(model, prompts, latents, [100, 600])
    images = decomposition_images(decomposition, LatentToRGB(torch.randn(3, 4), torch.full((3,), 0.5)))
    assert all(image.shape == (2, 2, 3, 5, 6) for image in images.values())
    unit = decomposition_images(decomposition, lambda maps: maps)
    stds = unit["delta_C"].flatten(2).std(dim=2)
    torch.testing.assert_close(stds, torch.ones_like(stds))


def test_raising_from_progress_stops_before_the_next_timestep(setup):
    model, prompts, latents = setup

    def cancel(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        decompose_score(model, prompts, latents, [100, 500, 900], progress=cancel)
    assert model.forward_calls == 1
