"""One score-distillation step: latents in, gradient on the latents out.

`ScoreDistillation` ties a score model, its prompt conditions, a rule, a weighting and a
timestep schedule together. Each call noises the latents, asks the model for exactly the
predictions the rule needs in one batched call, and returns w(t) * direction, cleaned of
non-finite values and optionally clipped. `distillation_loss` carries that gradient into any
differentiable renderer through loss = 0.5 ||z - stopgrad(z - grad)||^2.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from .guidance import (
    DEFAULT_NEGATIVE_PROMPT,
    DEFAULT_WEIGHTING,
    EDIT_RULES,
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


def view_suffix(view: str) -> str:
    """What a view name adds to the prompt: "side" -> "side view"; a name that also says the elevation
    (`nerf.cameras.view_names`) keeps it: "side, elevation 20" -> "side view, elevation 20"."""
    name, comma, rest = view.partition(", ")
    if name not in VIEW_SUFFIXES:
        raise ValueError(f"unknown view {view!r}: a view name starts with one of {', '.join(VIEW_SUFFIXES)}")
    return VIEW_SUFFIXES[name] + comma + rest


def condition_requests(condition: Any, batch: int, views: Sequence[str] | None) -> list[NoiseRequest]:
    """One request per distinct condition of `condition` (one condition, or a mapping from view
    name to condition), covering the rows that use it."""
    if not isinstance(condition, Mapping):
        return [NoiseRequest(condition)]
    if views is None or len(views) != batch:
        raise ValueError("view-dependent prompts need one view name per batch row")
    unknown = sorted(set(views) - set(condition))
    if unknown:
        raise ValueError(f"no prompt for view(s) {unknown}; known views: {sorted(condition)}")
    rows_by_view: dict[str, list[int]] = {}
    for row, view in enumerate(views):
        rows_by_view.setdefault(view, []).append(row)
    return [NoiseRequest(condition[view], torch.tensor(rows)) for view, rows in rows_by_view.items()]


@dataclass(frozen=True)
class Prompts:
    """Backend conditions for the prompt, the empty prompt, the negative prompt and, for edit
    rules, the source prompt (what the image being edited shows).

    `positive` (and `source`) is one condition, or a mapping from view name to condition for
    view-dependent prompting; then each batch row names its view.
    """

    positive: Any
    unconditional: Any
    negative: Any = None
    source: Any = None

    @classmethod
    def from_text(
        cls,
        model: ScoreModel,
        prompt: str,
        negative_prompt: str | None = DEFAULT_NEGATIVE_PROMPT,
        view_dependent: bool = False,
        source_prompt: str | None = None,
        views: Sequence[str] = tuple(VIEW_SUFFIXES),
    ) -> "Prompts":
        """Encode text with the model's own text encoder (threestudio's "<prompt>, <view> view"); view-dependent
        prompts are encoded for each of `views` (`view_suffix`)."""
        positive = (
            {view: model.encode_prompt(f"{prompt}, {view_suffix(view)}") for view in views}
            if view_dependent
            else model.encode_prompt(prompt)
        )
        negative = model.encode_prompt(negative_prompt) if negative_prompt is not None else None
        source = model.encode_prompt(source_prompt) if source_prompt is not None else None
        return cls(positive, model.encode_prompt(""), negative, source)

    def positive_requests(self, batch: int, views: Sequence[str] | None) -> list[NoiseRequest]:
        """One request per distinct positive condition, covering the rows that use it."""
        return condition_requests(self.positive, batch, views)


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


def in_branch(request: NoiseRequest, branch: int, batch: int, branches: int) -> NoiseRequest:
    """`request`, whose rows count within one image batch of `batch` rows, for the `branch`-th of
    `branches` batches stacked in one model call."""
    if branches == 1:
        return request
    rows = torch.arange(batch) if request.rows is None else request.rows
    return NoiseRequest(request.condition, rows + branch * batch)


def checked_latents(name: str, tensor: Tensor) -> Tensor:
    """`tensor` as finite float32 CPU latents [B, C, H, W], or a ValueError naming it."""
    if tensor.dim() != 4:
        raise ValueError(f"{name} must be [batch, channels, height, width], got shape {tuple(tensor.shape)}")
    tensor = tensor.detach().float().cpu()
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} hold NaN or infinite values")
    return tensor


def distillation_loss(latents: Tensor, gradient: Tensor) -> Tensor:
    """0.5 ||z - stopgrad(z - grad)||^2 / B, whose gradient with respect to z is grad / B."""
    target = (latents - gradient).detach()
    return 0.5 * (latents - target).pow(2).sum() / latents.shape[0]


def latent_mask(mask: Tensor, height: int, width: int) -> Tensor:
    """A pixel mask [B, H, W] or [H, W] (1: may change; ComfyUI's MASK) as a latent mask
    [B, 1, height, width] of 0 and 1: a latent may change where any pixel it covers may (the
    mask's mean over the latent's pixels is above zero). Its aspect ratio must be the latents'."""
    if mask.dim() not in (2, 3) or mask.shape[-2] < 1 or mask.shape[-1] < 1:
        raise ValueError(f"mask must be [height, width] or [batch, height, width] pixels, got {tuple(mask.shape)}")
    mask = mask.detach().float().cpu().reshape(-1, 1, *mask.shape[-2:])
    if not bool(torch.isfinite(mask).all()):
        raise ValueError("mask holds NaN or infinite values")
    pixels_h, pixels_w = mask.shape[-2:]
    if abs(pixels_w * height - pixels_h * width) > max(height, width, pixels_h, pixels_w):  # within a pixel
        raise ValueError(f"the mask is {pixels_w}x{pixels_h} pixels but the latents are {width}x{height}, another "
                         "aspect ratio: give a mask of the source image's size")
    covered = torch.nn.functional.interpolate(mask.clamp(0.0, 1.0), size=(height, width), mode="area")
    if not bool((covered > 0).any()):
        raise ValueError("the mask selects nothing (it is 0 everywhere): paint the region to change, or leave the "
                         "mask out to change the whole image")
    return (covered > 0).float()


class ScoreDistillation:
    """The GUIDANCE of a run: model, prompts, rule and its settings, timesteps and seed.

    Edit rules (`GuidanceRule.edits`) also take `source_latents` [1 or B, C, H, W], the image being
    edited in the model's latent space (where the canvas starts), and `prompts.source`. A `mask`
    [1 or B, 1, H, W] of 0 and 1 (see `latent_mask`) zeroes the gradient where it is 0, so, under
    AdamW without weight decay, those latents never move.
    """

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
        source_latents: Tensor | None = None,
        mask: Tensor | None = None,
    ):
        self.rule = make_rule(rule) if isinstance(rule, str) else rule
        if self.rule.needs_negative_prompt and prompts.negative is None:
            raise ValueError(f"the {self.rule.name} rule needs a negative prompt; give one (the paper's default: "
                             f"{DEFAULT_NEGATIVE_PROMPT!r})")
        if self.rule.edits and (source_latents is None or prompts.source is None):
            raise ValueError(f"the {self.rule.name} rule edits an image: give the source latents (the image to edit, "
                             "where the canvas starts) and the source prompt (what that image shows)")
        if source_latents is not None and not self.rule.edits:
            raise ValueError(f"source latents are read by the edit rules ({', '.join(EDIT_RULES)}), not by "
                             f"{self.rule.name}: choose an edit rule, or leave the source out")
        self.source_latents = None if source_latents is None else checked_latents("source latents", source_latents)
        self.mask = None if mask is None else checked_latents("mask latents", mask)
        if self.mask is not None and not bool(((self.mask == 0) | (self.mask == 1)).all()):
            raise ValueError("the latent mask must hold only 0 and 1 (make it with latent_mask)")
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

    def check_fits(self, latent_shape: tuple[int, int, int, int]) -> None:
        """ValueError unless the source latents and the mask go with latents of `latent_shape`
        [B, C, H, W]: the same size, C channels (the mask: 1), a batch of 1 or B."""
        batch, channels, height, width = latent_shape
        for name, tensor, wanted in (("source latents", self.source_latents, channels), ("mask latents", self.mask, 1)):
            if tensor is not None and (tensor.shape[0] not in (1, batch)
                                       or tuple(tensor.shape[1:]) != (wanted, height, width)):
                raise ValueError(f"{name} of shape {tuple(tensor.shape)} do not fit the canvas's latents "
                                 f"{tuple(latent_shape)}: give [1 or {batch}, {wanted}, {height}, {width}], the "
                                 "canvas's size")

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
        """The noise predictions the rule needs at x_t = noised `latents` (and, for edit rules, at
        the source latents noised with the same t and noise, under the source prompt), from one
        model call: the source's rows follow the canvas's in the batch."""
        batch = latents.shape[0]
        negative_rows = self.rule.negative_rows(t).nonzero().flatten().cpu()
        branches = [(latents, self.prompts.positive_requests(batch, views))]
        if self.rule.edits:
            source = self.source_latents.to(device=latents.device, dtype=latents.dtype).expand_as(latents)
            branches.append((source, condition_requests(self.prompts.source, batch, views)))
        requests = [self.branch_requests(positive, negative_rows) for _, positive in branches]
        copies = len(branches)
        x_t = self.model.schedule.add_noise(torch.cat([clean for clean, _ in branches]), noise.repeat(copies, 1, 1, 1),
                                            t.repeat(copies))
        sent = [in_branch(request, index, batch, copies) for index, branch in enumerate(requests) for request in branch]
        outputs = iter(self.model.predict_noise(x_t, t.repeat(copies), sent))
        predictions = [self.gathered(positive, [next(outputs) for _ in branch], latents, noise, negative_rows)
                       for (_, positive), branch in zip(branches, requests)]
        return predictions[0] if copies == 1 else replace(predictions[0], source=predictions[1])

    def branch_requests(self, positive: list[NoiseRequest], negative_rows: Tensor) -> list[NoiseRequest]:
        """The requests of one image batch: its prompt's, then the empty and the negative prompt's as the rule needs."""
        requests = list(positive)
        if self.rule.needs_unconditional:
            requests.append(NoiseRequest(self.prompts.unconditional))
        if negative_rows.numel():
            requests.append(NoiseRequest(self.prompts.negative, negative_rows))
        return requests

    def gathered(self, positive: list[NoiseRequest], outputs: list[Tensor], like: Tensor, noise: Tensor,
                 negative_rows: Tensor) -> NoisePredictions:
        """NoisePredictions of one image batch from the outputs of its `branch_requests`, in order."""
        conditional = scatter_rows(positive, outputs, like)
        unconditional = outputs[len(positive)].to(like.dtype) if self.rule.needs_unconditional else None
        negative = None
        if self.rule.needs_negative_prompt:
            negative = torch.full_like(like, float("nan"))
            if negative_rows.numel():
                negative[negative_rows] = outputs[-1].to(like.dtype)
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
        self.check_fits(tuple(latents.shape))
        drawn_t, drawn_noise = self.draw(step, steps, tuple(latents.shape))
        t = (drawn_t if t is None else t.long()).to(latents.device)
        noise = (drawn_noise if noise is None else noise).to(device=latents.device, dtype=latents.dtype)
        evaluations_before = self.model.evaluations
        predictions = self.predictions(latents, t, noise, views)
        terms = self.rule.terms(predictions, t, self.scale)
        weights = weight(self.model.schedule.alpha_bar(t), self.weighting).to(latents.dtype)
        gradient, nonfinite = finalize_gradient(weights.view(-1, 1, 1, 1) * terms.direction, self.grad_clip)
        if self.mask is not None:
            gradient = gradient * self.mask.to(gradient)
        return DistillationStep(
            gradient=gradient,
            t=t,
            noise=noise,
            weights=weights,
            components=terms.components,
            evaluations=self.model.evaluations - evaluations_before,
            nonfinite=nonfinite,
        )
