"""The distillation rules measured on the shipped digits prior, against DDIM sampling and real digits.

    python benchmarks/digits_benchmark.py            # main table + grid -> benchmarks/results/digits/
    python benchmarks/digits_benchmark.py --sweep    # lr x steps x t-schedule per rule -> sweep.md/.json

Every method starts from the same initial latents and draws the same (t, noise) per step; the main
table runs every rule for 500 steps at lr 0.01 with t annealed from high to low noise (sqrt_anneal),
the setting the sweep supports for all of them. The tables report, per prompt group (fine: one
digit; coarse: odd / even / any digit): classifier accuracy, coverage of the coarse prompts'
digits, Frechet distance in PCA-20 space to held-out real digits (the real-digit row is the floor
at this sample size), diversity, latent RMS and pixel std (saturation), and denoiser evaluations
per step and per image.

Each method (each sweep setting) runs as an `nfsd_core.batch` task: `--workers N` on a local Ray,
`--address` on a cluster, `--in-process` without Ray; every run uses `--threads` torch threads
(default 1), so the numbers do not depend on how many workers ran them. Finished runs are
journalled (runs.jsonl, sweep_runs.jsonl), so an interrupted benchmark resumes where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nfsd_core.batch.journal import Journal  # noqa: E402
from nfsd_core.batch.runner import add_batch_arguments, batch_options, results, run_tasks  # noqa: E402
from nfsd_core.batch.tasks import ModelSpec, Report, Task  # noqa: E402
from nfsd_core.digits.comparison import (  # noqa: E402
    Method, PromptSet, comparison_result, encode_prompts, measure_groups, measure_method, run_method, save_result,
)
from nfsd_core.digits.metrics import real_baseline, real_images  # noqa: E402
from nfsd_core.digits.evaluator import load_digits_evaluator  # noqa: E402
from nfsd_core.digits.prior import DIGITS_PRIOR_DIR, load_digits_prior  # noqa: E402
from nfsd_core.representations.canvas import initial_latents  # noqa: E402
from nfsd_core.timesteps import SCHEDULE_KINDS  # noqa: E402

OUTPUT = ROOT / "benchmarks" / "results" / "digits"


def main_methods(steps: int, lr: float, t_schedule: str) -> list[Method]:
    return [
        Method("DDIM 50 (reference)", None, 7.5),
        Method("SDS 7.5", "sds", 7.5, lr, steps, t_schedule),
        Method("SDS 100", "sds", 100.0, lr, steps, t_schedule),
        Method("NFSD 7.5", "nfsd", 7.5, lr, steps, t_schedule),
        Method("CSD", "csd", None, lr, steps, t_schedule),
        Method("SDS-negative 100", "sds_negative", 100.0, lr, steps, t_schedule),
    ]


def load_digits(prior: str) -> tuple:
    """The digits prior's score model and codec, and its evaluator: what every run of a worker shares."""
    return (*load_digits_prior(directory=prior), load_digits_evaluator(prior))


def main_run(loaded: tuple, report: Report, method: Method, prompt_set: PromptSet, seed: int, image_file: str) -> dict:
    """One method of the main table as a batch task: its metrics and record, its images saved to `image_file`."""
    model, codec, evaluator = loaded
    rows = prompt_set.rows()
    images, metrics, record = measure_method(model, codec, evaluator, method, prompt_set, encode_prompts(model, rows),
                                             initial_latents((len(rows), 4, 8, 8), seed), seed,
                                             progress=lambda step: report(step + 1))
    torch.save(images, image_file)
    return {"metrics": metrics, "method": record}


