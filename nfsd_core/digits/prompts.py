"""The digits prior's captions: fine prompts (one digit) and coarse prompts (many digits).

Coarse prompts cover several digit shapes at once ("an odd handwritten digit"), which is where
the paper's over-smoothing argument applies. Degraded digits get the negative captions of
`nfsd_core.priors.degradation`, so the paper's negative prompt means "blurry, low contrast digit".
"""

from __future__ import annotations

import torch

from ..priors.degradation import NEGATIVE_PHRASES

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
FINE_TEMPLATES = ("a handwritten digit {}", "a handwritten {}", "the digit {}")
GENERIC_PROMPT = "a handwritten digit"
COARSE_PROMPTS = {
    "an odd handwritten digit": (1, 3, 5, 7, 9),
    "an even handwritten digit": (0, 2, 4, 6, 8),
    GENERIC_PROMPT: tuple(range(10)),
}
COARSE_LABELS = {"an odd handwritten digit": "odd", "an even handwritten digit": "even", GENERIC_PROMPT: "any"}
# How a real image's caption is drawn; the rest of the probability is the empty caption.
FINE_PROBABILITY = 0.5
COARSE_PROBABILITY = 0.4


def fine_prompt(digit: int) -> str:
    """The canonical fine prompt, e.g. "a handwritten digit seven"."""
    return FINE_TEMPLATES[0].format(DIGIT_NAMES[digit])


def prompt_digits(prompt: str) -> tuple[int, ...]:
    """The digits a canonical fine or coarse prompt stands for (for evaluation)."""
    if prompt in COARSE_PROMPTS:
        return COARSE_PROMPTS[prompt]
    for digit in range(10):
        if prompt == fine_prompt(digit):
            return (digit,)
    raise ValueError(f"{prompt!r} is not one of the prior's canonical prompts "
                     f"({', '.join([fine_prompt(0), '...', *COARSE_PROMPTS])})")


def vocabulary_words() -> list[str]:
    """Every word the captions use (the tokenizer gives each its own token)."""
    text = " ".join([*FINE_TEMPLATES, *COARSE_PROMPTS, *DIGIT_NAMES, *NEGATIVE_PHRASES]).replace("{}", " ")
    return sorted(set(text.replace("-", " - ").replace(",", " ").split()))


def real_caption(digit: int, generator: torch.Generator) -> str:
    """A random caption for a real image of `digit`: fine, coarse or empty."""
    draw = torch.rand((), generator=generator).item()
    if draw < FINE_PROBABILITY:
        template = FINE_TEMPLATES[int(torch.randint(len(FINE_TEMPLATES), (), generator=generator))]
        return template.format(DIGIT_NAMES[digit])
    if draw < FINE_PROBABILITY + COARSE_PROBABILITY:
        covering = [prompt for prompt, digits in COARSE_PROMPTS.items() if digit in digits]
        return covering[int(torch.randint(len(covering), (), generator=generator))]
    return ""
