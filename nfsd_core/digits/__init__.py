"""A miniature Stable Diffusion trained on scikit-learn's handwritten digits, and its benchmark.

- `prompts`, `tokenizer`, `models`: captions, the project's own CLIP tokenizer, the networks;
- `data`, `training`: the digits as images, and the seeded two-stage training;
- `prior`: the shipped weights (`load_digits_prior`), loaded by the diffusers backend;
- `evaluator`, `metrics`, `comparison`: the benchmark's judge, its metrics, same-seed comparisons.
Running the shipped prior needs diffusers and transformers only; training needs scikit-learn.
"""

from .prior import DIGITS_PRIOR_DIR, load_digits_evaluator, load_digits_prior
from .prompts import COARSE_PROMPTS, DIGIT_NAMES, GENERIC_PROMPT, fine_prompt

__all__ = [
    "COARSE_PROMPTS",
    "DIGITS_PRIOR_DIR",
    "DIGIT_NAMES",
    "GENERIC_PROMPT",
    "fine_prompt",
    "load_digits_evaluator",
    "load_digits_prior",
]
