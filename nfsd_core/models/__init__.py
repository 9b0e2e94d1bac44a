"""Score models (denoisers that predict noise) and latent codecs (VAEs)."""

from .base import (
    PREDICTION_TYPES,
    FlatBatchScoreModel,
    LatentCodec,
    NoiseRequest,
    ScoreModel,
    noise_from_v,
)
from .callable import CallableScoreModel

__all__ = [
    "PREDICTION_TYPES",
    "CallableScoreModel",
    "FlatBatchScoreModel",
    "LatentCodec",
    "NoiseRequest",
    "ScoreModel",
    "noise_from_v",
]
