"""How large each rule's gradient is on the demo's NeRF: what its regulariser weights stand against.

    python benchmarks/experiments/guidance_gradient.py   # -> benchmarks/results/experiments/guidance_gradient.md

AdamW is blind to a factor common to the whole loss, so a regulariser's say in a run is its gradient
against the guidance's (README, Object size, *The third fix*). This measures the guidance's side: the
demo's untrained NeRF (`shapes.demo.TextToNerf`, NeRF seed 0) rendered for guidance as its run renders
(cameras, t and noise drawn per step from the run's seed) at every `--every`-th step of the 600, and the
root mean square of each rule's gradient on those latents, averaged over the steps and the benchmark's
prompts. The ratio to NFSD 7.5's is the factor by which a rule's regulariser weights must grow to keep
NFSD 7.5's balance; `TextToNerf.regularizers_follow_scale` uses the scale / 7.5.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from nfsd_core.distillation import Prompts, ScoreDistillation  # noqa: E402
from nfsd_core.nerf import NerfRepresentation, training_views  # noqa: E402
from nfsd_core.optimize import REPRESENTATION_RANDOMNESS  # noqa: E402
from nfsd_core.shapes.demo import TextToNerf  # noqa: E402
from nfsd_core.shapes.prior import SHAPES_PRIOR_DIR, load_shapes_prior  # noqa: E402
from nfsd_core.timesteps import NoiseStream  # noqa: E402
from shapes_benchmark import METHODS, PROMPTS  # noqa: E402

OUTPUT = ROOT / "benchmarks" / "results" / "experiments"
MEASURED = [method for method, settings in METHODS.items() if "rule" in settings and settings.get("view_prompts", True)]


@torch.no_grad()
def gradient_rms(model, codec, prompts: Prompts, run: TextToNerf, every: int) -> dict[str, float]:
    """For each method of MEASURED, the mean over every `every`-th step of the run of the RMS of its gradient
    on the untrained NeRF's guidance renders. The renders depend only on the run's seed, so each step's is
    made once and every rule sees it."""
    guidances = {method: ScoreDistillation(model, prompts, METHODS[method]["rule"], scale=METHODS[method]["scale"],
                                           seed=run.seed, timesteps=run.timesteps) for method in MEASURED}
    nerf = NerfRepresentation(run.nerf, codec=codec)
    stream = NoiseStream(run.seed)  # the per-step randomness of every guidance above
    values = {method: [] for method in MEASURED}
    for step in range(0, run.steps, every):
        generator = stream.generator(step, REPRESENTATION_RANDOMNESS)  # as `optimize` draws
        view = nerf.render_for_guidance(step, run.steps, generator)
        for method, guidance in guidances.items():
            gradient = guidance(view.latents, step, run.steps, views=view.views).gradient
            values[method].append(float(gradient.pow(2).mean().sqrt()))
    return {method: sum(rms) / len(rms) for method, rms in values.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--every", type=int, default=50, help="measure every N-th step of the 600")
    parser.add_argument("--prior", type=Path, default=SHAPES_PRIOR_DIR)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, codec = load_shapes_prior(directory=args.prior)
    run = TextToNerf()
    views = training_views(run.nerf.cameras)
    encoded = [Prompts.from_text(model, prompt, view_dependent=run.view_prompts, views=views)
               for prompt, _, _ in PROMPTS]
    per_prompt = [gradient_rms(model, codec, prompts, run, args.every) for prompts in encoded]
    rms = {method: sum(values[method] for values in per_prompt) / len(per_prompt) for method in MEASURED}
    reference = rms["NFSD 7.5"]
    lines = ["| method | gradient RMS | / NFSD 7.5's | scale / 7.5 |", "|---|---|---|---|"]
    lines += [f"| {method} | {value:.3f} | {value / reference:.2f} | {METHODS[method]['scale'] / 7.5:.2f} |"
              for method, value in rms.items()]
    table = "\n".join(lines) + "\n"
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "guidance_gradient.md").write_text(table)
    (args.output / "guidance_gradient.json").write_text(json.dumps({"every": args.every, "rms": rms}, indent=1))
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
