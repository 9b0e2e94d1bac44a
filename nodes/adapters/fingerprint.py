"""Stable digests of node inputs, so a checkpoint is only resumed by the run that wrote it."""

from __future__ import annotations

import hashlib
from typing import Any

import torch


def fingerprint(value: Any) -> str:
    """A digest of nested tensors, dicts, lists and plain values; other objects count by type name.

    CONDITIONING lists, LATENT samples and the like give the same digest in every session.
    """
    digest = hashlib.sha256()

    def feed(item: Any) -> None:
        if isinstance(item, torch.Tensor):
            digest.update(f"tensor{tuple(item.shape)}".encode())
            digest.update(item.detach().float().cpu().contiguous().numpy().tobytes())
        elif isinstance(item, dict):
            for key in sorted(item, key=str):
                feed(str(key))
                feed(item[key])
        elif isinstance(item, (list, tuple)):
            digest.update(b"[")
            for element in item:
                feed(element)
            digest.update(b"]")
        elif item is None or isinstance(item, (str, int, float, bool)):
            digest.update(repr(item).encode())
        else:
            digest.update(type(item).__name__.encode())

    feed(value)
    return digest.hexdigest()[:16]


def sampled(tensor: torch.Tensor, count: int = 64) -> torch.Tensor:
    """`count` values spread evenly over `tensor`: a cheap stand-in for hashing a large weight."""
    flat = tensor.detach().flatten()
    return flat[:: max(1, flat.numel() // count)][:count]


def sampled_weights(module: torch.nn.Module) -> list[torch.Tensor]:
    """A sample of each of `module`'s weights (see `sampled`): a cheap stand-in for hashing them all."""
    return [sampled(weight) for weight in module.state_dict().values()]


def _patch_digest_input(data: Any) -> Any:
    """Weight-patch data with its tensors sampled; weight adapters (LoRA, LoHa, ...) keep theirs in `.weights`."""
    data = getattr(data, "weights", data)
    if isinstance(data, torch.Tensor):
        return sampled(data)
    if isinstance(data, (list, tuple)):
        return [_patch_digest_input(item) for item in data]
    return data


def model_fingerprint(patcher) -> str:
    """A digest of what a MODEL (ModelPatcher) predicts with, stable across ComfyUI sessions.

    It covers the model class, a sample of every diffusion-model weight (fine-tunes change them
    all), every weight patch with its strengths (LoRAs, merges) and the object patches (a swapped
    model_sampling, say). ComfyUI's own `patches_uuid` is random per session, so it cannot serve.
    """
    patches = {
        key: [(strength_patch, type(getattr(data, "weights", data)).__name__, _patch_digest_input(data),
               strength_model, offset, getattr(function, "__name__", function))
              for strength_patch, data, strength_model, offset, function in entries]
        for key, entries in patcher.patches.items()
    }
    return fingerprint({
        "model": type(patcher.model).__name__,
        "weights": sampled_weights(patcher.model.diffusion_model),
        "patches": patches,
        "object_patches": {name: type(value).__name__ for name, value in patcher.object_patches.items()},
        "sigmas": sampled(patcher.get_model_object("model_sampling").sigmas),
    })
