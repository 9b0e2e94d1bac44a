"""`python -m nfsd_core demo`: a same-seed SDS vs NFSD comparison on the shipped digits prior.

Runs on a CPU in a few minutes with no download: DDIM sampling (the reference), SDS at scale
100 and NFSD at 7.5 (500 steps, lr 0.01, t annealed from high to low noise: the setting the
benchmark's sweep supports), all from the same initial latents and per-step noise, on fine prompts
("a handwritten digit seven") and coarse ones ("an odd handwritten digit"). Writes grid.png
(rows = methods), results.md and results.json, and prints the tables.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .digits.comparison import Method, PromptSet, compare, markdown_table, save_result
from .usage import at_least_one

DEMO_STEPS = 500


def demo_methods(steps: int) -> list[Method]:
    return [
        Method("DDIM 50 (reference)", None, 7.5),
        Method("SDS 100", "sds", 100.0, steps=steps),
        Method("NFSD 7.5", "nfsd", 7.5, steps=steps),
    ]


def add_demo(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="same-seed SDS vs NFSD comparison on the bundled digits prior",
                                   description=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--output", default="outputs/demo", help="directory for grid.png and results.md/.json")
    parser.add_argument("--steps", type=at_least_one, default=DEMO_STEPS, help="optimisation steps per rule")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="few samples and 60 steps (a smoke test, for CI)")
    parser.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .digits.evaluator import load_digits_evaluator
    from .digits.prior import load_digits_prior

    steps = 60 if args.quick else args.steps
    prompt_set = PromptSet(per_fine=1, per_coarse=3) if args.quick else PromptSet(per_fine=3, per_coarse=10)
    methods = demo_methods(steps)
    torch.manual_seed(args.seed)
    model, codec = load_digits_prior()
    evaluator = load_digits_evaluator()
    with tqdm(total=sum(m.step_count for m in methods), desc="demo", unit="step", dynamic_ncols=True) as bar:
        result = compare(model, codec, evaluator, methods, prompt_set, args.seed, progress=lambda _: bar.update())
    output = save_result(result, prompt_set, Path(args.output))
    for group in result.baseline:
        print(f"\n{group} prompts\n{markdown_table(result, group)}")
    print(f"\nwrote {output}/grid.png, results.md, results.json")
    return 0

