"""What the batch path (nfsd_core.batch) costs and gains, measured on a reduced shapes benchmark.

    python benchmarks/batch_benchmark.py      # -> benchmarks/results/batch/results.md, results.json

One run of this script measures, each on a fresh output folder and every run at 1 torch thread:

- loop: the benchmark's runs called one after another in this process (the prior loaded once),
  with no journal, progress bar or scheduler: the floor of any way to run them;
- in-process: `shapes_benchmark.py --in-process`, the batch path without Ray;
- 1 worker, 2 workers: `shapes_benchmark.py --workers N`, each starting and stopping a local Ray;
- 2 workers, one killed: as above, but the worker running the first run is killed (SIGKILL) after
  that run's step --kill-at; the run runs again on a new worker.

Every mode must give the same records (timings aside) and the same turntable frames; the script
checks it and writes what it found. This process imports and loads the prior once before the
timings, so the loop and in-process times hold no first import; Ray's worker processes start cold
each time, which is part of what Ray costs. Then the cost of the path itself, apart from the runs:
a batch of 1 and of --empty-tasks + 1 tasks that do nothing, on one Ray worker and in this process
(startup = the batch of 1; per task = the difference over the extra tasks; fastest of 3 each).
The load average before and after each mode is recorded, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import shapes_benchmark  # noqa: E402
from nfsd_core.batch.runner import BatchOptions, results, run_tasks  # noqa: E402
from nfsd_core.batch.tasks import ModelSpec, Report, Task  # noqa: E402
from nfsd_core.shapes.demo import TextToNerf  # noqa: E402
from nfsd_core.shapes.prior import SHAPES_PRIOR_DIR  # noqa: E402

OUTPUT = ROOT / "benchmarks" / "results" / "batch"
TIMINGS = ("seconds_per_step", "minutes")
REPEATS = 3  # of each empty batch; the fastest counts
SEED = 0  # the one seed of every run compared


def no_model() -> None:
    return None


def nothing(model: None, report: Report) -> None:
    report(1)


def empty_batch(count: int, options: BatchOptions) -> float:
    """Seconds to run a batch of `count` tasks that do nothing."""
    started = time.perf_counter()
    results(run_tasks([Task(f"empty {index}", 1, ModelSpec(no_model), nothing) for index in range(count)], options,
                      description=f"{count} empty"))
    return time.perf_counter() - started


def load() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def timed(mode: Callable[[], dict[str, dict]]) -> tuple[dict[str, dict], dict]:
    """Run `mode` (returning records by run); its records and {seconds, load before, load after}."""
    before, started = load(), time.perf_counter()
    records = mode()
    return records, {"seconds": round(time.perf_counter() - started, 1), "load_before": before, "load_after": load()}


def without_timings(records: dict[str, dict]) -> dict[str, dict]:
    return {key: {name: value for name, value in record.items() if name not in TIMINGS}
            for key, record in records.items()}


def same_frames(folder: Path, reference: Path) -> bool:
    files = sorted(path.name for path in reference.iterdir())
    return files == sorted(path.name for path in folder.iterdir()) and all(
        torch.equal(torch.load(folder / name), torch.load(reference / name)) for name in files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prior", type=Path, default=SHAPES_PRIOR_DIR)
    parser.add_argument("--steps", type=int, default=100, help="steps per run (the benchmark's own: 600)")
    parser.add_argument("--prompts", type=int, default=3, help="the benchmark's first N prompts")
    parser.add_argument("--methods", nargs="+", default=["SDS 100", "NFSD 7.5"], choices=list(shapes_benchmark.METHODS))
    parser.add_argument("--kill-at", type=int, default=50, help="the step after which the first run's worker is killed")
    parser.add_argument("--empty-tasks", type=int, default=200)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="batch-benchmark-"))  # each mode's outputs, compared, then deleted
    prompts = shapes_benchmark.PROMPTS[: args.prompts]
    base = TextToNerf(steps=args.steps)
    benchmark_flags = ["--prior", str(args.prior), "--steps", str(args.steps), "--prompts", str(args.prompts),
                       "--methods", *args.methods, "--seeds", str(SEED)]

    def tasks(folder: Path) -> list[Task]:
        (folder / "frames").mkdir(parents=True, exist_ok=True)
        return shapes_benchmark.benchmark_tasks(args.prior, args.methods, [SEED], prompts, base, folder / "frames")

    warm = tasks(work / "warm-up")[0].model
    warm.load(*warm.arguments)  # this process's imports, so that the loop and in-process runs time no first import

    def loop() -> dict[str, dict]:
        runs = tasks(work / "loop")
        model = runs[0].model.load(*runs[0].model.arguments)
        return {task.name: task.function(model, lambda done: None, *task.arguments) for task in runs}

    def benchmark(name: str, *flags: str) -> Callable[[], dict[str, dict]]:
        def run() -> dict[str, dict]:
            assert shapes_benchmark.main([*benchmark_flags, "--output", str(work / name), *flags]) == 0
            written = json.loads((work / name / "results.json").read_text())["records"]
            return {shapes_benchmark.run_key(method, prompt, SEED): by_seed[f"seed {SEED}"]
                    for method, by_prompt in written.items() for prompt, by_seed in by_prompt.items()}
        return run

    killed: dict = {}

    def killing() -> dict[str, dict]:
        runs = tasks(work / "2 workers, one killed")
        first = runs[0].name

        def kill_after_step(name: str, done: int, pid: int) -> None:
            if name == first and done >= args.kill_at and "pid" not in killed and pid != os.getpid():
                killed.update(run=name, pid=pid, after_step=done)
                os.kill(pid, signal.SIGKILL)

        outcomes = run_tasks(runs, BatchOptions(workers=2), description="killed", on_progress=kill_after_step)
        killed["attempts"] = {name: outcome.attempts for name, outcome in outcomes.items()}
        return results(outcomes)

    modes = {"loop": loop, "in-process": benchmark("in-process", "--in-process"),
             "1 worker": benchmark("1 worker", "--workers", "1"), "2 workers": benchmark("2 workers", "--workers", "2"),
             "2 workers, one killed": killing}
    measured, records = {}, {}
    for name, mode in modes.items():
        records[name], measured[name] = timed(mode)
        print(f"{name}: {measured[name]['seconds']} s", flush=True)
    for name in modes:
        measured[name]["same_records"] = without_timings(records[name]) == without_timings(records["loop"])
        measured[name]["same_frames"] = same_frames(work / name / "frames", work / "loop" / "frames")
    shutil.rmtree(work)

    empty = {}
    for where, options in (("1 Ray worker", BatchOptions(workers=1)), ("in-process", BatchOptions(in_process=True))):
        seconds = {count: min(empty_batch(count, options) for _ in range(REPEATS))
                   for count in (1, args.empty_tasks + 1)}
        empty[where] = {"batch_of_1_seconds": round(seconds[1], 2),
                        "per_task_ms": round(1000 * (seconds[args.empty_tasks + 1] - seconds[1]) / args.empty_tasks, 1)}

    runs = len(args.methods) * len(prompts)
    settings = {"steps": args.steps, "prompts": [prompt for prompt, _, _ in prompts], "methods": args.methods,
                "runs": runs, "threads": 1, "kill_at": args.kill_at, "empty_tasks": args.empty_tasks,
                "cpus": os.cpu_count(), "nerf": base.nerf.to_config(), "timesteps": asdict(base.timesteps)}
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps({"settings": settings, "modes": measured, "killed": killed,
                                                          "empty_tasks": empty}, indent=1))
    loop_seconds = measured["loop"]["seconds"]
    lines = [f"{runs} runs of {args.steps} steps ({', '.join(args.methods)} x {len(prompts)} prompts), 1 torch thread "
             f"each, on {os.cpu_count()} CPU cores\n",
             "| mode | wall s | vs loop | overhead / run s | same records | same frames | load before -> after |",
             "|---|---|---|---|---|---|---|"]
    for name, row in measured.items():
        lines.append(f"| {name} | {row['seconds']:.1f} | {row['seconds'] / loop_seconds:.2f} | "
                     f"{(row['seconds'] - loop_seconds) / runs:+.1f} | {'yes' if row['same_records'] else 'NO'} | "
                     f"{'yes' if row['same_frames'] else 'NO'} | {row['load_before'][0]:.2f} -> "
                     f"{row['load_after'][0]:.2f} |")
    lines += ["", f"1 worker / 2 workers: {measured['1 worker']['seconds'] / measured['2 workers']['seconds']:.2f}x",
              f"killed: {killed.get('run')} after step {killed.get('after_step')}, attempts {killed.get('attempts')}",
              "", "| empty tasks | batch of 1, s | per extra task, ms |", "|---|---|---|"]
    lines += [f"| {where} | {row['batch_of_1_seconds']:.2f} | {row['per_task_ms']:.1f} |"
              for where, row in empty.items()]
    (args.output / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    import batch_benchmark  # Ray's workers find the empty tasks' functions by this module's name, not __main__

    raise SystemExit(batch_benchmark.main())
