import pytest
import torch

from nfsd_core import CallableScoreModel, NoiseRequest, NoiseSchedule
from nfsd_core.models import noise_from_v


def test_v_prediction_is_converted_to_the_true_noise():
    schedule = NoiseSchedule.scaled_linear()
    x0, eps = torch.randn(4, 4, 3, 3), torch.randn(4, 4, 3, 3)
    t = torch.tensor([5, 300, 700, 999])
    ab = schedule.alpha_bar(t).view(-1, 1, 1, 1)

    def oracle_v(x_t, t_in, conditions):
        # The v-target of a model that knows x0: v = sqrt(ab) eps - sqrt(1 - ab) x0.
        a = schedule.alpha_bar(t_in).view(-1, 1, 1, 1)
        true_eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        return a.sqrt() * true_eps - (1 - a).sqrt() * x0

    model = CallableScoreModel(oracle_v, schedule, prediction_type="v_prediction")
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    (prediction,) = model.predict_noise(x_t, t, [NoiseRequest("a prompt")])
    assert torch.allclose(prediction, eps, atol=1e-4)


def test_noise_from_v_inverts_the_v_target():
    ab = torch.tensor([0.9, 0.3])
    x0, eps = torch.randn(2, 4, 2, 2), torch.randn(2, 4, 2, 2)
    x_t = ab.sqrt().view(-1, 1, 1, 1) * x0 + (1 - ab).sqrt().view(-1, 1, 1, 1) * eps
    v = ab.sqrt().view(-1, 1, 1, 1) * eps - (1 - ab).sqrt().view(-1, 1, 1, 1) * x0
    assert torch.allclose(noise_from_v(v, x_t, ab), eps, atol=1e-5)


def test_requests_are_served_from_one_call_with_their_own_rows():
    calls = []

    def record(x_t, t, conditions):
        calls.append(list(conditions))
        return torch.stack([torch.full(x_t.shape[1:], float(len(c))) for c in conditions])

    model = CallableScoreModel(record)
    x_t, t = torch.zeros(3, 1, 1, 1), torch.tensor([1, 2, 3])
    a, bb = model.predict_noise(x_t, t, [NoiseRequest("a"), NoiseRequest("bb", torch.tensor([0, 2]))])
    assert calls == [["a", "a", "a", "bb", "bb"]]
    assert a.shape[0] == 3 and bb.shape[0] == 2 and torch.all(bb == 2)
    assert model.forward_calls == 1 and model.evaluations == 5


def test_bad_shapes_are_refused():
    model = CallableScoreModel(lambda x, t, c: x)
    with pytest.raises(ValueError, match="one timestep per batch row"):
        model.predict_noise(torch.zeros(2, 4, 2, 2), torch.tensor([1]), [NoiseRequest("a")])
    with pytest.raises(ValueError, match="batch, channels, height, width"):
        model.predict_noise(torch.zeros(4, 2, 2), torch.tensor([1, 2, 3, 4]), [NoiseRequest("a")])
