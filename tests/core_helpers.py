"""Analytic score models for the core tests: exact noise predictions with known answers."""

from __future__ import annotations

import torch
from torch import Tensor

from nfsd_core import CallableScoreModel, NoiseSchedule


def affine_model(coefficients: dict[str, tuple[float, float]], calls: list | None = None) -> CallableScoreModel:
    """e(x_t, c) = a_c x_t + b_c per condition c; records each call's (t, conditions) in `calls`."""

    def predict(x_t: Tensor, t: Tensor, conditions: list) -> Tensor:
        if calls is not None:
            calls.append((t.clone(), list(conditions)))
        a = torch.tensor([coefficients[c][0] for c in conditions]).view(-1, 1, 1, 1)
        b = torch.tensor([coefficients[c][1] for c in conditions]).view(-1, 1, 1, 1)
        return a * x_t + b

    return CallableScoreModel(predict)


def gaussian_model(means: dict[str, float], std: float, schedule: NoiseSchedule | None = None) -> CallableScoreModel:
    """The exact eps-prediction for data z ~ N(mean_c, std^2 I) under each condition c.

    With x_t = sqrt(ab) z + sqrt(1 - ab) eps, E[eps | x_t] = sqrt(1 - ab) (x_t - sqrt(ab) mu) / (ab std^2 + 1 - ab).
    """
    schedule = schedule or NoiseSchedule.scaled_linear()

    def predict(x_t: Tensor, t: Tensor, conditions: list) -> Tensor:
        ab = schedule.alpha_bar(t).view(-1, 1, 1, 1)
        mu = torch.tensor([means[c] for c in conditions]).view(-1, 1, 1, 1)
        return (1 - ab).sqrt() * (x_t - ab.sqrt() * mu) / (ab * std**2 + 1 - ab)

    return CallableScoreModel(predict, schedule)
