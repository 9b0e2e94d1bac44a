"""Deterministic DDIM sampling (eta = 0) with classifier-free guidance, on any `ScoreModel`.

This is the reference that score distillation is measured against: the same denoiser, run as
the sampler it was trained for. Timesteps use Stable Diffusion's "leading" spacing with offset 1
(t = 1 + k * T / steps), and the last step lands on alpha_bar_0, as diffusers' DDIMScheduler
configured like SD does.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from .distillation import Prompts, scatter_rows
from .models.base import NoiseRequest, ScoreModel


def ddim_timesteps(steps: int, num_timesteps: int = 1000) -> Tensor:
    """Descending integer timesteps [steps]."""
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"DDIM steps must be in 1..{num_timesteps}, got {steps}")
    stride = num_timesteps // steps
    return (torch.arange(steps) * stride + 1).clamp(max=num_timesteps - 1).flip(0)


def guided_noise(
    model: ScoreModel, prompts: Prompts, x_t: Tensor, t: Tensor, scale: float, views: Sequence[str] | None = None
) -> Tensor:
    """e_u + scale (e_c - e_u) for `x_t` [B, C, H, W] at timesteps `t` [B], in one model call.

    `views` names each row's positive condition when `prompts.positive` is a mapping.
    """
    positive = prompts.positive_requests(x_t.shape[0], views)
    outputs = model.predict_noise(x_t, t, [*positive, NoiseRequest(prompts.unconditional)])
    conditional, unconditional = scatter_rows(positive, outputs, x_t), outputs[-1]
    return unconditional + scale * (conditional - unconditional)


@torch.no_grad()
def ddim_sample(
    model: ScoreModel,
    prompts: Prompts,
    noise: Tensor,
    steps: int = 50,
    scale: float = 7.5,
    views: Sequence[str] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> Tensor:
    """Clean latents [B, C, H, W] from the initial `noise` [B, C, H, W] (x_T); `on_step(index)` after each step."""
    schedule = model.schedule
    x = noise.to(model.device, torch.float32)
    timesteps = ddim_timesteps(steps, schedule.num_timesteps)
    for index, t in enumerate(timesteps.tolist()):
        previous = timesteps[index + 1].item() if index + 1 < steps else 0
        ab = schedule.alphas_cumprod[t].item()
        ab_previous = schedule.alphas_cumprod[previous].item()
        eps = guided_noise(model, prompts, x, torch.full((x.shape[0],), t, device=x.device), scale, views)
        x0 = (x - (1.0 - ab) ** 0.5 * eps) / ab**0.5
        x = ab_previous**0.5 * x0 + (1.0 - ab_previous) ** 0.5 * eps
        if on_step is not None:
            on_step(index)
    return x
