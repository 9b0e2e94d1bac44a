"""The discrete DDPM noise schedule that every score model exposes.

All of nfsd_core speaks the variance-preserving DDPM convention:

    x_t = sqrt(alpha_bar_t) * z + sqrt(1 - alpha_bar_t) * eps,   t in {0, ..., T - 1}

Backends that work in another parametrisation (ComfyUI's sigma space, for instance) convert at
their boundary with `sigma(t) = sqrt((1 - alpha_bar_t) / alpha_bar_t)`.
"""

from __future__ import annotations

import torch
from torch import Tensor


class NoiseSchedule:
    """`alphas_cumprod` of a discrete diffusion process, with the conversions built on it."""

    def __init__(self, alphas_cumprod: Tensor):
        alphas_cumprod = torch.as_tensor(alphas_cumprod, dtype=torch.float64).flatten()
        if alphas_cumprod.numel() < 2:
            raise ValueError("alphas_cumprod needs at least two timesteps")
        if not bool(((alphas_cumprod > 0) & (alphas_cumprod <= 1)).all()):
            raise ValueError("alphas_cumprod must lie in (0, 1]")
        if not bool((alphas_cumprod[1:] <= alphas_cumprod[:-1]).all()):
            raise ValueError("alphas_cumprod must not increase with t")
        self.alphas_cumprod = alphas_cumprod

    @classmethod
    def from_betas(cls, betas: Tensor) -> "NoiseSchedule":
        return cls(torch.cumprod(1.0 - torch.as_tensor(betas, dtype=torch.float64), dim=0))

    @classmethod
    def scaled_linear(
        cls, beta_start: float = 0.00085, beta_end: float = 0.012, num_timesteps: int = 1000
    ) -> "NoiseSchedule":
        """Stable Diffusion's schedule: betas linear in sqrt-space (diffusers' "scaled_linear")."""
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=torch.float64) ** 2
        return cls.from_betas(betas)

    @property
    def num_timesteps(self) -> int:
        return self.alphas_cumprod.numel()

    def alpha_bar(self, t: Tensor) -> Tensor:
        """alpha_bar_t for integer timesteps `t` (any shape), as float32."""
        return self.alphas_cumprod[t.long().cpu()].to(dtype=torch.float32, device=t.device)

    def sigma(self, t: Tensor) -> Tensor:
        """The sigma-space noise level of timestep t: sqrt((1 - alpha_bar) / alpha_bar)."""
        ab = self.alphas_cumprod[t.long().cpu()]
        return ((1.0 - ab) / ab).sqrt().to(dtype=torch.float32, device=t.device)

    def timestep(self, sigma: Tensor) -> Tensor:
        """The integer timestep whose sigma is nearest to `sigma` in log space."""
        log_sigmas = (((1.0 - self.alphas_cumprod) / self.alphas_cumprod).sqrt()).log()
        log_sigma = torch.as_tensor(sigma, dtype=torch.float64).cpu().log()
        index = (log_sigma.unsqueeze(-1) - log_sigmas).abs().argmin(dim=-1)
        return index.to(device=torch.as_tensor(sigma).device)

    def add_noise(self, latents: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """x_t for clean `latents` [B, ...], `noise` like it and timesteps `t` [B]."""
        ab = self.alpha_bar(t).to(latents.dtype).view(-1, *([1] * (latents.dim() - 1)))
        return ab.sqrt() * latents + (1.0 - ab).sqrt() * noise

    def __repr__(self) -> str:
        ab = self.alphas_cumprod
        return f"NoiseSchedule(T={self.num_timesteps}, alpha_bar[0]={ab[0]:.5f}, alpha_bar[-1]={ab[-1]:.5f})"
