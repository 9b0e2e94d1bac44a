"""Running a batch of tasks: on Ray when it is installed, one by one in this process otherwise.

`run_tasks` is the one path every batch takes (the `batch` command and the benchmarks): it skips
the runs its journal holds as finished, runs the rest (`ray_runner` on a local or remote Ray
cluster, or a `Worker` in this process), journals each run as it finishes, shows one progress bar
over the steps of all runs, and returns every run's `Outcome`. A run that raises fails alone: the
others go on, and its outcome holds the error.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..usage import UsageError, at_least_one
from .journal import Journal
from .tasks import Task, Worker

CLUSTER_EXTRA = "pip install -e \".[cluster]\" in the pack's folder, or pip install ray"
# (task name, steps done, pid of the worker process running it): called as progress arrives
ProgressHook = Callable[[str, int, int], None]


@dataclass(frozen=True)
class BatchOptions:
    """Where a batch runs: `workers` in parallel (None: as many as the cluster's CPUs hold at
    `threads` each, or its GPUs for CUDA runs), `threads` torch threads per run, an existing Ray
    cluster at `address` (None: a local Ray started for the batch), or `in_process` without Ray."""

    workers: int | None = None
    threads: int = 1
    address: str | None = None
    in_process: bool = False


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that say where a batch runs (the `batch` command's and the benchmarks')."""
    group = parser.add_argument_group("where the runs go")
    group.add_argument("--workers", type=at_least_one, default=None,
                       help="runs in parallel (default: the Ray cluster's CPUs / --threads; one per GPU for CUDA runs)")
    group.add_argument("--threads", type=at_least_one, default=BatchOptions.threads,
                       help="torch CPU threads per run (default 1); results depend on it, so compare runs at one count")
    group.add_argument("--address", default=None, help="an existing Ray cluster (e.g. auto, ray://head:10001); "
                       "default: a local Ray on this machine's cores, started for the batch")
    group.add_argument("--in-process", action="store_true", help="run one by one in this process, without Ray")


def batch_options(args: argparse.Namespace) -> BatchOptions:
    return BatchOptions(args.workers, args.threads, args.address, args.in_process)


@dataclass
class Outcome:
    """What became of one run: `status` "done", "done earlier" (found in the journal) or "failed"."""

    name: str
    status: str
    result: Any = None
    error: str | None = None
    attempts: int = 0
    seconds: float | None = None
    worker: str | None = None


class BatchFailed(RuntimeError):
    """Runs of a batch failed; the message lists them with their errors."""


class Driver:
    """What the batch's own process sees of its runs: one progress bar over the steps of all runs,
    the journal (written here only, as runs finish) and every run's outcome."""

    def __init__(self, tasks: list[Task], journal: Journal | None, description: str,
                 on_progress: ProgressHook | None):
        from tqdm.auto import tqdm

        self.tasks, self.journal, self.on_progress = {task.name: task for task in tasks}, journal, on_progress
        self.outcomes: dict[str, Outcome] = {}
        self.steps_done: dict[str, int] = {}
        for task in tasks:
            if journal is not None and task.name in journal.done:
                self.outcomes[task.name] = Outcome(task.name, "done earlier", journal.done[task.name])
        earlier = sum(task.steps for task in tasks if task.name in self.outcomes)
        self.bar = tqdm(total=sum(task.steps for task in tasks), initial=earlier, desc=description, unit="step",
                        dynamic_ncols=True)

    def progressed(self, name: str, done: int, pid: int) -> None:
        self.bar.update(done - self.steps_done.get(name, 0))
        self.steps_done[name] = done
        if self.on_progress is not None:
            self.on_progress(name, done, pid)

    def finished(self, task: Task, result: Any, seconds: float, worker: str, attempts: int) -> None:
        self.bar.update(task.steps - self.steps_done.get(task.name, 0))
        self.steps_done[task.name] = task.steps
        if self.journal is not None:
            self.journal.add(task.name, result, task.identity)
        self.outcomes[task.name] = Outcome(task.name, "done", result, None, attempts, seconds, worker)

    def failed(self, task: Task, error: str, attempts: int, worker: str | None = None) -> None:
        self.bar.write(f"{task.name}: failed: {error}")
        self.outcomes[task.name] = Outcome(task.name, "failed", None, error, attempts, None, worker)

    def retrying(self, task: Task, error: str) -> None:
        self.bar.write(f"{task.name}: its worker died ({error}); running it again on a new worker")