def run_main(args: argparse.Namespace, prompt_set: PromptSet) -> None:
    started = time.perf_counter()
    methods = main_methods(args.steps, args.lr, args.t_schedule)
    journal = Journal(args.output / "runs.jsonl", {"prompt_set": asdict(prompt_set), "seed": args.seed,
                                                   "prior": str(args.prior), "steps": args.steps, "lr": args.lr,
                                                   "t_schedule": args.t_schedule, "threads": args.threads})
    images_dir = args.output / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    image_files = {m.label: images_dir / (hashlib.sha256(m.label.encode()).hexdigest()[:16] + ".pt") for m in methods}
    prior = ModelSpec(load_digits, (str(args.prior),))
    tasks = [Task(m.label, m.step_count, prior, main_run, (m, prompt_set, args.seed, str(image_files[m.label])))
             for m in methods]
    done = results(run_tasks(tasks, batch_options(args), journal, description="benchmark"))
    model, codec, evaluator = load_digits(str(args.prior))
    runs = {label: (torch.load(image_files[label]), record["metrics"], record["method"])
            for label, record in done.items()}
    result = comparison_result(codec, evaluator, prompt_set, args.seed, runs)
    result.info.update(classifier=evaluator.info, wall_seconds=round(time.perf_counter() - started, 1),
                       torch_threads=args.threads)
    output = save_result(result, prompt_set, args.output)
    print((output / "results.md").read_text())
    print(f"classifier held-out accuracy {evaluator.info['classifier_held_out_accuracy']:.1%}; wrote {output}")


SWEEP_RULES = {"SDS 7.5": ("sds", 7.5), "SDS 100": ("sds", 100.0), "NFSD 7.5": ("nfsd", 7.5),
               "CSD": ("csd", None), "SDS-negative 100": ("sds_negative", 100.0)}
SWEEP_LRS = (0.003, 0.01, 0.03)
SWEEP_STEPS = (100, 250, 500, 1000)
ANNEAL_STEPS = 500
DRIFT_STEPS = (100, 250, 500)


def sweep_methods() -> list[tuple[Method, tuple[int, ...]]]:
    """(method, measured step counts): uniform t measured along one 1000-step run, sqrt-annealed t
    (which depends on the run's length) as its own 500-step run."""
    runs = []
    for schedule, steps in (("uniform", SWEEP_STEPS), ("sqrt_anneal", (ANNEAL_STEPS,))):
        for (label, (rule, scale)), lr in itertools.product(SWEEP_RULES.items(), SWEEP_LRS):
            runs.append((Method(label, rule, scale, lr, max(steps), schedule), steps))
    return runs


def sweep_run(loaded: tuple, report: Report, method: Method, snapshots: tuple[int, ...], start: str,
              prompt_set: PromptSet, seed: int) -> list[dict]:
    """One sweep run as a batch task: `method` from `start` ("noise": the seed's latents; "real":
    encoded real digits), measured at each step count of `snapshots`."""
    model, codec, evaluator = loaded
    rows = prompt_set.rows()
    if start == "noise":
        initial = initial_latents((len(rows), 4, 8, 8), seed)
    else:
        with torch.no_grad():
            initial = codec.encode(real_images(evaluator, rows, torch.Generator().manual_seed(seed + 1)))
    _, per_step, kept = run_method(model, encode_prompts(model, rows), rows, method, initial, seed,
                                   progress=lambda step: report(step + 1), snapshots=snapshots)
    records = []
    for count, latents in kept.items():
        with torch.no_grad():
            metrics = measure_groups(evaluator, codec.decode(latents), latents, prompt_set)
        records.append({"method": method.label, "lr": method.lr, "t_schedule": method.t_schedule, "steps": count,
                        "evaluations_per_step": per_step, "metrics": metrics})
    return records


