"""The test-size check of issue 18's fixes: one short NFSD distillation, before and after each, against the floor.

    python benchmarks/experiments/size_band.py                          # the test's prompt
    python benchmarks/experiments/size_band.py --prompt "a green cube"  # -> benchmarks/results/experiments/size_band_*

The run of `tests/test_shapes_prior.py` (NFSD 7.5, 300 steps, the demo's settings, seed 0), measured by the
benchmark's own `shapes_benchmark.run_one`: with the demo's training cameras before the first fix
(`shapes.data.TRAINER_CAMERAS`, the prior's data's) and threestudio's sparsity weight 10, with the fixed-frame
cameras (`SHAPE_CAMERAS`) and sparsity 10, with the demo's settings now (fixed frame, sparsity 30), and the
untrained NeRF (what learning nothing scores). About 2 minutes a run on one core.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import shapes_benchmark  # noqa: E402
from nfsd_core.shapes.data import SHAPE_CAMERAS, TRAINER_CAMERAS  # noqa: E402
from nfsd_core.shapes.demo import TextToNerf  # noqa: E402
from nfsd_core.shapes.evaluator import load_shapes_judge  # noqa: E402
from nfsd_core.shapes.prior import SHAPES_PRIOR_DIR, load_shapes_prior  # noqa: E402
from size_nerf import at_sparsity_10  # noqa: E402

OUTPUT = ROOT / "benchmarks" / "results" / "experiments"
PROMPTS = {prompt: (shape, colour) for prompt, shape, colour in shapes_benchmark.PROMPTS if colour is not None}
PROMPT, STEPS = "a yellow cone", 300  # the test's
COLUMNS = [("rendered size", "rendered_size", "{:.2f}"), ("volume ratio", "volume_ratio", "{:.2f}"),
           ("IoU", "iou", "{:.2f}"), ("best rescaled IoU", "best_rescaled_iou", "{:.2f}"),
           ("at scale", "rescale", "{:.2f}"),
           ("nearest object", "nearest_object", "{}"), ("judge: shape", "judge_shape", "{:.0%}"),
           ("judge: colour", "judge_colour", "{:.0%}")]


def runs(steps: int) -> dict[str, TextToNerf]:
    demo = replace(TextToNerf(), steps=steps)
    return {"untrained NeRF (floor)": replace(demo, steps=0),
            f"before: the trainer's cameras, sparsity 10, {steps} steps": at_sparsity_10(demo, cameras=TRAINER_CAMERAS),
            f"fixed frame 0.5, sparsity 10, {steps} steps": at_sparsity_10(demo, cameras=SHAPE_CAMERAS),
            f"the demo's: fixed frame 0.5, sparsity 30, {steps} steps": demo}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", default=PROMPT, choices=list(PROMPTS))
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--prior", type=Path, default=SHAPES_PRIOR_DIR)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, codec = load_shapes_prior(directory=args.prior)
    judge = load_shapes_judge(args.prior)
    records = {}
    for name, run in runs(args.steps).items():
        records[name], _ = shapes_benchmark.run_one(model, codec, judge, args.prompt, *PROMPTS[args.prompt], run)
        print(name, json.dumps({key: records[name][key] for _, key, _ in COLUMNS}), flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    stem = f"size_band_{PROMPTS[args.prompt][0]}"
    (args.output / f"{stem}.json").write_text(json.dumps({"prompt": args.prompt, "steps": args.steps,
                                                          "records": records}, indent=1))
    lines = [f"*{args.prompt}*, NFSD 7.5, seed 0\n",
             "| run | " + " | ".join(title for title, _, _ in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    lines += ["| " + name + " | " + " | ".join(form.format(record[key]) for _, key, form in COLUMNS) + " |"
              for name, record in records.items()]
    (args.output / f"{stem}.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
