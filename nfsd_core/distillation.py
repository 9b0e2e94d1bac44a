"""One score-distillation step: latents in, gradient on the latents out.

`ScoreDistillation` ties a score model, its prompt conditions, a rule, a weighting and a
timestep schedule together. Each call noises the latents, asks the model for exactly the
predictions the rule needs in one batched call, and returns w(t) * direction, cleaned of
non-finite values and optionally clipped. `distillation_loss` carries that gradient into any
differentiable renderer through loss = 0.5 ||z - stopgrad(z - grad)||^2.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from .guidance import (
    DEFAULT_NEGATIVE_PROMPT,
    DEFAULT_WEIGHTING,
    WEIGHTINGS,
    GuidanceRule,
    NoisePredictions,
    finalize_gradient,
    make_rule,
    weight,
)
from .limits import is_finite_number
from .models.base import NoiseRequest, ScoreModel
from .timesteps import NoiseStream, TimestepSchedule

VIEW_SUFFIXES = {"front": "front view", "side": "side view", "back": "back view", "overhead": "overhead view"}


@dataclass(frozen=True)
class Prompts:
    """Backend conditions for the prompt, the empty prompt and the negative prompt.

    `positive` is one condition, or a mapping from view name to condition for view-dependent
    prompting; then each batch row names its view.
    """

    positive: Any
    unconditional: Any
    negative: Any = None

    @classmethod
    def from_text(
        cls,
        model: ScoreModel,
        prompt: str,
        negative_prompt: str | None = DEFAULT_NEGATIVE_PROMPT,
        view_dependent: bool = False,
    ) -> "Prompts":
        """Encode text with the model's own text encoder (threestudio's "<prompt>, <view> view")."""
        positive = (
            {view: model.encode_prompt(f"{prompt}, {suffix}") for view, suffix in VIEW_SUFFIXES.items()}
            if view_dependent
            else model.encode_prompt(prompt)
        )
        negative = model.encode_prompt(negative_prompt) if negative_prompt is not None else None
        return cls(positive, model.encode_prompt(""), negative)

    def positive_requests(self, batch: int, views: Sequence[str] | None) -> list[NoiseRequest]:
        """One request per distinct positive condition, covering the rows that use it."""
        if not isinstance(self.positive, Mapping):
            return [NoiseRequest(self.positive)]
        if views is None or len(views) != batch:
            raise ValueError("view-dependent prompts need one view name per batch row")
        unknown = sorted(set(views) - set(self.positive))
        if unknown:
            raise ValueError(f"no prompt for view(s) {unknown}; known views: {sorted(self.positive)}")
        rows_by_view: dict[str, list[int]] = {}
        for row, view in enumerate(views):
            rows_by_view.setdefault(view, []).append(row)
        return [NoiseRequest(self.positive[view], torch.tensor(rows)) for view, rows in rows_by_view.items()]


@dataclass(frozen=True)
class DistillationStep:
    """What one step computed. `gradient` is what reaches the latents; the rest is for logs
    (`nonfinite`: how many gradient entries were NaN or infinite and were zeroed)."""

    gradient: Tensor
    t: Tensor
    noise: Tensor
    weights: Tensor
    components: dict[str, Tensor]
    evaluations: int
    nonfinite: int = 0


def scatter_rows(requests: Sequence[NoiseRequest], outputs: Sequence[Tensor], like: Tensor) -> Tensor:
    """One tensor shaped like `like` [B, ...] holding each request's output in the rows it asked for."""
    gathered = torch.empty_like(like)
    for request, output in zip(requests, outputs):
        gathered[slice(None) if request.rows is None else request.rows] = output.to(like.dtype)
    return gathered


def distillation_loss(latents: Tensor, gradient: Tensor) -> Tensor:
    """0.5 ||z - stopgrad(z - grad)||^2 / B, whose gradient with respect to z is grad / B."""
    target = (latents - gradient).detach()
    return 0.5 * (latents - target).pow(2).sum() / latents.shape[0]


