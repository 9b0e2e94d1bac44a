"""Saving and resuming an optimisation: tensors in safetensors, everything else in a small JSON.

A checkpoint is a directory with `state.safetensors` (representation parameters and buffers,
AdamW moments) and `state.json` (step, representation config, optimiser hyper-parameters, run
metadata, history). Randomness needs no saving: every step draws from generators seeded by
(seed, step) alone. Both files are written to temporary names and renamed, so an interruption
during a save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .representations.base import Representation

STATE_FILE = "state.safetensors"
META_FILE = "state.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Checkpoint:
    step: int
    metadata: dict[str, Any]
    history: list[dict[str, Any]]


def has_checkpoint(directory: str | os.PathLike) -> bool:
    directory = Path(directory)
    return (directory / STATE_FILE).is_file() and (directory / META_FILE).is_file()


def save_checkpoint(
    directory: str | os.PathLike,
    representation: Representation,
    optimizer: torch.optim.Optimizer,
    step: int,
    metadata: dict[str, Any] | None = None,
    history: list[dict[str, Any]] | None = None,
) -> Path:
    """Write the state after `step` completed steps; returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"representation.{k}": v.detach().contiguous().cpu() for k, v in representation.state_dict().items()}
    optimizer_state = optimizer.state_dict()
    for index, state in optimizer_state["state"].items():
        for key, value in state.items():
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value).detach().contiguous().cpu()
    meta = {
        "format": FORMAT_VERSION,
        "step": step,
        "representation": representation.config(),
        "optimizer_param_groups": optimizer_state["param_groups"],
        "metadata": metadata or {},
        "history": history or [],
    }
    _replace_atomically(directory / STATE_FILE, lambda path: save_file(tensors, str(path)))
    _replace_atomically(directory / META_FILE, lambda path: path.write_text(json.dumps(meta, indent=1)))
    return directory


def load_checkpoint(
    directory: str | os.PathLike, representation: Representation, optimizer: torch.optim.Optimizer
) -> Checkpoint:
    """Restore `representation` and `optimizer` in place; refuses a checkpoint of another setup."""
    directory = Path(directory)
    if not has_checkpoint(directory):
        raise FileNotFoundError(f"no checkpoint in {directory} (expected {STATE_FILE} and {META_FILE})")
    meta = json.loads((directory / META_FILE).read_text())
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"checkpoint {directory} has format {meta.get('format')}, this version reads {FORMAT_VERSION}")
    if meta["representation"] != representation.config():
        raise ValueError(
            f"checkpoint {directory} was saved for other representation settings "
            f"({describe_differences(meta['representation'], representation.config())}); "
            "resume with the same representation settings or choose another checkpoint directory"
        )
    tensors = load_file(str(directory / STATE_FILE))
    device = next(representation.parameters()).device
    representation.load_state_dict(
        {k.removeprefix("representation."): v.to(device) for k, v in tensors.items() if k.startswith("representation.")}
    )
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value if name == "step" else value.to(device)
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer_param_groups"]})
    return Checkpoint(step=meta["step"], metadata=meta["metadata"], history=meta["history"])


def describe_differences(saved: Any, current: Any) -> str:
    """The leaves where two JSON-like settings differ, as "a.b: saved X, now Y; ..." (for errors
    that must say what to change, not print two whole configurations)."""
    return "; ".join(_differences(saved, current, ""))


def _differences(saved: Any, current: Any, name: str) -> list[str]:
    if isinstance(saved, dict) and isinstance(current, dict):
        return [line for key in sorted(saved.keys() | current.keys(), key=str)
                for line in _differences(saved.get(key), current.get(key), f"{name}.{key}" if name else str(key))]
    return [] if saved == current else [f"{name or 'value'}: saved {saved!r}, now {current!r}"]


def _replace_atomically(path: Path, write) -> None:
    temporary = path.with_name(path.name + ".tmp")
    write(temporary)
    os.replace(temporary, path)
