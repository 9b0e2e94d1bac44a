"""Saving and resuming an optimisation: one signed file, replaced atomically, in a folder that is ours and locked.

A checkpoint folder holds
- `state.safetensors`: every tensor (representation parameters and buffers; the AdamW moments
  while the run is unfinished) and, in the safetensors header, a JSON record: format, completed
  step, the run's identity (see `identity`), per-step history, the SHA-256 of the tensors, and a
  signature of all of it (HMAC-SHA256 under a secret key only this server or user holds, see
  `signing`). The step and the tensors live in one file, so they can never come from two
  different saves; the signature means a state someone else wrote (the folder may take uploads)
  is refused instead of resumed;
- `nfsd_checkpoint.txt`, the marker that says the folder is this library's. A folder holding any
  other file is refused, so a save never overwrites or deletes a file this library did not write;
- `nfsd_checkpoint.lock`: a run holds the folder's exclusive lock (`folder_lock`) while it lives,
  so a second run on the same folder (another queue, server or process) is refused by name
  instead of overwriting the first one's saves. The operating system drops the lock when the
  process ends, kill -9 included. A checkpoint folder never lies inside another, nor holds one;
- during a save, `state.safetensors.partial`: written, flushed to disk, then renamed over the
  state. The rename is atomic, so a crash (kill -9, power loss) at any instant leaves either the
  previous complete state or the new one. A partial file left by a crash is deleted when a run
  next claims the folder.

Randomness needs no saving: every step draws from generators seeded by (seed, step) alone. A
finished run's state leaves the optimiser moments out (two thirds of a NeRF's state): the steps
are part of the run's identity, so no run can go on from it. Non-finite values are never saved.

Loading reads the header alone first, within bounds (its size, the record's JSON depth), and
checks its types, its signature, the run's identity, the step and the history, and the tensors'
names, types and shapes against the run's own, before any tensor is read: a forged 2 GiB tensor
costs nothing. Then the tensors are read and checked against their digest, and for sanity: finite
values, non-negative second moments, first moments within what Adam's averages allow beside the
second, and step counts within the record's. Every refusal names the file, what is wrong and what
to do.
"""

from __future__ import annotations

import json
import math
import os
import re
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from .bounded_text import parse_json
from .folder_lock import LockHeld, exclusive_lock
from .identity import describe_differences, tensors_digest
from .representations.base import Representation
from .signing import is_signed, load_key, sign, user_config_folder

STATE_FILE = "state.safetensors"
PARTIAL_FILE = STATE_FILE + ".partial"
MARKER_FILE = "nfsd_checkpoint.txt"
LOCK_FILE = "nfsd_checkpoint.lock"
OWN_FILES = frozenset({STATE_FILE, PARTIAL_FILE, MARKER_FILE, LOCK_FILE})
RECORD_KEY = "nfsd_checkpoint"  # the safetensors header entry holding the JSON record
FORMAT_VERSION = 3  # 3: signed; 2 (unsigned, a plain SHA-256) is refused, since it cannot be told from a forgery
MARKER_TEXT = ("This folder holds the saved state of an NFSD optimisation run (state.safetensors). NFSD only "
               "writes folders holding this file, and only its own files in them. Delete the folder to start the "
               "run over.\n")
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on a header
MAX_RECORD_DEPTH = 32
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}
MOMENTS = ("step", "exp_avg", "exp_avg_sq")  # AdamW's state of one parameter
HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")


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


@dataclass(frozen=True)
class TensorEntry:
    """A tensor as the safetensors header describes it, before its bytes are read."""

    dtype: torch.dtype
    shape: tuple[int, ...]


# --- the signing key --------------------------------------------------------------------------------------------

def checkpoint_key(folder: str | os.PathLike | None = None) -> bytes:
    """The key that signs checkpoints, kept in `folder` (default: the user's configuration folder,
    see `signing.user_config_folder`) and made there on first use."""
    folder = Path(folder) if folder is not None else user_config_folder()
    try:
        return load_key(folder)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"cannot read or make the checkpoint signing key in {folder} ({error}): make that "
                              "folder writable by this user only") from None


def signed_content(record: dict[str, Any]) -> bytes:
    """What the signature covers: the record without its signature, as canonical JSON."""
    return json.dumps({k: v for k, v in record.items() if k != "signature"}, sort_keys=True).encode()


