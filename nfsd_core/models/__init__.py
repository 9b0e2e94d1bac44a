"""Score models (denoisers that predict noise) and latent codecs (VAEs)."""

from .base import (
    PREDICTION_TYPES,
    SD_LATENT_CHANNELS,
    SD_PIXELS_PER_LATENT,
    FlatBatchScoreModel,
    LatentCodec,
    NoiseRequest,
    ScoreModel,
    noise_from_v,
)
from .callable import CallableScoreModel

__all__ = [
    "PREDICTION_TYPES",
    "SD_LATENT_CHANNELS",
    "SD_PIXELS_PER_LATENT",
    "CallableScoreModel",
    "FlatBatchScoreModel",
    "LatentCodec",
    "NoiseRequest",
    "ScoreModel",
    "noise_from_v",
]
