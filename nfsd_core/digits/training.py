"""Training the digits prior: scikit-learn's digits as `PriorData` for the shared two-stage
training (`nfsd_core.priors.training`), the evaluator beside it, and a DDIM sample check.

    python -m nfsd_core.digits.training --output outputs/digits_prior
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..priors.training import Log, PriorData, TrainingSettings, train_prior
from ..priors.degradation import degrade, negative_caption
from .data import DigitSplit, load_digit_split, to_images
from .prior import DIGITS_PRIOR_DIR, load_digits_prior
from .prompts import real_caption, vocabulary_words


def digits_training_data(split: DigitSplit) -> PriorData:
    """The training split's digits as 32x32 RGB images, captioned by their labels."""
    labels = split.train_labels
    return PriorData(
        images=to_images(split.train_digits),
        caption=lambda row, generator: real_caption(int(labels[row]), generator),
        degrade=degrade,
        negative_caption=negative_caption,
        words=vocabulary_words(),
    )


def train_digits_prior(
    directory: str | Path, settings: TrainingSettings = TrainingSettings(), split: DigitSplit | None = None,
    log: Log = print,
) -> dict:
    """Train the prior on the training split and save it; returns the training record."""
    split = load_digit_split() if split is None else split
    return train_prior(directory, digits_training_data(split), settings, log)


def check_samples(directory: str | Path, evaluator, seed: int = 0) -> dict:
    """DDIM-50 samples of the saved prior, measured like the benchmark's reference row."""
    from .comparison import Method, PromptSet, compare

    model, codec = load_digits_prior(directory=directory)
    result = compare(model, codec, evaluator, [Method("DDIM 50", None, 7.5)], PromptSet(), seed)
    return {"ddim_50_cfg_7.5": result.metrics["DDIM 50"], "real_digits": result.baseline}


def main(argv: list[str] | None = None) -> int:
    import argparse

    from .evaluator import DigitEvaluator

    defaults = TrainingSettings()
    parser = argparse.ArgumentParser(prog="python -m nfsd_core.digits.training",
                                     description="Train the digits prior and its evaluator (needs scikit-learn).")
    parser.add_argument("--output", type=Path, default=DIGITS_PRIOR_DIR, help="where to write the SD directory")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--vae-steps", type=int, default=defaults.vae_steps)
    parser.add_argument("--denoiser-steps", type=int, default=defaults.denoiser_steps)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = TrainingSettings(seed=args.seed, vae_steps=args.vae_steps, denoiser_steps=args.denoiser_steps)
    split = load_digit_split()
    record = train_digits_prior(args.output, settings, split, log=lambda entry: print(json.dumps(entry), flush=True))
    evaluator = DigitEvaluator.fit(split, seed=args.seed)
    evaluator.save(args.output / "evaluator")
    record.update(evaluator=evaluator.info, samples=check_samples(args.output, evaluator, args.seed))
    (args.output / "training_log.json").write_text(json.dumps(record, indent=1))
    print(json.dumps({key: record[key] for key in ("total_seconds", "evaluator", "samples")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
