import pytest
import torch

from nfsd_core import NoiseSchedule


def test_stable_diffusion_schedule_matches_comfyui_reference_values():
    # What ComfyUI 0.3.64's ModelSamplingDiscrete gives for SD 1.5 (its linear_start/end 0.00085/0.012, scaled_linear).
    schedule = NoiseSchedule.scaled_linear()
    t = torch.tensor([0, 250, 500, 999])
    assert torch.allclose(schedule.alpha_bar(t), torch.tensor([0.99915, 0.67379, 0.27633, 0.00466]), atol=1e-5)
    assert torch.allclose(schedule.sigma(t), torch.tensor([0.0292, 0.6958, 1.6183, 14.6146]), atol=1e-4)


def test_timestep_inverts_sigma():
    schedule = NoiseSchedule.scaled_linear()
    t = torch.arange(0, 1000, 37)
    assert torch.equal(schedule.timestep(schedule.sigma(t)), t)


def test_add_noise_is_the_variance_preserving_mixture():
    schedule = NoiseSchedule.scaled_linear()
    z, eps, t = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2), torch.tensor([10, 500, 990])
    ab = schedule.alpha_bar(t).view(-1, 1, 1, 1)
    assert torch.allclose(schedule.add_noise(z, eps, t), ab.sqrt() * z + (1 - ab).sqrt() * eps)


@pytest.mark.parametrize("alphas", [[0.9, 0.95], [1.5, 0.5], [0.0, 0.0], [0.5]])
def test_invalid_schedules_are_refused(alphas):
    with pytest.raises(ValueError):
        NoiseSchedule(torch.tensor(alphas))
