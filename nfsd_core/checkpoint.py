"""Saving and resuming an optimisation: one file, replaced atomically, in a folder marked as ours.

A checkpoint folder holds
- `state.safetensors`: every tensor (representation parameters and buffers; the AdamW moments
  while the run is unfinished) and, in the safetensors header, a JSON record: format, completed
  step, the run's identity (see `identity`), per-step history and a SHA-256 of all of it. The
  step and the tensors live in one file, so they can never come from two different saves;
- `nfsd_checkpoint.txt`, the marker that says the folder is this library's. A folder holding any
  other file is refused, so a save never overwrites or deletes a file this library did not write;
- during a save, `state.safetensors.partial`: written, flushed to disk, then renamed over the
  state. The rename is atomic, so a crash (kill -9, power loss) at any instant leaves either the
  previous complete state or the new one. A partial file left by a crash is deleted when a run
  next claims the folder.

Randomness needs no saving: every step draws from generators seeded by (seed, step) alone. A
finished run's state leaves the optimiser moments out (two thirds of a NeRF's state): the steps
are part of the run's identity, so no run can go on from it.

Loading refuses, with the file's path, what is wrong and what to do, a file that is unreadable,
damaged (its tensors no longer match their digest), of another format, of another run (the
settings that differ are named), or insane (step out of range, tensors of other names or shapes,
NaN or infinite values).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from .identity import describe_differences, tensors_digest
from .representations.base import Representation

STATE_FILE = "state.safetensors"
PARTIAL_FILE = STATE_FILE + ".partial"
MARKER_FILE = "nfsd_checkpoint.txt"
OWN_FILES = frozenset({STATE_FILE, PARTIAL_FILE, MARKER_FILE})
RECORD_KEY = "nfsd_checkpoint"  # the safetensors header entry holding the JSON record
FORMAT_VERSION = 2
MARKER_TEXT = ("This folder holds the saved state of an NFSD optimisation run (state.safetensors). NFSD only "
               "writes folders holding this file, and only its own files in them. Delete the folder to start the "
               "run over.\n")


class CheckpointError(ValueError):
    """A checkpoint folder or file that cannot be used; the message names the path, what is wrong and what to do."""


@dataclass(frozen=True)
class Checkpoint:
    """A saved state as read from disk: `step` completed steps, the run's `identity`, its per-step
    `history` and every saved tensor (names prefixed `representation.` or `optimizer.<index>.`)."""

    path: Path
    step: int
    identity: dict[str, Any]
    history: list[dict[str, Any]]
    tensors: dict[str, torch.Tensor]


def claim_checkpoint_dir(directory: str | os.PathLike) -> Path:
    """Make `directory` a checkpoint folder of this library (created if missing) and check it is writable.

    Refuses a file, a folder holding files this library did not write, and a folder it cannot
    write to; deletes a partial save left by a crash. Returns the folder.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"the checkpoint folder {directory} is a file: choose a folder name instead")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        entries = list(directory.iterdir())
        names = {entry.name for entry in entries}
        foreign = sorted(names - OWN_FILES if MARKER_FILE in names else names)
        strange = sorted(entry.name for entry in entries
                         if entry.name in OWN_FILES and (entry.is_symlink() or not entry.is_file()))
        if foreign or strange:
            listed = ", ".join((foreign + strange)[:5]) + (", ..." if len(foreign) + len(strange) > 5 else "")
            raise CheckpointError(
                f"the checkpoint folder {directory} holds files NFSD did not write ({listed}); NFSD never "
                "overwrites or deletes those: choose a new or empty folder for the checkpoint")
        (directory / PARTIAL_FILE).unlink(missing_ok=True)
        if MARKER_FILE not in names:
            (directory / MARKER_FILE).write_text(MARKER_TEXT)
        (directory / PARTIAL_FILE).write_bytes(b"")  # the save's own file: proves the folder is writable now
        (directory / PARTIAL_FILE).unlink()
    except OSError as error:
        raise CheckpointError(f"cannot write to the checkpoint folder {directory} ({error.strerror or error}): "
                              "choose a folder that can be written to") from None
    return directory


def has_checkpoint(directory: str | os.PathLike) -> bool:
    return (Path(directory) / STATE_FILE).is_file()


def save_checkpoint(
    directory: str | os.PathLike,
    representation: Representation,
    optimizer: torch.optim.Optimizer | None,
    step: int,
    identity: dict[str, Any],
    history: list[dict[str, Any]],
) -> Path:
    """Write the state after `step` completed steps atomically; `optimizer` None leaves the moments
    out (a finished run). Returns the state file."""
    directory = claim_checkpoint_dir(directory)
    tensors = {f"representation.{k}": v.detach().contiguous().cpu() for k, v in representation.state_dict().items()}
    if optimizer is not None:
        for index, state in optimizer.state_dict()["state"].items():
            for key, value in state.items():
                tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value).detach().contiguous().cpu()
    record = {"format": FORMAT_VERSION, "step": step, "identity": identity, "history": history}
    record["sha256"] = _digest(tensors, record)
    partial, path = directory / PARTIAL_FILE, directory / STATE_FILE
    data = save(tensors, metadata={RECORD_KEY: json.dumps(record)})  # save_file would leave its own temp files
    with open(partial, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())  # the bytes are on disk before the rename makes them the state
    os.replace(partial, path)
    _sync_folder(directory)
    return path


