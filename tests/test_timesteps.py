import pytest
import torch

from nfsd_core import NoiseStream, Prompts, ScoreDistillation, TimestepSchedule

from core_helpers import affine_model


def test_uniform_timesteps_cover_the_range_and_stay_inside_it():
    schedule = TimestepSchedule(t_min=0.02, t_max=0.98)
    t = schedule.timesteps(0, 10, torch.linspace(0, 0.9999, 5001))
    assert t.min() == 20 and t.max() == 980


def test_max_t_is_annealed_at_the_milestone():
    schedule = TimestepSchedule(t_max=0.98, t_max_end=0.5, anneal_at=0.5)
    high = torch.full((100,), 0.9999)
    assert schedule.timesteps(49, 100, high).max() == 980
    assert schedule.timesteps(50, 100, high).max() == 500


@pytest.mark.parametrize("kind", ["sqrt_anneal", "decreasing"])
def test_deterministic_schedules_fall_from_t_max_to_t_min(kind):
    schedule = TimestepSchedule(kind=kind)
    t = [int(schedule.timesteps(step, 50, torch.rand(2))[0]) for step in range(50)]
    assert t[0] == 980 and t[-1] == 20
    assert all(a >= b for a, b in zip(t, t[1:]))


def test_sqrt_anneal_drops_faster_early_than_linear():
    sqrt = TimestepSchedule(kind="sqrt_anneal").timesteps(10, 101, torch.rand(1))
    linear = TimestepSchedule(kind="decreasing").timesteps(10, 101, torch.rand(1))
    assert sqrt < linear


@pytest.mark.parametrize(
    "settings, message",
    [({"t_min": 0.5, "t_max": 0.5}, "t_min < t_max"), ({"t_min": 0.9, "t_max": 0.2}, "t_min < t_max"),
     ({"kind": "cosine"}, "unknown timestep schedule"), ({"t_max_end": 0.01}, "t_max_end"),
     ({"anneal_at": 1.5}, "anneal_at")],
)
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        TimestepSchedule(**settings)


def test_noise_stream_depends_on_seed_and_step_only():
    a, b = NoiseStream(3), NoiseStream(3)
    b.draw(7, (2, 4, 8, 8))  # drawing other steps first changes nothing
    for x, y in zip(a.draw(5, (2, 4, 8, 8)), b.draw(5, (2, 4, 8, 8))):
        assert torch.equal(x, y)
    assert not torch.equal(a.draw(5, (2, 4, 8, 8))[1], a.draw(6, (2, 4, 8, 8))[1])
    assert not torch.equal(a.draw(5, (2, 4, 8, 8))[1], NoiseStream(4).draw(5, (2, 4, 8, 8))[1])


def test_every_rule_sees_the_same_timesteps_and_noise_under_one_seed():
    model = affine_model({"cat": (0.3, 0.2), "": (0.1, 0.0), "ugly": (0.2, 0.1)})
    prompts = Prompts.from_text(model, "cat", negative_prompt="ugly")
    z = torch.randn(2, 4, 4, 4)
    draws = {}
    for rule in ("nfsd", "sds", "csd", "sds_negative"):
        guidance = ScoreDistillation(model, prompts, rule, seed=11)
        draws[rule] = [guidance(z, step, 20) for step in range(20)]
    for rule, steps in draws.items():
        for reference, other in zip(draws["nfsd"], steps):
            assert torch.equal(reference.t, other.t) and torch.equal(reference.noise, other.noise), rule
