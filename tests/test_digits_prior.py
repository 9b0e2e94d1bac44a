"""The shipped digits prior: loads through the diffusers backend, samples recognisable digits,
and the benchmark's metrics separate real digits from degraded ones."""

import pytest
import torch

pytest.importorskip("diffusers")

from nfsd_core.digits.evaluator import load_digits_evaluator  # noqa: E402
from nfsd_core.digits.prior import load_digits_prior  # noqa: E402
from nfsd_core.digits.prompts import fine_prompt  # noqa: E402
from nfsd_core.digits.comparison import encode_prompts  # noqa: E402
from nfsd_core.digits.data import to_images  # noqa: E402
from nfsd_core.priors.degradation import degrade  # noqa: E402
from nfsd_core.digits.metrics import frechet_distance, mean_pairwise_distance, measure, real_baseline  # noqa: E402
from nfsd_core.representations.canvas import initial_latents  # noqa: E402
from nfsd_core.sampling import ddim_sample  # noqa: E402

# Measured on the shipped weights: 100% of 40 fine and 100% of 40 coarse samples, coverage 90% (DDIM 20, seed 0).
MIN_FINE_ACCURACY = 0.9
MIN_COARSE_ACCURACY = 0.85


@pytest.fixture(scope="module")
def prior():
    return load_digits_prior()


@pytest.fixture(scope="module")
def evaluator():
    return load_digits_evaluator()


def test_shipped_prior_is_a_mini_stable_diffusion(prior):
    model, codec = prior
    assert model.schedule.num_timesteps == 1000 and model.prediction_type == "epsilon"
    assert abs(model.schedule.alphas_cumprod[-1].item() - 0.0047) < 1e-3  # SD's scaled_linear 0.00085..0.012
    assert model.encode_prompt("a handwritten digit").shape == (1, 77, 64)
    assert codec.latent_channels == 4 and codec.downscale_factor == 4


def test_vae_round_trip_keeps_digits_recognisable(prior, evaluator):
    _, codec = prior
    images = to_images(evaluator.split.held_out_digits[:100])
    with torch.no_grad():
        latents = codec.encode(images)
        decoded = codec.decode(latents)
    assert 0.7 < latents.std() < 1.3  # scaling_factor = 1 / std of the training latents
    accuracy = (evaluator.predict(decoded) == evaluator.split.held_out_labels[:100]).float().mean()
    assert accuracy >= 0.95


def test_ddim_samples_are_recognised_by_the_classifier(prior, evaluator):
    model, codec = prior
    rows = [fine_prompt(d) for d in range(10) for _ in range(4)] + ["an odd handwritten digit"] * 20 \
        + ["an even handwritten digit"] * 20
    latents = ddim_sample(model, encode_prompts(model, rows), initial_latents((len(rows), 4, 8, 8), 0), steps=20,
                          views=rows)
    with torch.no_grad():
        images = codec.decode(latents)
    fine = measure(evaluator, images[:40], latents[:40], rows[:40])
    coarse = measure(evaluator, images[40:], latents[40:], rows[40:])
    assert fine["accuracy"] >= MIN_FINE_ACCURACY
    assert coarse["accuracy"] >= MIN_COARSE_ACCURACY and coarse["coverage"] >= 0.8


def test_metrics_put_real_digits_near_the_floor_and_degraded_ones_far_from_it(prior, evaluator):
    sklearn = pytest.importorskip("sklearn")  # noqa: F841 - the held-out digits come from scikit-learn
    from nfsd_core.digits.data import load_digit_split

    _, codec = prior
    held_out = load_digit_split()
    rows = [fine_prompt(int(d)) for d in held_out.held_out_labels[:80]]
    real = to_images(held_out.held_out_digits[:80])
    degraded = degrade(real, torch.Generator().manual_seed(0))
    with torch.no_grad():
        real_metrics = measure(evaluator, real, codec.encode(real), rows)
        degraded_metrics = measure(evaluator, degraded, codec.encode(degraded), rows)
    floor = real_baseline(evaluator, codec.encode, rows)
    assert real_metrics["accuracy"] >= 0.95 and abs(real_metrics["latent_rms"] - floor["latent_rms"]) < 0.1
    assert real_metrics["frechet"] < 2 * floor["frechet"]  # measured: 1.3 x the floor
    assert degraded_metrics["frechet"] > 10 * floor["frechet"]  # measured: 26 x
    assert degraded_metrics["pixel_std"] < 0.6 * real_metrics["pixel_std"]
    assert degraded_metrics["diversity"] < 0.7 * real_metrics["diversity"]


def test_frechet_distance_and_pairwise_distance_closed_forms():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 3, generator=generator)
    b = torch.randn(4000, 3, generator=generator) * 2 + torch.tensor([1.0, 0.0, 0.0])
    # ||mu||^2 + tr(I + 4I - 2 * 2I) = 1 + 3
    assert frechet_distance(a, b) == pytest.approx(4.0, abs=0.25)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert mean_pairwise_distance(torch.tensor([[0.0, 0.0], [3.0, 4.0]])) == pytest.approx(5.0)