# --- the folder: claimed, locked, never nested ------------------------------------------------------------------

@contextmanager
def hold_checkpoint_dir(directory: str | os.PathLike) -> Iterator[Path]:
    """Claim `directory` (see `claim_checkpoint_dir`) and hold its lock while the block runs: no
    other run, in this process or another, can claim it meanwhile. The same thread may claim it
    again inside the block (each save does)."""
    directory = Path(directory)
    _refuse_nested(directory)
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"the checkpoint folder {directory} is a file: choose a folder name instead")
    with ExitStack() as held:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            _refuse_foreign_files(directory)
            held.enter_context(exclusive_lock(directory / LOCK_FILE))
            (directory / PARTIAL_FILE).unlink(missing_ok=True)  # a crash's leftover: no save is under way
            if not (directory / MARKER_FILE).is_file():
                (directory / MARKER_FILE).write_text(MARKER_TEXT)
            (directory / PARTIAL_FILE).write_bytes(b"")  # the save's own file: proves the folder is writable now
            (directory / PARTIAL_FILE).unlink()
        except LockHeld:
            raise CheckpointError(f"the checkpoint folder {directory} is in use by another run (another queue, server "
                                  "or process is optimising into it): wait until it has finished, or choose another "
                                  "checkpoint folder") from None
        except OSError as error:
            raise CheckpointError(f"cannot write to the checkpoint folder {directory} ({error.strerror or error}): "
                                  "choose a folder that can be written to") from None
        yield directory


def claim_checkpoint_dir(directory: str | os.PathLike) -> Path:
    """Make `directory` a checkpoint folder of this library (created if missing) and check it is writable.

    Refuses a file, a folder holding files this library did not write (another run's checkpoint
    folder among them), a folder inside another run's checkpoint folder, a folder another run holds
    (see `hold_checkpoint_dir`), and a folder it cannot write to; deletes a partial save left by a
    crash. Returns the folder.
    """
    with hold_checkpoint_dir(directory) as claimed:
        return claimed


def _refuse_nested(directory: Path) -> None:
    """Refuse a folder inside another checkpoint folder: that run would find it as a foreign file."""
    for parent in directory.resolve().parents:
        if (parent / MARKER_FILE).is_file():
            raise CheckpointError(f"the checkpoint folder {directory} would lie inside {parent}, the checkpoint "
                                  "folder of another run, which would then refuse to resume: choose a folder outside "
                                  "it")


def _refuse_foreign_files(directory: Path) -> None:
    entries = list(directory.iterdir())
    names = {entry.name for entry in entries}
    foreign = sorted(names - OWN_FILES if MARKER_FILE in names else names)
    strange = sorted(entry.name for entry in entries
                     if entry.name in OWN_FILES and (entry.is_symlink() or not entry.is_file()))
    runs = [name for name in foreign if (directory / name / MARKER_FILE).is_file()]
    if runs:
        raise CheckpointError(f"the checkpoint folder {directory} holds the checkpoint folder of another run "
                              f"({runs[0]}): NFSD keeps each run's folder apart; choose a new or empty folder")
    if foreign or strange:
        listed = ", ".join((foreign + strange)[:5]) + (", ..." if len(foreign) + len(strange) > 5 else "")
        raise CheckpointError(
            f"the checkpoint folder {directory} holds files NFSD did not write ({listed}); NFSD never "
            "overwrites or deletes those: choose a new or empty folder for the checkpoint")


def has_checkpoint(directory: str | os.PathLike) -> bool:
    return (Path(directory) / STATE_FILE).is_file()


# --- saving -----------------------------------------------------------------------------------------------------

