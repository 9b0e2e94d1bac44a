"""A run's identity: everything that decides its result, as JSON.

A checkpoint may only resume the run that wrote it, so the identity is saved with it and compared
on load; any difference refuses the resume and names the setting. One function builds it for
every caller (the optimisation loop, the command line, the ComfyUI node, which also names its
temp folder after it), so no caller can forget a setting.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import TYPE_CHECKING, Any, Mapping

import torch

if TYPE_CHECKING:
    from .distillation import ScoreDistillation
    from .representations.base import Representation


def guidance_identity(guidance: ScoreDistillation) -> dict[str, Any]:
    """The guidance settings that change a run's result (the model and prompts are the caller's
    extras); an edit's source latents and a mask by their digests, only where the guidance has them."""
    rule = guidance.rule
    identity = {
        "rule": rule.name,
        "rule_settings": dataclasses.asdict(rule) if dataclasses.is_dataclass(rule) else {},
        "scale": guidance.scale,
        "weighting": guidance.weighting,
        "grad_clip": guidance.grad_clip,
        "seed": guidance.noise_stream.seed,
        "timesteps": dataclasses.asdict(guidance.timesteps),
    }
    for name in ("source_latents", "mask"):
        tensor = getattr(guidance, name)
        if tensor is not None:
            identity[name] = tensors_digest({name: tensor})
    return identity


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of named tensors: names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(tensors.items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def run_identity(
    representation: Representation,
    guidance: ScoreDistillation,
    steps: int,
    optimizer_settings: Any,
    extras: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The identity of optimising `representation` (in its current, starting state) for `steps` steps.

    `optimizer_settings` is the run's OptimizerSettings; `extras` are JSON values only the caller
    knows, e.g. a fingerprint of the model and the prompts. Tuples come back as lists, as from JSON.
    """
    identity = {
        "guidance": guidance_identity(guidance),
        "steps": steps,
        "optimizer": dataclasses.asdict(optimizer_settings),
        "representation": representation.config(),
        "starting_state": tensors_digest(representation.state_dict()),
        "extras": dict(extras or {}),
    }
    not_finite = non_finite_leaves(identity)
    if not_finite:
        raise ValueError(f"run settings {', '.join(not_finite)} are not finite numbers (NaN or infinity): give "
                         "finite values")
    return json.loads(json.dumps(identity))


def non_finite_leaves(value: Any, name: str = "") -> list[str]:
    """The dotted names of the NaN or infinite floats in nested dicts and lists."""
    if isinstance(value, dict):
        return [leaf for key, item in value.items() for leaf in non_finite_leaves(item, f"{name}.{key}" if name else key)]
    if isinstance(value, (list, tuple)):
        return [leaf for index, item in enumerate(value) for leaf in non_finite_leaves(item, f"{name}[{index}]")]
    return [name] if isinstance(value, float) and not math.isfinite(value) else []


def identity_digest(identity: dict[str, Any]) -> str:
    """A short, stable name for an identity (e.g. for a run's own folder)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def describe_differences(saved: Any, current: Any) -> str:
    """The leaves where two JSON-like settings differ, as "a.b: saved X, now Y; ..." (for errors
    that must say what to change, not print two whole configurations)."""
    return "; ".join(_differences(saved, current, ""))


def _differences(saved: Any, current: Any, name: str) -> list[str]:
    if isinstance(saved, dict) and isinstance(current, dict):
        return [line for key in sorted(saved.keys() | current.keys(), key=str)
                for line in _differences(saved.get(key), current.get(key), f"{name}.{key}" if name else str(key))]
    return [] if saved == current else [f"{name or 'value'}: saved {saved!r}, now {current!r}"]