def run_sweep(args: argparse.Namespace, prompt_set: PromptSet) -> None:
    """The lr x steps x t-schedule sweep from noise, then every rule started at real digits (drift)."""
    drift_runs = [(Method(label, rule, scale, 0.01, max(DRIFT_STEPS)), DRIFT_STEPS)
                  for label, (rule, scale) in SWEEP_RULES.items()]
    journal = Journal(args.output / "sweep_runs.jsonl", {"prompt_set": asdict(prompt_set), "seed": args.seed,
                                                         "prior": str(args.prior), "threads": args.threads})
    prior = ModelSpec(load_digits, (str(args.prior),))
    keys = {"noise": [], "real": []}
    tasks = []
    for start, runs in (("noise", sweep_methods()), ("real", drift_runs)):
        for method, steps in runs:
            key = f"{start}|{method.label}|{method.lr}|{method.t_schedule}|{max(steps)}"
            keys[start].append(key)
            tasks.append(Task(key, max(steps), prior, sweep_run, (method, steps, start, prompt_set, args.seed)))
    done = results(run_tasks(tasks, batch_options(args), journal, description="sweep"))
    records = [record for key in keys["noise"] for record in done[key]]
    drift = [record for key in keys["real"] for record in done[key]]
    model, codec, evaluator = load_digits(str(args.prior))
    rows = prompt_set.rows()
    baseline = {group: real_baseline(evaluator, codec.encode, group_prompts, args.seed)
                for group, group_prompts in prompt_set.groups().items()}
    with torch.no_grad():
        real = codec.encode(real_images(evaluator, rows, torch.Generator().manual_seed(args.seed + 1)))
        start = measure_groups(evaluator, codec.decode(real), real, prompt_set)
    drift.insert(0, {"method": "start: real digits", "lr": 0.0, "t_schedule": "-", "steps": 0, "metrics": start})
    record = {"baseline": baseline, "prompt_set": asdict(prompt_set), "seed": args.seed, "runs": records,
              "drift": drift}
    (args.output / "sweep.json").write_text(json.dumps(record, indent=1))
    best = [min((r for r in records if r["method"] == label), key=frechet_sum) for label in SWEEP_RULES]
    (args.output / "sweep.md").write_text(
        "### Best setting per rule (lowest fine + coarse Frechet distance)\n\n" + sweep_table(best, baseline)
        + "\n### From noise\n\n" + sweep_table(records, baseline)
        + "\n### From real digits (lr 0.01): does the rule leave the data alone?\n\n" + sweep_table(drift, baseline))
    print((args.output / "sweep.md").read_text())


def frechet_sum(record: dict) -> float:
    return record["metrics"]["fine"]["frechet"] + record["metrics"]["coarse"]["frechet"]


def sweep_table(records: list[dict], baseline: dict) -> str:
    header = ("| method | t | lr | steps | fine acc | fine FD | coarse acc | coverage | coarse FD | coarse diversity "
              "| latent RMS | colour |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]

    def row(name: str, t: str, lr: str, steps: str, fine: dict, coarse: dict) -> str:
        return (f"| {name} | {t} | {lr} | {steps} | {fine['accuracy']:.0%} | {fine['frechet']:.2f} | "
                f"{coarse['accuracy']:.0%} | {coarse['coverage']:.0%} | {coarse['frechet']:.2f} | "
                f"{coarse['diversity']:.2f} | {(fine['latent_rms'] + coarse['latent_rms']) / 2:.2f} | "
                f"{(fine['colour'] + coarse['colour']) / 2:.3f} |")

    for r in records:
        lines.append(row(r["method"], r["t_schedule"], f"{r['lr']:g}", str(r["steps"]),
                         r["metrics"]["fine"], r["metrics"]["coarse"]))
    lines.append(row("real digits (floor)", "-", "-", "-", baseline["fine"], baseline["coarse"]))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", action="store_true", help="sweep lr, steps and t-schedule for every rule")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--steps", type=int, default=500, help="optimisation steps of the main table")
    parser.add_argument("--lr", type=float, default=0.01, help="AdamW learning rate of the main table")
    parser.add_argument("--t-schedule", default=Method.t_schedule, choices=SCHEDULE_KINDS,
                        help="timestep schedule of the main table")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-fine", type=int, default=None, help="samples per fine prompt (default 6, sweep 3)")
    parser.add_argument("--per-coarse", type=int, default=None, help="samples per coarse prompt (default 20, sweep 10)")
    parser.add_argument("--prior", type=Path, default=DIGITS_PRIOR_DIR, help="digits prior directory")
    add_batch_arguments(parser)
    args = parser.parse_args(argv)
    prompt_set = PromptSet(args.per_fine or (3 if args.sweep else 6), args.per_coarse or (10 if args.sweep else 20))
    (run_sweep if args.sweep else run_main)(args, prompt_set)
    return 0


if __name__ == "__main__":
    import digits_benchmark  # Ray's workers find the runs' functions by this module's name, not __main__

    sys.exit(digits_benchmark.main())
