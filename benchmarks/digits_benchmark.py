"""The distillation rules measured on the shipped digits prior, against DDIM sampling and real digits.

    python benchmarks/digits_benchmark.py            # main table + grid -> benchmarks/results/digits/
    python benchmarks/digits_benchmark.py --sweep    # lr x steps x t-schedule per rule -> sweep.md/.json

Every method starts from the same initial latents and draws the same (t, noise) per step. The
tables report, per prompt group (fine: one digit; coarse: odd / even / any digit): classifier
accuracy, coverage of the coarse prompts' digits, Frechet distance in PCA-20 space to held-out
real digits (the real-digit row is the floor at this sample size), diversity, latent RMS and
pixel std (saturation), and denoiser evaluations per step and per image.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nfsd_core.digits.comparison import (  # noqa: E402
    Method, PromptSet, compare, encode_prompts, measure_groups, run_method, save_result,
)
from nfsd_core.digits.metrics import real_baseline  # noqa: E402
from nfsd_core.digits.prior import load_digits_evaluator, load_digits_prior  # noqa: E402
from nfsd_core.representations.canvas import initial_latents  # noqa: E402

OUTPUT = ROOT / "benchmarks" / "results" / "digits"


def main_methods(steps: int, lr: float) -> list[Method]:
    return [
        Method("DDIM 50 (reference)", None, 7.5),
        Method("SDS 7.5", "sds", 7.5, lr, steps),
        Method("SDS 100", "sds", 100.0, lr, steps),
        Method("NFSD 7.5", "nfsd", 7.5, lr, steps),
        Method("CSD", "csd", None, lr, steps),
        Method("SDS-negative 100", "sds_negative", 100.0, lr, steps),
    ]


SWEEP_RULES = {"SDS 7.5": ("sds", 7.5), "SDS 100": ("sds", 100.0), "NFSD 7.5": ("nfsd", 7.5),
               "CSD": ("csd", None), "SDS-negative 100": ("sds_negative", 100.0)}
SWEEP_LRS = (0.003, 0.01, 0.03)
SWEEP_STEPS = (100, 250, 500, 1000)
ANNEAL_STEPS = 500
SWEEP_KEYS = ("accuracy", "coverage", "frechet", "diversity", "latent_rms")


def run_main(args: argparse.Namespace, prompt_set: PromptSet) -> None:
    model, codec = load_digits_prior()
    evaluator = load_digits_evaluator()
    methods = main_methods(args.steps, args.lr)
    started = time.perf_counter(), time.process_time()
    with tqdm(total=sum(m.step_count for m in methods), desc="benchmark", unit="step") as bar:
        result = compare(model, codec, evaluator, methods, prompt_set, args.seed, progress=lambda _: bar.update())
    result.info.update(classifier=evaluator.info, wall_seconds=round(time.perf_counter() - started[0], 1),
                       cpu_seconds=round(time.process_time() - started[1], 1), torch_threads=torch.get_num_threads())
    output = save_result(result, prompt_set, args.output)
    print((output / "results.md").read_text())
    print(f"classifier held-out accuracy {evaluator.info['classifier_held_out_accuracy']:.1%}; wrote {output}")


def sweep_runs() -> list[tuple[str, float, str, tuple[int, ...]]]:
    """(rule label, lr, t schedule, measured steps): uniform t measured along one 1000-step run,
    sqrt-annealed t (which depends on the run length) as its own 500-step run."""
    runs = [(label, lr, "uniform", SWEEP_STEPS) for label, lr in itertools.product(SWEEP_RULES, SWEEP_LRS)]
    runs += [(label, lr, "sqrt_anneal", (ANNEAL_STEPS,)) for label, lr in itertools.product(SWEEP_RULES, SWEEP_LRS)]
    return runs


def run_sweep(args: argparse.Namespace, prompt_set: PromptSet) -> None:
    model, codec = load_digits_prior()
    evaluator = load_digits_evaluator()
    rows = prompt_set.rows()
    prompts = encode_prompts(model, rows)
    noise = initial_latents((len(rows), 4, 8, 8), args.seed)
    baseline = {group: real_baseline(evaluator, codec.encode, group_prompts, args.seed)
                for group, group_prompts in prompt_set.groups().items()}
    records = []
    runs = sweep_runs()
    with tqdm(total=sum(max(steps) for *_, steps in runs), desc="sweep", unit="step") as bar:
        for label, lr, schedule, steps in runs:
            rule, scale = SWEEP_RULES[label]
            method = Method(label, rule, scale, lr, max(steps), schedule)
            _, per_step, snapshots = run_method(model, prompts, rows, method, noise, args.seed,
                                                progress=lambda _: bar.update(), snapshots=steps)
            for count, latents in snapshots.items():
                with torch.no_grad():
                    metrics = measure_groups(evaluator, codec.decode(latents), latents, prompt_set)
                records.append({"method": label, "lr": lr, "t_schedule": schedule, "steps": count,
                                "evaluations_per_step": per_step, "metrics": metrics})
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "sweep.json").write_text(json.dumps({"baseline": baseline, "prompt_set": prompt_set.__dict__,
                                                        "seed": args.seed, "runs": records}, indent=1))
    (args.output / "sweep.md").write_text(sweep_table(records, baseline))
    print((args.output / "sweep.md").read_text())


def sweep_table(records: list[dict], baseline: dict) -> str:
    header = "| method | t | lr | steps | fine acc | fine FD | coarse acc | coverage | coarse FD | diversity | latent RMS |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]

    def row(name: str, t: str, lr: str, steps: str, fine: dict, coarse: dict) -> str:
        return (f"| {name} | {t} | {lr} | {steps} | {fine['accuracy']:.0%} | {fine['frechet']:.1f} | "
                f"{coarse['accuracy']:.0%} | {coarse['coverage']:.0%} | {coarse['frechet']:.1f} | "
                f"{coarse['diversity']:.2f} | {coarse['latent_rms']:.2f} |")

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
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-fine", type=int, default=6, help="samples per fine prompt (10 prompts)")
    parser.add_argument("--per-coarse", type=int, default=20, help="samples per coarse prompt (3 prompts)")
    args = parser.parse_args(argv)
    prompt_set = PromptSet(args.per_fine, args.per_coarse)
    (run_sweep if args.sweep else run_main)(args, prompt_set)
    return 0


if __name__ == "__main__":
    sys.exit(main())
