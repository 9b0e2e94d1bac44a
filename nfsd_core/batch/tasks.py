"""Runs as tasks: what one run needs, and the worker that runs them, one after another.

A `Task` names a module-level `function(model, report, *arguments)` and the model it runs on
(`ModelSpec`: a loader and its arguments). A `Worker` loads that model once and keeps it for the
tasks after (a batch of a hundred prompts on one model loads it once per worker, not a hundred
times); `report(steps_done)` feeds the batch's progress bar. The same worker runs in this process
(the fallback without Ray) and inside each Ray actor, so both give the same outputs.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

Report = Callable[[int], None]


@dataclass(frozen=True)
class ModelSpec:
    """A model tasks share: `load(*arguments)` (module-level, arguments hashable and picklable)."""

    load: Callable[..., Any]
    arguments: tuple = ()

    @property
    def key(self) -> tuple:
        return self.load.__module__, self.load.__qualname__, self.arguments


@dataclass(frozen=True)
class Task:
    """One run of a batch.

    `name` is unique in the batch and keys its record; `steps` sizes its share of the progress bar;
    `function(model, report, *arguments)` runs it and returns its record (JSON values where the batch
    keeps a journal); `gpu` asks for a GPU (its model lives on CUDA); `identity` holds the settings
    that make it this run, so a journal of finished runs can tell a changed run from a finished one.
    """

    name: str
    steps: int
    model: ModelSpec
    function: Callable[..., Any]
    arguments: tuple = ()
    gpu: bool = False
    identity: dict | None = field(default=None, compare=False)


class Worker:
    """Runs tasks with `threads` torch threads, keeping the last model it loaded.

    Results depend on the thread count (the order of float reductions), so every worker of a
    batch, in this process or on Ray, runs with the same count.
    """

    def __init__(self, threads: int):
        torch.set_num_threads(threads)
        self.model_key: tuple | None = None
        self.model: Any = None

    def where(self) -> str:
        """This worker's process and host, as the batch's summary shows it."""
        return f"pid {os.getpid()} on {socket.gethostname()}"

    def run(self, task: Task, report: Report) -> Any:
        if task.model.key != self.model_key:
            self.model = self.model_key = None  # free the last model before the next one loads
            self.model = task.model.load(*task.model.arguments)
            self.model_key = task.model.key
        return task.function(self.model, report, *task.arguments)