def read_checkpoint(directory: str | os.PathLike) -> Checkpoint:
    """The checkpoint in `directory`, checked to be whole and of this format (not yet whose it is)."""
    path = Path(directory) / STATE_FILE
    try:
        with safe_open(str(path), framework="pt") as file:
            header = file.metadata() or {}
            tensors = {key: file.get_tensor(key) for key in file.keys()}
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except (OSError, SafetensorError) as error:
        raise unusable(path, f"it is not a readable safetensors file ({error})") from None
    try:
        record = json.loads(header[RECORD_KEY])
    except KeyError:
        raise unusable(path, "it holds no NFSD record (another program wrote it, or an NFSD older than format "
                        f"{FORMAT_VERSION})") from None
    except json.JSONDecodeError as error:
        raise unusable(path, f"its record is not valid JSON ({error})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT_VERSION:
        found = record.get("format") if isinstance(record, dict) else None
        raise unusable(path, f"it has format {found!r}, this version reads {FORMAT_VERSION}")
    step, identity, history = record.get("step"), record.get("identity"), record.get("history")
    if type(step) is not int or step < 0 or not isinstance(identity, dict) or not isinstance(history, list):
        raise unusable(path, "its record lacks a step count, the run's identity or the history")
    if len(history) != step:
        raise unusable(path, f"it records {len(history)} steps of history for step {step}")
    if record.pop("sha256", None) != _digest(tensors, record):
        raise unusable(path, "its contents do not match the digest saved with them (the file was changed or damaged)")
    return Checkpoint(path, step, identity, history, tensors)


def load_checkpoint(
    directory: str | os.PathLike,
    representation: Representation,
    optimizer: torch.optim.Optimizer,
    identity: dict[str, Any],
) -> Checkpoint:
    """Restore `representation` and `optimizer` in place from the checkpoint of the run `identity`
    (see `identity.run_identity`); refuses, before changing anything, a checkpoint of another run
    or one that is damaged or insane."""
    checkpoint = read_checkpoint(directory)
    path, step = checkpoint.path, checkpoint.step
    if checkpoint.identity != identity:
        raise CheckpointError(f"the checkpoint {path} belongs to another run "
                              f"({describe_differences(checkpoint.identity, identity)}). Use the same settings to "
                              "resume, or another checkpoint folder.")
    steps = identity["steps"]
    if step > steps:
        raise unusable(path, f"it is at step {step} of a {steps}-step run")
    saved = {k.removeprefix("representation."): v for k, v in checkpoint.tensors.items()
             if k.startswith("representation.")}
    _check_tensors(path, saved, representation.state_dict(), "representation")
    moments = _optimizer_state(path, checkpoint.tensors, optimizer) if step < steps else {}
    if step < steps and step > 0 and not moments:
        raise unusable(path, f"it holds no optimiser state, which an unfinished run (step {step} of {steps}) needs")
    device = next(representation.parameters()).device
    representation.load_state_dict({k: v.to(device) for k, v in saved.items()})
    if moments:
        optimizer.load_state_dict({"state": moments, "param_groups": optimizer.state_dict()["param_groups"]})
    return checkpoint


def _optimizer_state(path: Path, tensors: dict[str, torch.Tensor],
                     optimizer: torch.optim.Optimizer) -> dict[int, dict[str, torch.Tensor]]:
    """The saved AdamW state per parameter index, checked against `optimizer`'s parameters."""
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if not key.startswith("optimizer."):
            continue
        _, index, name = (key.split(".", 2) + ["", ""])[:3]
        if not index.isdigit() or int(index) >= len(parameters) or not name:
            raise unusable(path, f"it holds optimiser state {key!r} for a parameter this run does not have")
        parameter = parameters[int(index)]
        expected = torch.Size([]) if name == "step" else parameter.shape
        if value.shape != expected or not torch.isfinite(value).all():
            raise unusable(path, f"optimiser state {key!r} has shape {list(value.shape)} (expected "
                            f"{list(expected)}) or values that are not finite")
        state.setdefault(int(index), {})[name] = value if name == "step" else value.to(parameter.device)
    return state


def _check_tensors(path: Path, saved: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str) -> None:
    if saved.keys() != expected.keys():
        missing, unexpected = sorted(expected.keys() - saved.keys()), sorted(saved.keys() - expected.keys())
        raise unusable(path, f"its {what} tensors are not this run's (missing {missing[:3]}, unexpected "
                        f"{unexpected[:3]})")
    for name, value in saved.items():
        if value.shape != expected[name].shape or value.dtype != expected[name].dtype:
            raise unusable(path, f"{what} tensor {name!r} is {value.dtype} {list(value.shape)}, this run's is "
                            f"{expected[name].dtype} {list(expected[name].shape)}")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise unusable(path, f"{what} tensor {name!r} holds NaN or infinite values")


def _digest(tensors: dict[str, torch.Tensor], record: dict[str, Any]) -> str:
    """SHA-256 of the tensors and the record (without its digest): any change to either shows."""
    return hashlib.sha256((tensors_digest(tensors) + json.dumps(record, sort_keys=True)).encode()).hexdigest()


def unusable(path: Path, what: str) -> CheckpointError:
    """The refusal of the checkpoint file `path` because of `what`, with what to do about it."""
    return CheckpointError(f"the checkpoint {path} cannot be resumed: {what}. Delete it (or its folder) to start "
                           "the run over, or choose another checkpoint folder.")


def _sync_folder(directory: Path) -> None:
    """Flush the folder's entries (the rename) to disk, where the platform allows it."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
