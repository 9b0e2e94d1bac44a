"""The score decomposition view of the NFSD paper (figures 2 to 4), for one latent and several t.

At x_t = sqrt(ab_t) z + sqrt(1 - ab_t) eps the maps are, in latent space:
    delta_C         e_c - e_u                      (the condition direction; NFSD's and SDS's)
    delta_D         e_u if t < 200 else e_u - e_n  (NFSD's domain direction)
    noise_residual  e_u - eps                      (what SDS adds to s delta_C)
    delta_N         noise_residual - delta_D       (the noise NFSD leaves out)
The first three come from the rules' own components, evaluated on ONE batch of predictions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from .distillation import Prompts, ScoreDistillation
from .guidance import NFSD, make_rule
from .models.base import ScoreModel

COMPONENTS = ("delta_C", "delta_D", "noise_residual", "delta_N")


@dataclass(frozen=True)
class ScoreDecomposition:
    """`maps[name]` [T, B, C, h, w] for the timesteps `t` [T]; `noise` [B, C, h, w] made x_t."""

    t: Tensor
    maps: dict[str, Tensor]
    noise: Tensor


def decompose_score(
    model: ScoreModel,
    prompts: Prompts,
    latents: Tensor,
    timesteps: Sequence[int],
    noise: Tensor | None = None,
    seed: int = 0,
    nfsd_threshold: int = 200,
) -> ScoreDecomposition:
    """The maps of COMPONENTS for `latents` [B, C, h, w] at each of `timesteps`, from one model call.

    The same `noise` (default: drawn from `seed`) noises the latents at every t, so the columns
    of a figure differ only in t.
    """
    if not timesteps:
        raise ValueError("give at least one timestep to decompose at")
    guidance = ScoreDistillation(model, prompts, NFSD(threshold=nfsd_threshold), seed=seed)
    if noise is None:
        noise = guidance.noise_stream.draw(0, tuple(latents.shape))[1]
    noise = noise.to(device=latents.device, dtype=latents.dtype)
    batch = latents.shape[0]
    t = torch.as_tensor(list(timesteps), dtype=torch.long, device=latents.device)
    rows_t = t.repeat_interleave(batch)
    predictions = guidance.predictions(latents.detach().repeat(len(t), 1, 1, 1), rows_t, noise.repeat(len(t), 1, 1, 1))
    nfsd = guidance.rule.terms(predictions, rows_t, guidance.scale).components
    sds = make_rule("sds").terms(predictions, rows_t, 1.0).components
    flat = {"delta_C": nfsd["delta_C"], "delta_D": nfsd["delta_D"], "noise_residual": sds["noise_residual"]}
    flat["delta_N"] = flat["noise_residual"] - flat["delta_D"]
    maps = {name: flat[name].reshape(len(t), batch, *latents.shape[1:]) for name in COMPONENTS}
    return ScoreDecomposition(t=t, maps=maps, noise=noise)


def decomposition_images(
    decomposition: ScoreDecomposition, render: Callable[[Tensor], Tensor], normalize: bool = True
) -> dict[str, Tensor]:
    """`render`ed images [T, B, 3, H, W] of every map (`render`: a codec's decode or a LatentToRGB).

    With `normalize`, each map is scaled to unit standard deviation first: the components are
    much smaller than latents, and the decoder only shows structure at the scale it was trained on.
    """
    images = {}
    for name, maps in decomposition.maps.items():
        flat = maps.flatten(0, 1)
        if normalize:
            flat = flat / flat.flatten(1).std(dim=1).clamp(min=1e-8).view(-1, 1, 1, 1)
        with torch.no_grad():
            rendered = render(flat)
        images[name] = rendered.reshape(*maps.shape[:2], *rendered.shape[1:])
    return images
