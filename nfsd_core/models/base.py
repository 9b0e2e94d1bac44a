"""What nfsd_core needs of a diffusion model: noise predictions, and a way in and out of latent space.

A `ScoreModel` answers "what noise does the denoiser see in x_t under condition c?" for several
conditions at once, from ONE batched network call where the backend allows it. Conditions are
opaque to the core: a backend makes them (`encode_prompt` for text backends, CONDITIONING lists
in ComfyUI) and the rules only pass them back.

A `LatentCodec` is the VAE: images in [0, 1] to the latents the score model works on, and back.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from ..schedule import NoiseSchedule

PREDICTION_TYPES = ("epsilon", "v_prediction")


@dataclass(frozen=True)
class NoiseRequest:
    """Evaluate the denoiser under `condition` for the batch rows `rows` (None: every row)."""

    condition: Any
    rows: Tensor | None = None


def noise_from_v(v: Tensor, x_t: Tensor, alpha_bar: Tensor) -> Tensor:
    """eps from a v-prediction: v = sqrt(ab) eps - sqrt(1 - ab) x0 gives eps = sqrt(ab) v + sqrt(1 - ab) x_t."""
    ab = alpha_bar.to(x_t.dtype).view(-1, *([1] * (x_t.dim() - 1)))
    return ab.sqrt() * v + (1.0 - ab).sqrt() * x_t


class ScoreModel(abc.ABC):
    """A denoiser that predicts noise, with its schedule and an evaluation counter.

    `evaluations` counts latent rows pushed through the network (the cost unit of the paper's
    comparison: SDS 2 per sample, NFSD 2 or 3); `forward_calls` counts network invocations.
    """

    def __init__(self, schedule: NoiseSchedule, prediction_type: str = "epsilon"):
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        self.schedule = schedule
        self.prediction_type = prediction_type
        self.evaluations = 0
        self.forward_calls = 0

    def predict_noise(self, x_t: Tensor, t: Tensor, requests: Sequence[NoiseRequest]) -> list[Tensor]:
        """Noise predictions for `x_t` [B, C, H, W] at integer timesteps `t` [B].

        Returns one tensor per request, holding the rows that request asked for, in order.
        Runs without autograd: score distillation never differentiates through the denoiser.
        """
        if x_t.dim() != 4:
            raise ValueError(f"x_t must be [batch, channels, height, width], got shape {tuple(x_t.shape)}")
        if t.shape != (x_t.shape[0],):
            raise ValueError(f"t must hold one timestep per batch row, got {tuple(t.shape)} for batch {x_t.shape[0]}")
        if not requests:
            return []
        with torch.no_grad():
            predictions = self._predict_noise(x_t, t, requests)
        self.evaluations += sum(x_t.shape[0] if r.rows is None else r.rows.numel() for r in requests)
        return predictions

    @abc.abstractmethod
    def _predict_noise(self, x_t: Tensor, t: Tensor, requests: Sequence[NoiseRequest]) -> list[Tensor]:
        """Backend work behind `predict_noise`; must add the network calls it makes to `forward_calls`."""

    def encode_prompt(self, text: str) -> Any:
        """A condition for a text prompt. Text-conditioned backends override this."""
        raise NotImplementedError(f"{type(self).__name__} does not encode text prompts")

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")


class FlatBatchScoreModel(ScoreModel):
    """A backend whose network takes a flat batch where every row carries its own condition.

    All requests are concatenated into one batch, so each `predict_noise` is a single network
    call; subclasses only implement `denoise` and get the prediction-type conversion for free.
    """

    def _predict_noise(self, x_t: Tensor, t: Tensor, requests: Sequence[NoiseRequest]) -> list[Tensor]:
        segments = [(r.condition, slice(None) if r.rows is None else r.rows) for r in requests]
        x = torch.cat([x_t[rows] for _, rows in segments])
        tt = torch.cat([t[rows] for _, rows in segments])
        counts = [x_t[rows].shape[0] for _, rows in segments]
        output = self.denoise(x, tt, [(condition, n) for (condition, _), n in zip(segments, counts)])
        self.forward_calls += 1
        if self.prediction_type == "v_prediction":
            output = noise_from_v(output, x, self.schedule.alpha_bar(tt))
        return list(output.split(counts))

    @abc.abstractmethod
    def denoise(self, x_t: Tensor, t: Tensor, segments: Sequence[tuple[Any, int]]) -> Tensor:
        """Raw network output (eps or v, per `prediction_type`) for a flat batch.

        `segments` lists (condition, row count) in batch order; the counts sum to x_t.shape[0].
        """


# Stable Diffusion 1.x / 2.x / SDXL's VAE: 4 latent channels, 8 pixels per latent (what ComfyUI's
# EmptyLatentImage assumes); the defaults wherever a codec is not at hand.
SD_LATENT_CHANNELS = 4
SD_PIXELS_PER_LATENT = 8


class LatentCodec(abc.ABC):
    """The VAE between images [B, 3, H, W] in [0, 1] and score-model latents [B, C, H/f, W/f].

    Latents here are the ones the score model sees (already multiplied by the VAE's scaling
    factor). `encode` must stay differentiable with respect to the images.
    """

    latent_channels: int = SD_LATENT_CHANNELS
    downscale_factor: int = SD_PIXELS_PER_LATENT

    @abc.abstractmethod
    def encode(self, images: Tensor) -> Tensor: ...

    @abc.abstractmethod
    def decode(self, latents: Tensor) -> Tensor: ...
