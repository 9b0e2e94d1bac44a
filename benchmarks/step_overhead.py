"""Overhead of a score-distillation step over the bare denoiser forward it cannot avoid.

One process times, alternately, (a) a full SDS / NFSD step on a 64x64 latent canvas through the
real code path (`optimization_step`: render, noise, batched prediction, rule, loss, backward,
AdamW) and (b) the floor: the same random-weight diffusers UNet called once, without autograd,
on a batch of the same composition (SDS: prompt + empty rows; NFSD at t >= 200: prompt + empty
+ negative rows). It prints step / floor per rule (target <= 1.10) with the absolute times.

    python benchmarks/step_overhead.py [--rounds 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nfsd_core import LatentCanvas, OptimizerSettings, Prompts, ScoreDistillation  # noqa: E402
from nfsd_core.models.diffusers import DiffusersScoreModel  # noqa: E402
from nfsd_core.optimize import optimization_step  # noqa: E402
from nfsd_core.timesteps import TimestepSchedule  # noqa: E402
from random_models import random_models  # noqa: E402

TARGET = 1.10
LATENT_SIZE = 64


def seconds(run) -> tuple[float, float]:
    """(wall, CPU) seconds of `run()`; CPU time is the steadier one on a shared machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def step_and_floor(model: DiffusersScoreModel, prompts: Prompts, rule: str, steps: int):
    """Two zero-argument callables: one optimisation step of `rule`, and the bare UNet forward it makes."""
    # t >= 200 on every step, so NFSD always evaluates the negative prompt (its dearest case).
    guidance = ScoreDistillation(model, prompts, rule, timesteps=TimestepSchedule(t_min=0.2, t_max=0.98))
    canvas = LatentCanvas.random(1, 4, LATENT_SIZE, LATENT_SIZE)
    optimizer = torch.optim.AdamW(canvas.parameters(), lr=OptimizerSettings.lr)
    counter = iter(range(steps))
    conditions = [prompts.positive, prompts.unconditional] + [prompts.negative] * (rule == "nfsd")
    x = torch.randn(len(conditions), 4, LATENT_SIZE, LATENT_SIZE)
    t = torch.full((len(conditions),), 500)
    hidden = torch.cat(conditions)

    def step() -> None:
        record = optimization_step(canvas, guidance, optimizer, next(counter), steps)
        assert record.evaluations == len(conditions)

    def floor() -> None:
        with torch.no_grad():
            model.unet(x, t, encoder_hidden_states=hidden)

    return step, floor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadiest on a shared CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, _ = random_models()
    prompts = Prompts.from_text(model, "a photograph of an astronaut riding a horse")
    pairs = {rule: step_and_floor(model, prompts, rule, args.rounds + 2) for rule in ("sds", "nfsd")}
    for step, floor in pairs.values():  # warm-up
        for run in (step, floor, step, floor):
            run()
    times = {rule: {"step": [], "floor": []} for rule in pairs}
    for _ in range(args.rounds):
        for rule, (step, floor) in pairs.items():
            times[rule]["floor"].append(seconds(floor))
            times[rule]["step"].append(seconds(step))
    print(f"torch {torch.__version__}, {args.threads} thread(s), latents 1x4x{LATENT_SIZE}x{LATENT_SIZE}, "
          f"{args.rounds} rounds; medians; ratio = median of the per-round step / floor")
    for rule, measured in times.items():
        line = [f"{rule:5s} ({2 + (rule == 'nfsd')} rows)"]
        for clock, index in (("wall", 0), ("cpu", 1)):
            steps, floors = ([m[index] for m in measured[key]] for key in ("step", "floor"))
            ratio = statistics.median(s / f for s, f in zip(steps, floors))
            line.append(f"{clock}: step {statistics.median(steps):.3f} s floor {statistics.median(floors):.3f} s "
                        f"ratio {ratio:.3f} {'OK' if ratio <= TARGET else 'ABOVE TARGET'}")
        print(" | ".join(line))
    print(f"target: step / floor <= {TARGET}")

if __name__ == "__main__":
    main()