def non_finite_tensors(tensors: dict[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors holding NaN or infinite values."""
    return [name for name, value in tensors.items() if value.is_floating_point() and not torch.isfinite(value).all()]


def save_checkpoint(
    directory: str | os.PathLike,
    representation: Representation,
    optimizer: torch.optim.Optimizer | None,
    step: int,
    identity: dict[str, Any],
    history: list[dict[str, Any]],
    key: bytes | None = None,
) -> Path:
    """Write the state after `step` completed steps atomically, signed with `key` (default:
    `checkpoint_key()`); `optimizer` None leaves the moments out (a finished run). Refuses
    non-finite values. Returns the state file."""
    key = key if key is not None else checkpoint_key()
    tensors = {f"representation.{k}": v.detach().contiguous().cpu() for k, v in representation.state_dict().items()}
    if optimizer is not None:
        for index, state in optimizer.state_dict()["state"].items():
            for name, value in state.items():
                tensors[f"optimizer.{index}.{name}"] = torch.as_tensor(value).detach().contiguous().cpu()
    broken = non_finite_tensors(tensors)
    if broken:
        raise CheckpointError(f"refusing to save a state holding NaN or infinite values ({', '.join(broken[:3])}) "
                              f"into {directory}: it could never be resumed")
    record = {"format": FORMAT_VERSION, "step": step, "identity": identity, "history": history,
              "tensors_sha256": tensors_digest(tensors)}
    record["signature"] = sign(key, signed_content(record))
    data = save(tensors, metadata={RECORD_KEY: json.dumps(record)})  # save_file would leave its own temp files
    with hold_checkpoint_dir(directory) as directory:
        partial, path = directory / PARTIAL_FILE, directory / STATE_FILE
        with open(partial, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())  # the bytes are on disk before the rename makes them the state
        os.replace(partial, path)
        _sync_folder(directory)
    return path


# --- reading: the header first, then the tensors ----------------------------------------------------------------

def read_checkpoint(directory: str | os.PathLike, key: bytes | None = None,
                    expected: dict[str, TensorEntry] | None = None) -> Checkpoint:
    """The checkpoint in `directory`, checked to be whole, of this format and signed with `key`
    (default: `checkpoint_key()`), not yet whose run it is. With `expected` (tensor name -> what it
    must be), a tensor of another name, type or shape is refused before any is read."""
    path = Path(directory) / STATE_FILE
    record, index = _read_header(path)
    _check_record(path, record, key if key is not None else checkpoint_key())
    if expected is not None:
        _check_index(path, index, expected)
    return Checkpoint(path, record["step"], record["identity"], record["history"], _read_tensors(path, record))


def _read_header(path: Path) -> tuple[dict[str, Any], dict[str, TensorEntry]]:
    """The record and the tensor index of the safetensors file `path`, read and checked alone."""
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            prefix = file.read(8)
            length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
            if not 2 <= length <= min(MAX_HEADER_BYTES, size - 8):
                raise unusable(path, "it is not a readable safetensors file (its header size is "
                               f"{'missing' if length < 0 else length})")
            raw = file.read(length)
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except OSError as error:
        raise unusable(path, f"it is not a readable safetensors file ({error.strerror or error})") from None
    try:
        header = parse_json("its header", raw.decode("utf-8"), MAX_HEADER_BYTES, 4)
    except (UnicodeDecodeError, ValueError) as error:
        raise unusable(path, f"it is not a readable safetensors file ({error})") from None
    if not isinstance(header, dict):
        raise unusable(path, "it is not a readable safetensors file (its header is not an object)")
    metadata = header.pop("__metadata__", None) or {}
    index = {name: _tensor_entry(path, name, entry, size - 8 - length) for name, entry in header.items()}
    if not isinstance(metadata, dict) or not isinstance(metadata.get(RECORD_KEY), str):
        raise unusable(path, "it holds no NFSD record (another program wrote it, or an NFSD older than format 2)")
    try:
        record = parse_json("its record", metadata[RECORD_KEY], MAX_HEADER_BYTES, MAX_RECORD_DEPTH)
    except ValueError as error:
        raise unusable(path, str(error)) from None
    if not isinstance(record, dict):
        raise unusable(path, "its record is not a JSON object")
    return record, index


def _tensor_entry(path: Path, name: str, entry: Any, data_bytes: int) -> TensorEntry:
    """One tensor's entry of the header, checked for its types and its place in the file."""
    ok = isinstance(entry, dict) and entry.get("dtype") in DTYPES and isinstance(entry.get("shape"), list) \
        and len(entry["shape"]) <= 8 and all(type(n) is int and n >= 0 for n in entry["shape"]) \
        and isinstance(entry.get("data_offsets"), list) and len(entry["data_offsets"]) == 2 \
        and all(type(n) is int for n in entry["data_offsets"])
    if ok:
        begin, end = entry["data_offsets"]
        dtype, shape = DTYPES[entry["dtype"]], tuple(entry["shape"])
        ok = 0 <= begin <= end <= data_bytes and end - begin == math.prod(shape) * dtype.itemsize
    if not ok:
        raise unusable(path, f"it is not a readable safetensors file (the header's entry for {name[:80]!r} is damaged)")
    return TensorEntry(dtype, shape)


def _check_record(path: Path, record: dict[str, Any], key: bytes) -> None:
    """The record's format, types and signature."""
    found = record.get("format")
    if found == 2:
        raise unusable(path, "it was written by an earlier NFSD (checkpoint format 2), whose states carry no signature "
                       "and so cannot be told from forged ones")
    if found != FORMAT_VERSION:
        raise unusable(path, f"it has format {found!r}, this version reads {FORMAT_VERSION}")
    step, identity, history = record.get("step"), record.get("identity"), record.get("history")
    if type(step) is not int or step < 0 or not isinstance(identity, dict) or not isinstance(history, list) \
            or not isinstance(record.get("tensors_sha256"), str) or not HEX_DIGEST.match(record["tensors_sha256"]):
        raise unusable(path, "its record lacks a step count, the run's identity, the history or the tensors' digest")
    if not is_signed(key, signed_content(record), record.get("signature")):
        raise unusable(path, "it does not carry this server's signature: another server or user wrote it (a checkpoint "
                       "resumes only where its signing key is), or it was changed since, or forged")
    if len(history) != step:
        raise unusable(path, f"it records {len(history)} steps of history for step {step}")


def _check_index(path: Path, index: dict[str, TensorEntry], expected: dict[str, TensorEntry]) -> None:
    """Every tensor in the file is one `expected` names, of its type and shape (the representation's first)."""
    for name, entry in sorted(index.items(), key=lambda item: not item[0].startswith("representation.")):
        wanted = expected.get(name)
        if wanted is None:
            what = "optimiser state" if name.startswith("optimizer.") else "tensor"
            raise unusable(path, f"it holds {what} {name[:80]!r}, which this run does not have")
        if entry != wanted:
            what, short = name.split(".", 1)
            raise unusable(path, f"{what} tensor {short!r} is {entry.dtype} {list(entry.shape)}, this run's is "
                           f"{wanted.dtype} {list(wanted.shape)}")


def _read_tensors(path: Path, record: dict[str, Any]) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt") as file:
            tensors = {key: file.get_tensor(key) for key in file.keys()}
    except (OSError, SafetensorError) as error:
        raise unusable(path, f"it is not a readable safetensors file ({error})") from None
    if tensors_digest(tensors) != record["tensors_sha256"]:
        raise unusable(path, "its tensors do not match the digest saved with them (the file was changed or damaged)")
    return tensors


# --- loading into a run -----------------------------------------------------------------------------------------

def expected_tensors(representation: Representation, optimizer: torch.optim.Optimizer) -> dict[str, TensorEntry]:
    """What a checkpoint of this run may hold: the representation's state and AdamW's per parameter."""
    expected = {f"representation.{name}": TensorEntry(value.dtype, tuple(value.shape))
                for name, value in representation.state_dict().items()}
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    for index, parameter in enumerate(parameters):
        expected[f"optimizer.{index}.step"] = TensorEntry(torch.float32, ())
        for name in MOMENTS[1:]:
            expected[f"optimizer.{index}.{name}"] = TensorEntry(parameter.dtype, tuple(parameter.shape))
    return expected


def load_checkpoint(
    directory: str | os.PathLike,
    representation: Representation,
    optimizer: torch.optim.Optimizer,
    identity: dict[str, Any],
    key: bytes | None = None,
) -> Checkpoint:
    """Restore `representation` and `optimizer` in place from the checkpoint of the run `identity`
    (see `identity.run_identity`), signed with `key` (default: `checkpoint_key()`); refuses, before
    changing anything, a checkpoint of another run or one that is unsigned, damaged or insane."""
    path = Path(directory) / STATE_FILE
    record, index = _read_header(path)
    _check_record(path, record, key if key is not None else checkpoint_key())
    if record["identity"] != identity:
        raise CheckpointError(f"the checkpoint {path} belongs to another run "
                              f"({describe_differences(record['identity'], identity)}). Use the same settings to "
                              "resume, or another checkpoint folder.")
    step, steps = record["step"], identity["steps"]
    if step > steps:
        raise unusable(path, f"it is at step {step} of a {steps}-step run")
    _check_index(path, index, expected_tensors(representation, optimizer))
    checkpoint = Checkpoint(path, step, record["identity"], record["history"], _read_tensors(path, record))
    saved = {k.removeprefix("representation."): v for k, v in checkpoint.tensors.items()
             if k.startswith("representation.")}
    _check_tensors(path, saved, representation.state_dict(), "representation")
    moments = _optimizer_state(path, checkpoint, optimizer) if step < steps else {}
    if step < steps and step > 0 and not moments:
        raise unusable(path, f"it holds no optimiser state, which an unfinished run (step {step} of {steps}) needs")
    device = next(representation.parameters()).device
    representation.load_state_dict({k: v.to(device) for k, v in saved.items()})
    if moments:
        optimizer.load_state_dict({"state": moments, "param_groups": optimizer.state_dict()["param_groups"]})
    return checkpoint


def moment_ratio_bound(betas: tuple[float, float]) -> float:
    """The largest exp_avg^2 / exp_avg_sq that AdamW's averages can reach, whatever the gradients.

    exp_avg = sum_i a_i g_i and exp_avg_sq = sum_i w_i g_i^2 with a_i = (1-b1) b1^i, w_i = (1-b2) b2^i,
    so by Cauchy-Schwarz exp_avg^2 <= (sum_i a_i^2 / w_i) exp_avg_sq = (1-b1)^2 / ((1-b2)(1 - b1^2/b2))
    exp_avg_sq when b1^2 < b2 (AdamW's defaults: 5.5); infinite otherwise.
    """
    beta1, beta2 = betas
    if not beta1 ** 2 < beta2 < 1:
        return math.inf
    return (1 - beta1) ** 2 / ((1 - beta2) * (1 - beta1 ** 2 / beta2))


def _optimizer_state(path: Path, checkpoint: Checkpoint,
                     optimizer: torch.optim.Optimizer) -> dict[int, dict[str, torch.Tensor]]:
    """The saved AdamW state per parameter index, checked for sanity: all of a parameter's state or
    none, finite, step counts whole and within the record's, second moments non-negative and first
    moments within `moment_ratio_bound` of them (a forged state could otherwise make the first step
    NaN)."""
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in checkpoint.tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    bound = moment_ratio_bound(optimizer.param_groups[0]["betas"]) * (1 + 1e-3)  # float32 rounding
    for index, moments in state.items():
        name = f"optimiser state of parameter {index}"
        if set(moments) != set(MOMENTS):
            raise unusable(path, f"its {name} lacks {sorted(set(MOMENTS) - set(moments))}")
        step, average, square = moments["step"], moments["exp_avg"].double(), moments["exp_avg_sq"].double()
        if not (torch.isfinite(average).all() and torch.isfinite(square).all() and torch.isfinite(step)):
            raise unusable(path, f"its {name} holds NaN or infinite values")
        if step != step.round() or not 1 <= float(step) <= checkpoint.step:
            raise unusable(path, f"its {name} counts {float(step):g} steps, not a whole number from 1 to the "
                           f"{checkpoint.step} the record has")
        if (square < 0).any():
            raise unusable(path, f"its {name} has negative second moments (exp_avg_sq), which squares never give")
        if (average.square() > bound * square + 1e-30).any():
            raise unusable(path, f"its {name} has first moments (exp_avg) larger than its second moments allow")
        state[index] = {"step": step, "exp_avg": moments["exp_avg"].to(parameters[index].device),
                        "exp_avg_sq": moments["exp_avg_sq"].to(parameters[index].device)}
    return state


def _check_tensors(path: Path, saved: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str) -> None:
    if saved.keys() != expected.keys():
        missing, unexpected = sorted(expected.keys() - saved.keys()), sorted(saved.keys() - expected.keys())
        raise unusable(path, f"its {what} tensors are not this run's (missing {missing[:3]}, unexpected "
                        f"{unexpected[:3]})")
    broken = non_finite_tensors(saved)
    if broken:
        raise unusable(path, f"{what} tensor {broken[0]!r} holds NaN or infinite values")


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