class ScoreDistillation:
    """The GUIDANCE of a run: model, prompts, rule and its settings, timesteps and seed."""

    def __init__(
        self,
        model: ScoreModel,
        prompts: Prompts,
        rule: GuidanceRule | str = "nfsd",
        scale: float | None = None,
        timesteps: TimestepSchedule = TimestepSchedule(),
        weighting: str = DEFAULT_WEIGHTING,
        grad_clip: float | None = None,
        seed: int = 0,
    ):
        self.rule = make_rule(rule) if isinstance(rule, str) else rule
        if self.rule.needs_negative_prompt and prompts.negative is None:
            raise ValueError(f"the {self.rule.name} rule needs a negative prompt; give one (the paper's default: "
                             f"{DEFAULT_NEGATIVE_PROMPT!r})")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}; choose one of {', '.join(WEIGHTINGS)}")
        if grad_clip is not None and not (is_finite_number(grad_clip) and grad_clip > 0):
            raise ValueError(f"grad_clip must be a positive finite number (or None for no clipping), got {grad_clip}")
        if scale is not None and not is_finite_number(scale):
            raise ValueError(f"scale must be a finite number (or None for the rule's default), got {scale}")
        self.model = model
        self.prompts = prompts
        self.scale = self.rule.default_scale if scale is None else float(scale)
        self.timesteps = timesteps
        self.weighting = weighting
        self.grad_clip = grad_clip
        self.noise_stream = NoiseStream(seed)

    def with_seed(self, seed: int) -> "ScoreDistillation":
        """A copy that draws its timesteps and noise from `seed`; model, prompts and settings are shared."""
        duplicate = copy.copy(self)
        duplicate.noise_stream = NoiseStream(seed)
        return duplicate

    def draw(self, step: int, steps: int, shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        """The (t [B], noise) of step `step`: the same for every rule under one seed."""
        uniform, noise = self.noise_stream.draw(step, shape)
        return self.timesteps.timesteps(step, steps, uniform, self.model.schedule.num_timesteps), noise

    def predictions(
        self, latents: Tensor, t: Tensor, noise: Tensor, views: Sequence[str] | None = None
    ) -> NoisePredictions:
        """The noise predictions the rule needs at x_t = noised `latents`, from one model call."""
        x_t = self.model.schedule.add_noise(latents, noise, t)
        positive = self.prompts.positive_requests(latents.shape[0], views)
        requests = list(positive)
        if self.rule.needs_unconditional:
            requests.append(NoiseRequest(self.prompts.unconditional))
        negative_rows = self.rule.negative_rows(t).nonzero().flatten().cpu()
        if negative_rows.numel():
            requests.append(NoiseRequest(self.prompts.negative, negative_rows))
        outputs = self.model.predict_noise(x_t, t, requests)

        conditional = scatter_rows(positive, outputs, latents)
        unconditional = outputs[len(positive)].to(latents.dtype) if self.rule.needs_unconditional else None
        negative = None
        if self.rule.needs_negative_prompt:
            negative = torch.full_like(latents, float("nan"))
            if negative_rows.numel():
                negative[negative_rows] = outputs[-1].to(latents.dtype)
        return NoisePredictions(conditional, unconditional, negative, noise)

    def __call__(
        self,
        latents: Tensor,
        step: int,
        steps: int,
        views: Sequence[str] | None = None,
        t: Tensor | None = None,
        noise: Tensor | None = None,
    ) -> DistillationStep:
        """The gradient on `latents` [B, C, H, W] (detached) at step `step` of `steps`.

        `t` and `noise` override the seeded draws, e.g. to reproduce a figure.
        """
        latents = latents.detach()
        drawn_t, drawn_noise = self.draw(step, steps, tuple(latents.shape))
        t = (drawn_t if t is None else t.long()).to(latents.device)
        noise = (drawn_noise if noise is None else noise).to(device=latents.device, dtype=latents.dtype)
        evaluations_before = self.model.evaluations
        predictions = self.predictions(latents, t, noise, views)
        terms = self.rule.terms(predictions, t, self.scale)
        weights = weight(self.model.schedule.alpha_bar(t), self.weighting).to(latents.dtype)
        gradient, nonfinite = finalize_gradient(weights.view(-1, 1, 1, 1) * terms.direction, self.grad_clip)
        return DistillationStep(
            gradient=gradient,
            t=t,
            noise=noise,
            weights=weights,
            components=terms.components,
            evaluations=self.model.evaluations - evaluations_before,
            nonfinite=nonfinite,
        )
