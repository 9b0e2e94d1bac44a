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
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nfsd_core.digits.comparison import (  # noqa: E402
    Method, PromptSet, compare, encode_prompts, measure_groups, run_method, save_result,
)
from nfsd_core.digits.metrics import real_baseline, real_images  # noqa: E402
from nfsd_core.digits.evaluator import load_digits_evaluator  # noqa: E402
from nfsd_core.digits.prior import DIGITS_PRIOR_DIR, load_digits_prior  # noqa: E402
from nfsd_core.representations.canvas import initial_latents  # noqa: E402
from nfsd_core.timesteps import SCHEDULE_KINDS  # noqa: E402
from journal import Journal  # noqa: E402

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


def run_main(args: argparse.Namespace, prompt_set: PromptSet) -> None:
    model, codec = load_digits_prior(directory=args.prior)
    evaluator = load_digits_evaluator(args.prior)
    methods = main_methods(args.steps, args.lr, args.t_schedule)
    started = time.perf_counter(), time.process_time()
    with tqdm(total=sum(m.step_count for m in methods), desc="benchmark", unit="step") as bar:
        result = compare(model, codec, evaluator, methods, prompt_set, args.seed, progress=lambda _: bar.update())
    result.info.update(classifier=evaluator.info, wall_seconds=round(time.perf_counter() - started[0], 1),
                       cpu_seconds=round(time.process_time() - started[1], 1), torch_threads=torch.get_num_threads())
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


def sweep_records(context: dict, runs: list[tuple[Method, tuple[int, ...]]], start: str, initial: torch.Tensor,
                  journal: Journal, bar: tqdm) -> list[dict]:
    """Run each method from `initial` (named `start`) and measure it at each of its step counts."""
    model, codec, evaluator, prompt_set = (context[k] for k in ("model", "codec", "evaluator", "prompt_set"))
    records = []
    for method, steps in runs:
        key = f"{start}|{method.label}|{method.lr}|{method.t_schedule}|{max(steps)}"
        if key not in journal.done:
            _, per_step, snapshots = run_method(model, context["prompts"], prompt_set.rows(), method, initial,
                                                context["seed"], progress=lambda _: bar.update(), snapshots=steps)
            run_records = []
            for count, latents in snapshots.items():
                with torch.no_grad():
                    metrics = measure_groups(evaluator, codec.decode(latents), latents, prompt_set)
                run_records.append({"method": method.label, "lr": method.lr, "t_schedule": method.t_schedule,
                                    "steps": count, "evaluations_per_step": per_step, "metrics": metrics})
            journal.add(key, run_records)
        else:
            bar.update(max(steps))
        records += journal.done[key]
    return records


def run_sweep(args: argparse.Namespace, prompt_set: PromptSet) -> None:
    """The lr x steps x t-schedule sweep from noise, then every rule started at real digits (drift)."""
    model, codec = load_digits_prior(directory=args.prior)
    evaluator = load_digits_evaluator(args.prior)
    rows = prompt_set.rows()
    context = {"model": model, "codec": codec, "evaluator": evaluator, "prompt_set": prompt_set,
               "prompts": encode_prompts(model, rows), "seed": args.seed}
    baseline = {group: real_baseline(evaluator, codec.encode, group_prompts, args.seed)
                for group, group_prompts in prompt_set.groups().items()}
    runs = sweep_methods()
    drift_runs = [(Method(label, rule, scale, 0.01, max(DRIFT_STEPS)), DRIFT_STEPS)
                  for label, (rule, scale) in SWEEP_RULES.items()]
    with torch.no_grad():
        real = codec.encode(real_images(evaluator, rows, torch.Generator().manual_seed(args.seed + 1)))
    journal = Journal(args.output / "sweep_runs.jsonl", {"prompt_set": asdict(prompt_set), "seed": args.seed,
                                                         "prior": str(args.prior)})
    with tqdm(total=sum(max(steps) for _, steps in runs + drift_runs), desc="sweep", unit="step") as bar:
        records = sweep_records(context, runs, "noise", initial_latents((len(rows), 4, 8, 8), args.seed),
                                journal, bar)
        drift = sweep_records(context, drift_runs, "real", real, journal, bar)
    with torch.no_grad():
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
    args = parser.parse_args(argv)
    prompt_set = PromptSet(args.per_fine or (3 if args.sweep else 6), args.per_coarse or (10 if args.sweep else 20))
    (run_sweep if args.sweep else run_main)(args, prompt_set)
    return 0


if __name__ == "__main__":
    sys.exit(main())
