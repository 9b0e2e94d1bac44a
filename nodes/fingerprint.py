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
