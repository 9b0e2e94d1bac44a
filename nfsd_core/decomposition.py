"""The score decomposition view of the NFSD paper (figures 2 to 4), for one latent and several t.

At x_t = sqrt(ab_t) z + sqrt(1 - ab_t) eps the maps are, in latent space:
    delta_C         e_c - e_u                      (the condition direction; NFSD's and SDS's)
    delta_D         e_u if t < 200 else e_u - e_n  (NFSD's domain direction)
    noise_residual  e_u - eps                      (what SDS adds to s delta_C)
    delta_N         noise_residual - delta_D       (the noise NFSD leaves out)
The first three come from the rules' own components, evaluated on one batch of predictions per t.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from .budget import FLOAT_BYTES, Progress
from .distillation import Prompts, ScoreDistillation
from .guidance import NFSD, make_rule
from .models.base import ScoreModel

COMPONENTS = ("delta_C", "delta_D", "noise_residual", "delta_N")


def decomposition_image_bytes(timesteps: int, batch: int, pixels: int) -> int:
    """Bytes of the images of a decomposition: every map of COMPONENTS at each timestep as RGB
    images of `pixels` pixels, kept three times (the map, its decode and the caller's copy)."""
    return 3 * len(COMPONENTS) * timesteps * batch * 3 * pixels * FLOAT_BYTES


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
    progress: Progress | None = None,
) -> ScoreDecomposition:
    """The maps of COMPONENTS for `latents` [B, C, h, w] at each of `timesteps`, one batched model
    call per timestep (so memory does not grow with their number), with `progress(timesteps done,
    timesteps)` after each.

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
    sds = make_rule("sds")
    per_timestep: dict[str, list[Tensor]] = {name: [] for name in COMPONENTS}
    for index, timestep in enumerate(t):
        rows_t = timestep.repeat(batch)
        predictions = guidance.predictions(latents.detach(), rows_t, noise)
        nfsd = guidance.rule.terms(predictions, rows_t, guidance.scale).components
        maps = {"delta_C": nfsd["delta_C"], "delta_D": nfsd["delta_D"],
                "noise_residual": sds.terms(predictions, rows_t, 1.0).components["noise_residual"]}
        maps["delta_N"] = maps["noise_residual"] - maps["delta_D"]
        for name in COMPONENTS:
            per_timestep[name].append(maps[name])
        if progress is not None:
            progress(index + 1, len(t))
    return ScoreDecomposition(t=t, maps={name: torch.stack(per_timestep[name]) for name in COMPONENTS}, noise=noise)


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
