"""Small NeRFs, analytic scenes, a tiny codec and a tiny denoiser for the NeRF tests (CPU, seconds)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from nfsd_core import CallableScoreModel, LatentCodec
from nfsd_core.nerf import (
    BackgroundSettings,
    Cameras,
    NerfSettings,
    OccupancySettings,
    Ramp,
    RegularizerSettings,
    VolumeSettings,
)
from nfsd_core.nerf.rays import camera_rays

TINY_VOLUME = VolumeSettings(
    levels=6, log2_table_size=12, base_resolution=8, finest_resolution=96, hidden_width=32
)


def tiny_settings(**overrides) -> NerfSettings:
    """A NeRF small enough to render 16 x 16 images in milliseconds."""
    values = dict(
        volume=TINY_VOLUME,
        samples_per_ray=24,
        render_sizes=(12, 16),
        size_milestones=(0.5,),
        guidance_size=32,
        occupancy=OccupancySettings(resolution=16, update_every=2, warmup_steps=3),
        regularizers=RegularizerSettings(
            sparsity=Ramp.constant(1.0), opaque=Ramp(0.0, 10.0, 0.5, 0.5), orientation=Ramp(0.0, 1.0, 0.0, 1.0)
        ),
        background=BackgroundSettings(kind="environment"),
    )
    values.update(overrides)
    return NerfSettings(**values)


class PoolingCodec(LatentCodec):
    """A fixed 'VAE': 4x4 average pooling then a fixed random 1x1 conv to 4 channels (and its pseudo-inverse)."""

    latent_channels = 4
    downscale_factor = 4

    def __init__(self, seed: int = 0):
        self.mix = torch.randn(4, 3, generator=torch.Generator().manual_seed(seed))

    def encode(self, images: Tensor) -> Tensor:
        pooled = F.avg_pool2d(images * 2 - 1, self.downscale_factor)
        return torch.einsum("oc,bchw->bohw", self.mix, pooled)

    def decode(self, latents: Tensor) -> Tensor:
        rgb = torch.einsum("co,bohw->bchw", torch.linalg.pinv(self.mix), latents)
        return F.interpolate((rgb + 1) / 2, scale_factor=self.downscale_factor, mode="nearest").clamp(0, 1)


def pull_towards_denoiser(target: float = 0.5) -> CallableScoreModel:
    """An analytic eps-predictor whose clean estimate is a constant latent (per prompt: the
    prompt's text length shifts it, so conditions matter)."""
    model = CallableScoreModel(lambda x, t, conditions: x)

    def denoise(x_t: Tensor, t: Tensor, conditions: list) -> Tensor:
        alpha_bar = model.schedule.alpha_bar(t).view(-1, 1, 1, 1)
        clean = torch.tensor([target + 0.01 * len(str(c)) for c in conditions]).view(-1, 1, 1, 1)
        return (x_t - alpha_bar.sqrt() * clean) / (1 - alpha_bar).sqrt()

    model.fn = denoise
    return model


def sphere_images(cameras: Cameras, size: int, radius: float = 0.5) -> Tensor:
    """Exact renders [B, size, size, 3] of an opaque sphere at the origin, coloured by its normal
    ((n + 1) / 2), over a white background."""
    origins, directions = camera_rays(cameras, size, size)
    along = -(origins * directions).sum(-1, keepdim=True)
    closest = origins + along * directions
    miss = closest.norm(dim=-1, keepdim=True) > radius
    depth = along - (radius**2 - closest.pow(2).sum(-1, keepdim=True)).clamp_min(0).sqrt()
    normal = F.normalize(origins + depth * directions, dim=-1)
    return torch.where(miss, torch.ones_like(normal), (normal + 1) / 2)


def psnr(prediction: Tensor, target: Tensor) -> float:
    return float(-10 * torch.log10(F.mse_loss(prediction, target)))

