"""Score-distillation rules: which noise predictions a step needs, and the direction they give.

Notation (DDPM timestep t in 0..999, added noise eps):
    e_c  prediction under the prompt,   e_u  under the empty prompt,   e_n  under the negative prompt.

    SDS            direction = (e_u - eps) + s (e_c - e_u)                      s = 100
    NFSD           direction = delta_D + s delta_C,  delta_C = e_c - e_u,
                   delta_D = e_u if t < 200 else e_u - e_n                      s = 7.5
    CSD            direction = s (e_c - e_u)                                    s = 1
    SDS-negative   direction = (e_n - eps) + s (e_c - e_n)                      s = 100

The gradient on the latent is w(t) * direction (see `weight`); NFSD never subtracts eps.
Every rule returns its components so they can be logged and shown (paper figures 2 to 4).

Edit rules change a source image z^src (latents the canvas starts from) so that it shows a target
prompt instead of a source prompt. They also read the predictions at x^src_t, the source noised
with the same eps and t, under the source prompt (marked ^src):

    DDS            direction = e_cfg - e_cfg^src,  e_cfg = e_u + s (e_c - e_u)      s = 7.5
    NFSD-edit      direction = (delta_D - delta_D^src) + s (delta_C - delta_C^src)  s = 7.5

DDS is Hertz, Aberman and Cohen-Or's Delta Denoising Score (2023): SDS of the canvas under the
target prompt minus SDS of the source under the source prompt, so eps cancels exactly. In the
NFSD paper's decomposition e_u = delta_D + delta_N (domain and noise), so

    DDS = s (delta_C - delta_C^src) + (delta_D - delta_D^src) + (delta_N - delta_N^src):

with the same eps and t the noise terms nearly cancel, and while the canvas stays in the source's
domain so do the domain terms, leaving the condition difference (the paper's section 5). The
NFSD form writes each branch as NFSD does, delta_D + s delta_C with no noise term, and subtracts
them. The domain term is kept as a difference, because both branches use the same estimate of it:
it is zero at the start (canvas = source) and grows only as the edit leaves the source's domain,
pulling it back. Below the threshold delta_D = e_u in both branches and NFSD-edit equals DDS;
from it on delta_D = e_u - e_n, whose difference drops the noise residual delta_N - delta_N^src
that DDS keeps where the two images' noise predictions differ.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

DEFAULT_NEGATIVE_PROMPT = (
    "unrealistic, blurry, low quality, out of focus, ugly, low contrast, dull, dark, low-resolution, gloomy"
)
WEIGHTINGS = ("sds", "uniform", "fantasia3d")
DEFAULT_WEIGHTING = "sds"
NFSD_THRESHOLD = 200  # the paper's: below it delta_D is e_u alone


@dataclass(frozen=True)
class NoisePredictions:
    """Noise predictions for one batch [B, C, H, W], plus the noise that made x_t.

    `unconditional` is None when the rule did not ask for it; in `negative`, rows the rule did
    not ask for hold NaN, so a rule that reads them by mistake cannot go unnoticed. For edit
    rules, `source` holds the same predictions at the source latents noised with the same t and
    noise, its `conditional` under the source prompt.
    """

    conditional: Tensor
    unconditional: Tensor | None
    negative: Tensor | None
    noise: Tensor
    source: "NoisePredictions | None" = None


@dataclass(frozen=True)
class GuidanceTerms:
    """The unweighted update direction and the named components it is the sum of."""

    direction: Tensor
    components: dict[str, Tensor] = field(default_factory=dict)


class GuidanceRule(abc.ABC):
    """A score-distillation rule. `edits`: it changes a source image, so it reads the predictions
    at the source latents under the source prompt too (`NoisePredictions.source`)."""

    name: ClassVar[str]
    default_scale: ClassVar[float]
    needs_unconditional: ClassVar[bool] = True
    edits: ClassVar[bool] = False

    def negative_rows(self, t: Tensor) -> Tensor:
        """Boolean [B]: the rows whose negative-prompt prediction this rule reads."""
        return torch.zeros_like(t, dtype=torch.bool)

    @property
    def needs_negative_prompt(self) -> bool:
        return False

    @abc.abstractmethod
    def terms(self, predictions: NoisePredictions, t: Tensor, scale: float) -> GuidanceTerms: ...


class SDS(GuidanceRule):
    """DreamFusion's score distillation with classifier-free guidance."""

    name = "sds"
    default_scale = 100.0

    def terms(self, predictions: NoisePredictions, t: Tensor, scale: float) -> GuidanceTerms:
        delta_c = predictions.conditional - predictions.unconditional
        noise_residual = predictions.unconditional - predictions.noise
        return GuidanceTerms(noise_residual + scale * delta_c, {"delta_C": delta_c, "noise_residual": noise_residual})


@dataclass(frozen=True)
class NFSD(GuidanceRule):
    """Noise-Free Score Distillation (Katzir et al., ICLR 2024, eq. 6).

    Below `threshold` the unconditional prediction is taken as pure domain score; above it the
    negative prompt's prediction removes the noise it contains instead of subtracting eps.
    """

    threshold: int = NFSD_THRESHOLD
    name: ClassVar[str] = "nfsd"
    default_scale: ClassVar[float] = 7.5

    @property
    def needs_negative_prompt(self) -> bool:
        return True

    def negative_rows(self, t: Tensor) -> Tensor:
        return t >= self.threshold

    def delta_d(self, predictions: NoisePredictions, t: Tensor) -> Tensor:
        """The domain term: e_u below the threshold, e_u - e_n from it on."""
        e_u = predictions.unconditional
        high = self.negative_rows(t).view(-1, *([1] * (e_u.dim() - 1)))
        return e_u if predictions.negative is None else torch.where(high, e_u - predictions.negative, e_u)

    def terms(self, predictions: NoisePredictions, t: Tensor, scale: float) -> GuidanceTerms:
        delta_c = predictions.conditional - predictions.unconditional
        delta_d = self.delta_d(predictions, t)
        return GuidanceTerms(delta_d + scale * delta_c, {"delta_C": delta_c, "delta_D": delta_d})