def run_tasks(
    tasks: list[Task],
    options: BatchOptions = BatchOptions(),
    journal: Journal | None = None,
    description: str = "batch",
    on_progress: ProgressHook | None = None,
) -> dict[str, Outcome]:
    """Run every task not finished in `journal` (see the module doc); outcomes in the tasks' order.

    Refuses, before any run, duplicate names and tasks the journal holds as finished with other
    settings (`JournalError`).
    """
    names = [task.name for task in tasks]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"each run of a batch needs its own name; repeated: {', '.join(repeated)}")
    if journal is not None:
        for task in tasks:
            journal.check(task.name, task.identity)
    todo = grouped_by_model([task for task in tasks if journal is None or task.name not in journal.done])
    on_ray = bool(todo) and use_ray(options, len(todo))
    driver = Driver(tasks, journal, description, on_progress)
    try:
        if on_ray:
            from .ray_runner import run_on_ray

            run_on_ray(todo, options, driver)
        elif todo:
            run_in_process(todo, options, driver)
    finally:
        driver.bar.close()
    return {name: driver.outcomes[name] for name in names if name in driver.outcomes}


def grouped_by_model(tasks: list[Task]) -> list[Task]:
    """The tasks with those of one model together (in order of first appearance), so a worker
    loads each model as few times as it can."""
    order = {key: index for index, key in reversed(list(enumerate(task.model.key for task in tasks)))}
    return sorted(tasks, key=lambda task: order[task.model.key])


def ray_installed() -> bool:
    return importlib.util.find_spec("ray") is not None


def use_ray(options: BatchOptions, runs: int) -> bool:
    if options.in_process:
        return False
    if ray_installed():
        return True
    if options.address:
        raise ValueError(f"--address {options.address} needs Ray, which is not installed here: {CLUSTER_EXTRA}")
    print(f"Ray is not installed: running the {runs} runs one by one in this process. To run them in parallel "
          f"on every core (or on a cluster with --address): {CLUSTER_EXTRA}", file=sys.stderr)
    return False


def run_in_process(tasks: list[Task], options: BatchOptions, driver: Driver) -> None:
    """The runs one after another in this process (torch's thread count restored afterwards)."""
    threads = torch.get_num_threads()
    worker = Worker(options.threads)
    try:
        for task in tasks:
            started = time.perf_counter()
            try:
                result = worker.run(task, lambda done, name=task.name: driver.progressed(name, done, os.getpid()))
            except Exception as error:  # the run fails alone; an interrupt (KeyboardInterrupt) stops the batch
                if not isinstance(error, UsageError):
                    traceback.print_exc()
                driver.failed(task, f"{type(error).__name__}: {error}", 1, worker.where())
            else:
                driver.finished(task, result, time.perf_counter() - started, worker.where(), 1)
    finally:
        torch.set_num_threads(threads)


def results(outcomes: dict[str, Outcome]) -> dict[str, Any]:
    """Every run's result, or BatchFailed listing the runs that failed."""
    failed = [outcome for outcome in outcomes.values() if outcome.status == "failed"]
    if failed:
        raise BatchFailed(f"{len(failed)} of {len(outcomes)} runs failed: "
                          + "; ".join(f"{outcome.name}: {outcome.error}" for outcome in failed))
    return {name: outcome.result for name, outcome in outcomes.items()}


def summary_table(tasks: list[Task], outcomes: dict[str, Outcome]) -> str:
    """A markdown table of the runs (status, attempts, steps, seconds, worker), then each failure's error."""
    lines = ["| run | status | attempts | steps | seconds | worker |", "|---|---|---|---|---|---|"]
    for task in tasks:
        outcome = outcomes.get(task.name, Outcome(task.name, "not run"))
        seconds = "-" if outcome.seconds is None else f"{outcome.seconds:.1f}"
        lines.append(f"| {task.name} | {outcome.status} | {outcome.attempts or '-'} | {task.steps} | {seconds} | "
                     f"{outcome.worker or '-'} |")
    lines += [f"\n{outcome.name} failed: {outcome.error}" for outcome in outcomes.values() if outcome.error]
    return "\n".join(lines)
