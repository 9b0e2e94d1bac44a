"""A run's curves as one picture: readable panels for any history, the same picture for the same run."""

import numpy as np
import pytest
from nfsd_core.plots import HEIGHT, WIDTH, Axis, nice_ticks, run_curves, value_axis


def history(steps: int, seed: int = 0, measure: str = "latent_rms", batch: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    return {"step": list(range(steps)), "t": rng.integers(20, 980, (steps, batch)).tolist(),
            "loss": (rng.random(steps) * 10).tolist(), "grad_norm": (rng.random(steps) + 1).tolist(),
            measure: np.linspace(1.0, 0.5, steps).tolist(), "regularization": [0.0] * steps}


def ink(picture: np.ndarray) -> float:
    """The fraction of pixels that are not white."""
    return float((picture < 250).any(axis=-1).mean())


def test_a_run_gives_one_rgb_picture_and_the_same_run_the_same_picture():
    picture = run_curves(history(50), "NFSD, scale 7.5")
    assert picture.shape == (HEIGHT, WIDTH, 3) and picture.dtype == np.uint8
    assert 0.02 < ink(picture) < 0.5
    assert np.array_equal(picture, run_curves(history(50), "NFSD, scale 7.5"))
    assert not np.array_equal(picture, run_curves(history(50, seed=1), "NFSD, scale 7.5"))
    assert not np.array_equal(picture, run_curves(history(50), "SDS, scale 100"))


@pytest.mark.parametrize("steps", [1, 2, 3, 1000])
def test_any_length_is_drawn(steps):
    assert ink(run_curves(history(steps, measure="opacity", batch=2))) > 0.02


def test_missing_and_non_finite_values_are_left_out():
    columns = history(20)
    columns["loss"] = [None] * 20  # a NaN loss in every step (strict JSON's null)
    columns["grad_norm"][5] = float("inf")
    picture = run_curves(columns)
    assert picture.shape == (HEIGHT, WIDTH, 3)


def test_axes_are_round_and_wide_ranges_are_logarithmic():
    assert nice_ticks(0.0, 1.0) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert nice_ticks(1, 500) == [200.0, 400.0]
    wide = value_axis(np.array([0.01, 5.0, 300.0]))
    assert wide == Axis(0.01, 1000.0, log=True) and wide.ticks() == [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0]
    narrow = value_axis(np.array([2.0, 3.0]))
    assert not narrow.log and narrow.low < 2.0 and narrow.high > 3.0
    flat = value_axis(np.array([0.0, 0.0]))
    assert flat.low < 0.0 < flat.high
