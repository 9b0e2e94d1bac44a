"""What the benchmark measures on a set of generated digits, and the same numbers for real digits.

A sample set is images [N, 3, H, W] in [0, 1], their latents [N, 4, 8, 8], and the canonical
prompt of each row (see `prompts.prompt_digits`). `measure` gives:

- accuracy: fraction the classifier puts in the prompt's digit set;
- coverage (only with coarse prompts): the fraction of their digits that appear at all;
- frechet: Frechet distance to the held-out real digits of the prompts' digits, in PCA-20 space;
- diversity: mean pairwise L2 distance between 8x8 digits of the same prompt;
- latent_rms, pixel_mean, pixel_std, colour: saturation statistics (the prior only ever saw
  grey digits, so colour, the mean spread of R, G and B per pixel, is 0 on its data).
`real_baseline` measures real training-split digits drawn with the same prompt composition:
its `frechet` is the floor a perfect generator reaches at this sample size.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from .data import to_digits, to_images
from .evaluator import DigitEvaluator, round_trip
from .prompts import prompt_digits

Encode = Callable[[Tensor], Tensor]


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2) for features [N, D] and [M, D]."""
    a, b = a.double(), b.double()
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    root_a = _psd_sqrt(cov_a)
    cross = _psd_sqrt(root_a @ cov_b @ root_a)
    return float((a.mean(0) - b.mean(0)).pow(2).sum() + torch.trace(cov_a + cov_b - 2.0 * cross))


def _psd_sqrt(matrix: Tensor) -> Tensor:
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def mean_pairwise_distance(x: Tensor) -> float:
    """Mean L2 distance over the distinct pairs of rows of `x` [N, ...] (0 for N < 2)."""
    if len(x) < 2:
        return 0.0
    distances = torch.cdist(x.flatten(1).double(), x.flatten(1).double())
    return float(distances.sum() / (len(x) * (len(x) - 1)))


def rows_by_prompt(prompts: Sequence[str]) -> dict[str, Tensor]:
    groups: dict[str, list[int]] = {}
    for row, prompt in enumerate(prompts):
        groups.setdefault(prompt, []).append(row)
    return {prompt: torch.tensor(rows) for prompt, rows in groups.items()}


def measure(evaluator: DigitEvaluator, images: Tensor, latents: Tensor, prompts: Sequence[str]) -> dict[str, float]:
    """The metrics of one sample set (see the module docstring)."""
    if not len(images) == len(latents) == len(prompts):
        raise ValueError(f"need one prompt per image and latent, got {len(images)}, {len(latents)}, {len(prompts)}")
    digits = to_digits(images.clamp(0, 1))
    predicted = evaluator.predict_digits(digits)
    allowed = [prompt_digits(p) for p in prompts]
    correct = [int(label) in digit_set for label, digit_set in zip(predicted.tolist(), allowed)]
    groups = rows_by_prompt(prompts)
    coarse = {p: rows for p, rows in groups.items() if len(prompt_digits(p)) > 1}
    coverage = [len(set(predicted[rows].tolist()) & set(prompt_digits(p))) / len(prompt_digits(p))
                for p, rows in coarse.items()]
    union = sorted(set().union(*allowed))
    held_out = evaluator.split.held_out_digits[torch.isin(evaluator.split.held_out_labels, torch.tensor(union))]
    metrics = {
        "accuracy": sum(correct) / len(correct),
        "frechet": frechet_distance(evaluator.features(digits), evaluator.features(round_trip(held_out))),
        "diversity": sum(mean_pairwise_distance(digits[rows]) for rows in groups.values()) / len(groups),
        "latent_rms": float(latents.float().pow(2).mean().sqrt()),
        "pixel_mean": float(images.mean()),
        "pixel_std": float(images.std()),
        "colour": float(images.std(dim=1).mean()),
    }
    if coverage:
        metrics["coverage"] = sum(coverage) / len(coverage)
    return metrics


def real_images(evaluator: DigitEvaluator, prompts: Sequence[str], generator: torch.Generator) -> Tensor:
    """One real training-split image [N, 3, 32, 32] per prompt: a uniform digit of its set, then a uniform image."""
    labels = evaluator.split.train_labels
    chosen = []
    for prompt in prompts:
        digit_set = prompt_digits(prompt)
        digit = digit_set[int(torch.randint(len(digit_set), (), generator=generator))]
        members = (labels == digit).nonzero().flatten()
        chosen.append(members[int(torch.randint(len(members), (), generator=generator))])
    return to_images(evaluator.split.train_digits[torch.stack(chosen)])


def real_baseline(
    evaluator: DigitEvaluator, encode: Encode, prompts: Sequence[str], seed: int = 0, draws: int = 5
) -> dict[str, float]:
    """`measure` of real digits with the composition of `prompts`, averaged over `draws` draws.

    `encode` maps images [N, 3, H, W] in [0, 1] to the prior's latents (the codec's `encode`).
    """
    generator = torch.Generator().manual_seed(seed)
    totals: dict[str, float] = {}
    for _ in range(draws):
        images = real_images(evaluator, prompts, generator)
        with torch.no_grad():
            latents = encode(images)
        for key, value in measure(evaluator, images, latents, prompts).items():
            totals[key] = totals.get(key, 0.0) + value / draws
    return totals
