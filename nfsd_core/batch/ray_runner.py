"""A batch on Ray: one actor per worker, each a `Worker` that keeps its model loaded between runs.

Each actor asks for the resources of its runs: `--threads` CPUs, and one GPU for runs whose model
lives on CUDA. Runs go to idle actors in order (those of one model together). A run whose worker
process dies (killed, out of memory, its node lost) is run once more on a new actor; runs with
checkpoints resume from the last one. A run that raises fails alone. Workers report their steps
to a small `ProgressBoard` actor, which the batch's process reads for its progress bar.

Without `--address`, a local Ray is started for the batch, even where one already runs on this
machine (`ray start`: pass `--address auto` to join it), with no dashboard, no usage statistics sent
unless RAY_USAGE_STATS_ENABLED says so, and a small object store (runs return records, not
tensors); its workers import from where this process does, and it is shut down afterwards. With
`--address`, the batch joins that cluster: every node needs the pack installed and the runs' files
(models, outputs) at the same paths. A Ray this process already started (`ray.init()` in a
notebook) is used as it is.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import time
from collections import Counter, deque
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from ..usage import UsageError
from .runner import BatchOptions, Driver
from .tasks import Task, Worker

ATTEMPTS = 2  # a run whose worker dies runs once more
OBJECT_STORE_BYTES = 256 * 2**20
REPORT_EVERY = 0.2  # seconds between a worker's progress reports
WAIT = 0.25  # seconds the batch's process waits for a finished run before it reads the progress again


class RayWorker(Worker):
    """A Worker inside a Ray actor."""

    def pid(self) -> int:
        return os.getpid()

    def run_reporting(self, task: Task, board: Any) -> tuple[Any, float, str]:
        """Run `task`, reporting its steps to `board` (at most every REPORT_EVERY seconds, and the
        last); returns its result, seconds and where it ran."""
        last = 0.0

        def report(done: int) -> None:
            nonlocal last
            if time.monotonic() - last >= REPORT_EVERY or done == task.steps:
                board.report.remote(task.name, done)
                last = time.monotonic()

        started = time.perf_counter()
        result = self.run(task, report)
        return result, time.perf_counter() - started, self.where()


class ProgressBoard:
    """The steps each run has reported, by run name."""

    def __init__(self):
        self.done: dict[str, int] = {}

    def report(self, name: str, done: int) -> None:
        self.done[name] = done

    def read(self) -> dict[str, int]:
        return self.done


RemoteWorker = ray.remote(max_restarts=0)(RayWorker)
RemoteBoard = ray.remote(num_cpus=0)(ProgressBoard)


def run_on_ray(tasks: list[Task], options: BatchOptions, driver: Driver) -> None:
    started_here = connect(options, tasks)
    actors: list[Any] = []
    try:
        sizes = pool_sizes(tasks, options)
        board = RemoteBoard.remote()
        queues = {gpu: deque(task for task in tasks if task.gpu == gpu) for gpu in sizes}
        pids: dict[Any, Any] = {}

        def new_actor(gpu: bool) -> Any:
            actor = RemoteWorker.options(num_cpus=options.threads, num_gpus=int(gpu)).remote(options.threads)
            actors.append(actor)
            pids[actor] = actor.pid.remote()
            return actor

        idle = {gpu: [new_actor(gpu) for _ in range(size)] for gpu, size in sizes.items()}
        running: dict[Any, tuple[Task, Any]] = {}
        attempts: Counter[str] = Counter()
        while running or any(queues.values()):
            for gpu, queue in queues.items():
                while queue and idle[gpu]:
                    task, actor = queue.popleft(), idle[gpu].pop()
                    attempts[task.name] += 1
                    running[actor.run_reporting.remote(task, board)] = (task, actor)
            ready, _ = ray.wait(list(running), num_returns=1, timeout=WAIT)
            reported = ray.get(board.read.remote())
            for task, actor in list(running.values()):
                if task.name in reported and reported[task.name] != driver.steps_done.get(task.name):
                    driver.progressed(task.name, reported[task.name], ray.get(pids[actor]))
            for ref in ready:
                task, actor = running.pop(ref)
                try:
                    result, seconds, where = ray.get(ref)
                except RayActorError as error:  # the worker process died: a new one takes its place
                    again = attempts[task.name] < ATTEMPTS
                    if again:
                        driver.retrying(task, short(error))
                        queues[task.gpu].appendleft(task)
                    else:
                        driver.failed(task, f"its worker died {ATTEMPTS} times ({short(error)})", attempts[task.name])
                    if queues[task.gpu]:
                        idle[task.gpu].append(new_actor(task.gpu))
                except RayTaskError as error:  # the run raised: it fails alone
                    if not isinstance(error.cause, UsageError):
                        driver.bar.write(str(error))
                    driver.failed(task, short(error), attempts[task.name])
                    idle[task.gpu].append(actor)
                else:
                    driver.finished(task, result, seconds, where, attempts[task.name])
                    idle[task.gpu].append(actor)
    finally:
        for actor in actors:
            ray.kill(actor)
        if started_here:
            ray.shutdown()


def connect(options: BatchOptions, tasks: list[Task]) -> bool:
    """Start or join Ray (see the module doc); True when this call started it."""
    if ray.is_initialized():
        return False
    if options.address:
        ray.init(address=options.address, log_to_driver=False, logging_level=logging.WARNING)
    else:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a batch's own Ray reports nowhere, unless asked to
        ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                 object_store_memory=OBJECT_STORE_BYTES,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(import_path(tasks))}})
    return True


def import_path(tasks: list[Task]) -> list[str]:
    """The folders this process imports its own code from (not the Python installation's), and
    those of the tasks' top-level modules (a benchmark script imported from its folder): a local
    worker then imports what this process does."""
    functions = {task.function for task in tasks} | {task.model.load for task in tasks}
    modules = [sys.modules[function.__module__] for function in functions]
    folders = [os.path.dirname(os.path.abspath(inspect.getfile(module))) for module in modules
               if "." not in module.__name__ and module.__name__ != "__main__"]
    installation = tuple({os.path.abspath(prefix) for prefix in (sys.prefix, sys.base_prefix, sys.exec_prefix)})
    own = [os.path.abspath(entry or os.curdir) for entry in sys.path]
    own = [entry for entry in own if os.path.isdir(entry) and not entry.startswith(installation)]
    return list(dict.fromkeys(own + folders))


def pool_sizes(tasks: list[Task], options: BatchOptions) -> dict[bool, int]:
    """Actors per kind of run (False: CPU, True: GPU): --workers, or as many as the cluster holds."""
    resources = ray.cluster_resources()
    cpus, gpus = resources.get("CPU", 0), int(resources.get("GPU", 0))
    if options.threads > cpus:
        raise UsageError(f"--threads {options.threads} is more than the Ray cluster's {cpus:g} CPUs")
    counts = Counter(task.gpu for task in tasks)
    if counts[True] and not gpus:
        first = next(task.name for task in tasks if task.gpu)
        raise UsageError(f"{first} runs on CUDA, but the Ray cluster has no GPU: run it with --device cpu, or "
                         "join a cluster with GPUs (--address)")
    fits = {False: max(1, int(cpus // options.threads)), True: gpus}
    return {gpu: min(count, options.workers or fits[gpu]) for gpu, count in counts.items()}


def short(error: Exception) -> str:
    """One line for a Ray error: the run's own exception where it raised one."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    return str(error).strip().splitlines()[0]
