"""What the 3D prior's own samples show: DDIM-50 at CFG 7.5, judged for shape, colour and view.

    python benchmarks/shapes_prior_samples.py      # -> benchmarks/results/shapes_prior/samples.{json,md}

`shapes.training.check_samples` on the shipped prior (or --prior DIR) and its judge: every fine
prompt with a view the training cameras show (7 objects x 6 colours x front, side, back), --per-prompt
samples each, seeded. The shares of samples the judge names with the prompt's shape, colour and view
(and the view of the two objects with a front, the mug and the house), against chance (1/7, 1/6, 1/3).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nfsd_core.shapes.data import CAMERA_VIEWS  # noqa: E402
from nfsd_core.shapes.evaluator import load_shapes_judge  # noqa: E402
from nfsd_core.shapes.objects import COLOURS, OBJECTS  # noqa: E402
from nfsd_core.shapes.prior import SHAPES_PRIOR_DIR  # noqa: E402
from nfsd_core.shapes.training import check_samples  # noqa: E402

OUTPUT = ROOT / "benchmarks" / "results" / "shapes_prior"
CHANCE = {"shape": 1 / len(OBJECTS), "colour": 1 / len(COLOURS), "view": 1 / len(CAMERA_VIEWS),
          "view_of_fronted": 1 / len(CAMERA_VIEWS)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prior", type=Path, default=SHAPES_PRIOR_DIR)
    parser.add_argument("--per-prompt", type=int, default=2, help="samples per prompt and view")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result = check_samples(args.prior, load_shapes_judge(args.prior), per_prompt=args.per_prompt, seed=args.seed)
    scores = result["ddim_50_cfg_7.5"]
    lines = [f"DDIM-50 at CFG 7.5, {result['samples']} samples ({args.per_prompt} per fine prompt and camera view, "
             f"seed {args.seed}), as the judge reads them:", "",
             "| | shape | colour | view | view of the mug and the house |", "|---|---|---|---|---|",
             "| samples | " + " | ".join(f"{scores[k]:.0%}" for k in CHANCE) + " |",
             "| chance | " + " | ".join(f"{CHANCE[k]:.0%}" for k in CHANCE) + " |"]
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "samples.json").write_text(json.dumps({**result, "per_prompt": args.per_prompt, "seed": args.seed,
                                                          "chance": CHANCE}, indent=1))
    (args.output / "samples.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
