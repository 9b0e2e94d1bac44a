"""Memory of one piece of work, measured as the operating system and autograd see it (Linux).

- Resident memory: `rss()` now, and `peak_rss()` since the last `reset_peak()` (/proc/self/status
  VmRSS and VmHWM; writing "5" to /proc/self/clear_refs resets the high-water mark). Freed tensors
  leave the resident set only when the allocator returns them to the system: run the process with
  MALLOC_MMAP_THRESHOLD_ (e.g. 65536, `CLEAN_MALLOC`) in its environment, so that every tensor
  above 64 kB gets its own mapping and goes back when it is freed.
- Autograd graphs: `SavedTensors` counts the bytes of the tensors autograd keeps for backward
  during a block (each storage once), leaving out storages that are parameters.
- `tensor_bytes` counts the bytes of tensors (parameters, gradients, optimiser state).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterable, Iterator

import torch

CLEAN_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def _status(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def rss() -> int:
    """Bytes resident now."""
    return _status("VmRSS")


def peak_rss() -> int:
    """Bytes resident at most since the last `reset_peak` (or the start of the process)."""
    return _status("VmHWM")


def reset_peak() -> None:
    """Start a new high-water mark at the resident memory of now."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def tensor_bytes(tensors: Iterable[torch.Tensor | None]) -> int:
    """Bytes of the distinct storages behind `tensors` (None entries are skipped)."""
    storages = {}
    for tensor in tensors:
        if tensor is not None:
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of an optimiser's per-parameter state (AdamW: the two moments and the step counters)."""
    return tensor_bytes(value for state in optimizer.state.values() for value in state.values()
                        if isinstance(value, torch.Tensor))


class SavedTensors:
    """Counts what autograd saves for backward inside `with counter.counting(parameters):` blocks:
    `bytes` of distinct storages that are not among `parameters` (weights saved by their layers
    cost nothing new). Work inside a non-reentrant checkpoint is invisible here (its own hooks
    win), which is what a checkpoint keeps: nothing but its inputs."""

    def __init__(self):
        self.storages: dict[int, int] = {}

    @property
    def bytes(self) -> int:
        return sum(self.storages.values())

    @contextmanager
    def counting(self, parameters: Iterable[torch.Tensor] = ()) -> Iterator["SavedTensors"]:
        known = {parameter.untyped_storage().data_ptr() for parameter in parameters}

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in known:
                self.storages[storage.data_ptr()] = storage.nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            yield self


class Phase:
    """Time and resident memory of one phase: `seconds`, `start` and `end` (resident bytes before
    and after), `peak` (most resident bytes during it); several calls add up their seconds."""

    def __init__(self):
        self.seconds, self.calls = 0.0, 0
        self.start = self.end = self.peak = 0

    def as_dict(self) -> dict:
        return {"seconds": round(self.seconds, 3), "calls": self.calls, "start": self.start, "end": self.end,
                "peak": self.peak}


class PhaseProbe:
    """Wraps methods so that each call is measured as a named phase: resident memory at its start
    and end, the peak in between (the high-water mark is reset at the start of every phase, so
    `peak` below is the maximum over the phases and the gaps between them), and its wall time."""

    def __init__(self):
        self.phases: dict[str, Phase] = {}
        self.overall_peak = 0
        self._wrapped: list[tuple[object, str]] = []

    def reset(self) -> None:
        self.phases, self.overall_peak = {}, rss()
        reset_peak()

    def _gap_peak(self) -> None:
        """Fold the high-water mark since the last phase into the overall peak."""
        self.overall_peak = max(self.overall_peak, peak_rss())

    def run(self, name: str, work, *args, **kwargs):
        self._gap_peak()
        phase = self.phases.setdefault(name, Phase())
        reset_peak()
        started, start = time.perf_counter(), rss()
        try:
            return work(*args, **kwargs)
        finally:
            seconds, peak, end = time.perf_counter() - started, peak_rss(), rss()
            if phase.calls == 0 or peak - start > phase.peak - phase.start:
                phase.start, phase.peak = start, peak
            phase.end, phase.seconds, phase.calls = end, phase.seconds + seconds, phase.calls + 1
            self.overall_peak = max(self.overall_peak, peak)
            reset_peak()

    def wrap(self, owner, method: str, name: str) -> None:
        """Measure every call of `owner.method` as phase `name` (until `restore`)."""
        original = getattr(owner, method)

        def measured(*args, **kwargs):
            return self.run(name, original, *args, **kwargs)

        setattr(owner, method, measured)
        self._wrapped.append((owner, method, original))

    def restore(self) -> None:
        for owner, method, original in reversed(self._wrapped):
            setattr(owner, method, original)
        self._wrapped = []

    def peak(self) -> int:
        self._gap_peak()
        return self.overall_peak