class CSD(GuidanceRule):
    """Classifier Score Distillation: the classifier-free-guidance term alone."""

    name = "csd"
    default_scale = 1.0

    def terms(self, predictions: NoisePredictions, t: Tensor, scale: float) -> GuidanceTerms:
        delta_c = predictions.conditional - predictions.unconditional
        return GuidanceTerms(scale * delta_c, {"delta_C": delta_c})


class SDSNegative(GuidanceRule):
    """SDS with the negative prompt's prediction in place of the unconditional one."""

    name = "sds_negative"
    default_scale = 100.0
    needs_unconditional = False

    @property
    def needs_negative_prompt(self) -> bool:
        return True

    def negative_rows(self, t: Tensor) -> Tensor:
        return torch.ones_like(t, dtype=torch.bool)

    def terms(self, predictions: NoisePredictions, t: Tensor, scale: float) -> GuidanceTerms:
        delta_c = predictions.conditional - predictions.negative
        noise_residual = predictions.negative - predictions.noise
        return GuidanceTerms(noise_residual + scale * delta_c, {"delta_C": delta_c, "noise_residual": noise_residual})


class DDS(GuidanceRule):
    """Delta Denoising Score (Hertz, Aberman and Cohen-Or 2023): the CFG prediction at the canvas
    under the target prompt minus the one at the source under the source prompt, same t and eps."""

    name = "dds"
    default_scale = 7.5
    edits = True

    def terms(self, predictions: NoisePredictions, t: Tensor, scale: float) -> GuidanceTerms:
        source = predictions.source
        delta_c = predictions.conditional - predictions.unconditional
        source_delta_c = source.conditional - source.unconditional
        unconditional_difference = predictions.unconditional - source.unconditional
        return GuidanceTerms(unconditional_difference + scale * (delta_c - source_delta_c),
                             {"delta_C": delta_c, "delta_C_source": source_delta_c,
                              "unconditional_difference": unconditional_difference})


@dataclass(frozen=True)
class NFSDEdit(NFSD):
    """DDS in NFSD's form: the NFSD direction of the canvas under the target prompt minus that of
    the source under the source prompt, (delta_D - delta_D^src) + s (delta_C - delta_C^src)
    (derived in the module docstring); the negative prompt is evaluated on both from the threshold on."""

    name: ClassVar[str] = "nfsd_edit"
    default_scale: ClassVar[float] = 7.5
    edits: ClassVar[bool] = True

    def terms(self, predictions: NoisePredictions, t: Tensor, scale: float) -> GuidanceTerms:
        source = predictions.source
        delta_c = predictions.conditional - predictions.unconditional
        source_delta_c = source.conditional - source.unconditional
        delta_d_difference = self.delta_d(predictions, t) - self.delta_d(source, t)
        return GuidanceTerms(delta_d_difference + scale * (delta_c - source_delta_c),
                             {"delta_C": delta_c, "delta_C_source": source_delta_c,
                              "delta_D_difference": delta_d_difference})


RULES: dict[str, type[GuidanceRule]] = {rule.name: rule for rule in (NFSD, SDS, CSD, SDSNegative, DDS, NFSDEdit)}
EDIT_RULES = tuple(name for name, rule in RULES.items() if rule.edits)


def make_rule(name: str, nfsd_threshold: int = NFSD_THRESHOLD) -> GuidanceRule:
    """The rule called `name` (one of RULES); `nfsd_threshold` only applies to NFSD and NFSD-edit."""
    key = name.lower().replace("-", "_").replace(" ", "_")
    if key not in RULES:
        raise ValueError(f"unknown guidance rule {name!r}; choose one of {', '.join(RULES)}")
    if not 0 <= nfsd_threshold <= 1000:
        raise ValueError(f"nfsd_threshold must be a DDPM timestep in 0..1000, got {nfsd_threshold}")
    rule = RULES[key]
    return rule(threshold=nfsd_threshold) if issubclass(rule, NFSD) else rule()


def weight(alpha_bar: Tensor, weighting: str = DEFAULT_WEIGHTING) -> Tensor:
    """w(t) from alpha_bar_t: `sds` 1 - ab, `uniform` 1, `fantasia3d` sqrt(ab) (1 - ab)."""
    if weighting == "sds":
        return 1.0 - alpha_bar
    if weighting == "uniform":
        return torch.ones_like(alpha_bar)
    if weighting == "fantasia3d":
        return alpha_bar.sqrt() * (1.0 - alpha_bar)
    raise ValueError(f"unknown weighting {weighting!r}; choose one of {', '.join(WEIGHTINGS)}")


def finalize_gradient(gradient: Tensor, clip: float | None = None) -> tuple[Tensor, int]:
    """(gradient with non-finite entries zeroed, so they never reach the parameters, then clamped
    to +-clip; how many entries were non-finite). `clip` must be finite, or a NaN would come back."""
    finite = torch.isfinite(gradient)
    gradient = torch.where(finite, gradient, torch.zeros_like(gradient))
    if clip is not None:
        gradient = gradient.clamp(-clip, clip)
    return gradient, int(finite.numel() - finite.sum())
