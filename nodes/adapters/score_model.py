"""A `ScoreModel` over a ComfyUI MODEL: noise predictions through ComfyUI's own sampling machinery.

ComfyUI models live in sigma space: `apply_model(x, sigma)` takes x = x0 + sigma * noise and returns
the denoised x0. nfsd_core speaks DDPM: x_t = sqrt(ab) x0 + sqrt(1 - ab) eps. The two meet at

    sigma = model_sampling.sigma(t),   ab = 1 / (1 + sigma^2),   x = x_t / sqrt(ab),   eps = (x - x0) / sigma,

which holds for eps- and v-prediction models alike (the model's own `calculate_denoised` turns
its raw output into x0). Models whose sampling is not a discrete DDPM schedule with eps or v
prediction (flow matching, EDM, x0) are refused by `check_supported`.

Predictions go through `comfy.samplers.calc_cond_batch`, so area, mask, timestep-range, ControlNet,
GLIGEN and hook conditioning and every model patch work as they do in KSampler. The set-up around
it (hook registration, model loading and memory estimates, `pre_run`/`cleanup`, `process_conds`
with SDXL's size conditioning, restoring patches afterwards) is ComfyUI's own `CFGGuider.sample`:
`ComfyScoreModel.session` hands it a sampler whose "sampling" runs the caller's code, so a whole
optimisation runs inside one guider session, exactly like a sampler's steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence, TypeVar

import torch
from torch import Tensor

import comfy.model_base
import comfy.model_sampling
import comfy.samplers
import comfy.supported_models

from ...nfsd_core import SD_PIXELS_PER_LATENT, NoiseRequest, NoiseSchedule, Prompts, ScoreModel

Result = TypeVar("Result")

SUPPORTED_MODELS = ("eps- or v-prediction models with a discrete DDPM schedule (SD 1.x, SD 2.x, SDXL and their "
                    "fine-tunes)")
# Pixels per side of the images the models were trained on (SD 1.x and SD 2.x-base: SD_IMAGE_SIZE).
SD_IMAGE_SIZE, SD2_V_IMAGE_SIZE, SDXL_IMAGE_SIZE = 512, 768, 1024


class UnsupportedModelError(ValueError):
    """The MODEL cannot serve score distillation's noise predictions."""


def check_supported(model) -> str:
    """The prediction type ("epsilon" or "v_prediction") of a ModelPatcher, or UnsupportedModelError."""
    sampling = model.get_model_object("model_sampling")
    schedule_ok = isinstance(sampling, comfy.model_sampling.ModelSamplingDiscrete) and not isinstance(
        sampling, (comfy.model_sampling.ModelSamplingDiscreteEDM, comfy.model_sampling.StableCascadeSampling)
    )
    other_outputs = (comfy.model_sampling.EDM, comfy.model_sampling.X0, comfy.model_sampling.CONST,
                     comfy.model_sampling.COSMOS_RFLOW)
    noise_predicting = isinstance(sampling, comfy.model_sampling.EPS) and not isinstance(sampling, other_outputs)
    if schedule_ok and noise_predicting:
        return "v_prediction" if isinstance(sampling, comfy.model_sampling.V_PREDICTION) else "epsilon"
    kinds = [cls.__name__ for cls in type(sampling).__mro__[1:] if cls.__module__ == comfy.model_sampling.__name__]
    raise UnsupportedModelError(
        f"This MODEL ({type(model.model).__name__}, sampling {' + '.join(kinds) or type(sampling).__name__}) cannot be "
        f"used for score distillation: NFSD, SDS and CSD need {SUPPORTED_MODELS}. Flow-matching models (SD3, Flux, "
        "...), EDM and x0-prediction models are not supported. Load an SD 1.x/2.x/SDXL checkpoint, or remove the "
        "ModelSampling node that changed its prediction type."
    )


def schedule_of(model_sampling) -> NoiseSchedule:
    """The DDPM schedule behind a discrete sampling object: ab_t = 1 / (1 + sigma(t)^2), t = 0..T-1."""
    steps = int(getattr(model_sampling, "num_timesteps", len(model_sampling.sigmas)))
    with torch.inference_mode():
        sigmas = model_sampling.sigma(torch.arange(steps, dtype=torch.float32)).cpu().double()
    return NoiseSchedule(1.0 / (1.0 + sigmas**2))


def condition_names(prompts: Prompts, views: Sequence[str] | None = None) -> dict[str, Any]:
    """The CONDITIONINGs of `prompts` under the names a guider session knows them by.

    The prompt is "positive" and the empty prompt "negative", the roles they play in CFG (so
    ControlNets and GLIGEN copied from positive to negative behave as in KSampler); the negative
    prompt is "negative_prompt", an edit's source prompt "source_prompt". View-dependent prompts
    add "positive_<view>" (and "source_prompt_<view>"), for each of `views` (default: every view
    they hold).
    """
    names = {}
    for role, conditions in (("positive", prompts.positive), ("source_prompt", prompts.source)):
        per_view = conditions if isinstance(conditions, Mapping) else {"": conditions}
        names.update({(role if not view else f"{role}_{view}"): cond for view, cond in per_view.items()
                      if not view or views is None or view in views})
    names["negative"] = prompts.unconditional
    names["negative_prompt"] = prompts.negative
    return {name: cond for name, cond in names.items() if cond is not None}


def one_off_names(requests: Sequence[NoiseRequest]) -> dict[str, Any]:
    """Names for the distinct conditions of `requests`: "positive", "negative", then "condition_<i>"."""
    distinct: list[Any] = []
    for request in requests:
        if all(request.condition is not known for known in distinct):
            distinct.append(request.condition)
    names = ["positive", "negative"] + [f"condition_{i}" for i in range(2, len(distinct))]
    return dict(zip(names, distinct))


@dataclass
class _Session:
    """What a running guider session lends to `predict_noise`."""

    model: Any  # comfy.model_base.BaseModel, loaded
    sampling: Any  # its model_sampling object, as get_model_object gives it
    conds: dict[str, list[dict]]  # processed conditioning by name
    names: dict[int, str]  # id(CONDITIONING) -> name
    model_options: dict
    spatial_shape: tuple[int, ...]


class _RunBody(comfy.samplers.Sampler):
    """A 'sampler' that runs `body` inside the guider's prepared session instead of sampling."""

    def __init__(self, owner: "ComfyScoreModel", conditions: Mapping[str, Any], body: Callable[[], Any]):
        self.owner, self.conditions, self.body, self.result = owner, conditions, body, None

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        self.owner._session = _Session(
            model=model_wrap.inner_model,
            sampling=self.owner.patcher.get_model_object("model_sampling"),
            conds=model_wrap.conds,
            names={id(cond): name for name, cond in self.conditions.items()},
            model_options=extra_args["model_options"],
            spatial_shape=tuple(noise.shape[2:]),
        )
        try:
            self.result = self.body()
        finally:
            self.owner._session = None
        return noise  # nothing was sampled; CFGGuider only rescales this placeholder


class ComfyScoreModel(ScoreModel):
    """Noise predictions from a ComfyUI MODEL (ModelPatcher) under CONDITIONING lists.

    Conditions are CONDITIONING lists, as CLIPTextEncode and the conditioning nodes make them.
    Run many predictions inside one `session` (what the Optimizer does); a `predict_noise` outside
    a session opens a one-off session for its own conditions.
    """

    def __init__(self, model):
        prediction_type = check_supported(model)
        super().__init__(schedule_of(model.get_model_object("model_sampling")), prediction_type)
        self.patcher = model
        self._session: _Session | None = None

    @property
    def device(self) -> torch.device:
        return torch.device(self.patcher.load_device)

    @property
    def latent_format(self):
        return self.patcher.get_model_object("latent_format")

    @property
    def pixels_per_latent(self) -> int:
        """Pixels per side of one latent: the latent format's own where it says (newer ComfyUI, NFSD Demo
        Model), else SD's."""
        return int(getattr(self.latent_format, "spacial_downscale_ratio", SD_PIXELS_PER_LATENT))

    @property
    def native_image_size(self) -> int:
        """Pixels per side of the images the model was trained on: its config's own where it says (NFSD
        Demo Model), 1024 for the SDXL family, 768 for SD 2.x v-prediction (SD 2.x-768), else 512."""
        base = self.patcher.model
        own = getattr(base.model_config, "native_image_size", None)
        if own is not None:
            return int(own)
        if isinstance(base, (comfy.model_base.SDXL, comfy.model_base.SDXLRefiner)):
            return SDXL_IMAGE_SIZE
        if isinstance(base.model_config, comfy.supported_models.SD20) and self.prediction_type == "v_prediction":
            return SD2_V_IMAGE_SIZE
        return SD_IMAGE_SIZE

    def session(self, conditions: Mapping[str, Any], latent_shape: Sequence[int], body: Callable[[], Result],
                seed: int = 0) -> Result:
        """Run `body()` with the model loaded and `conditions` (name -> CONDITIONING) processed for
        latents of `latent_shape` [B, C, H, W]; returns what `body` returns.

        Set-up and tear-down are CFGGuider.sample's, in inference mode as in every sampler;
        `body` may leave inference mode for its own work. Exceptions propagate after clean-up.
        """
        if self._session is not None:
            raise RuntimeError("a ComfyScoreModel session is already running; sessions do not nest")
        guider = comfy.samplers.CFGGuider(self.patcher)
        guider.inner_set_conds(dict(conditions))
        runner = _RunBody(self, conditions, body)
        sampling = self.patcher.get_model_object("model_sampling")
        with torch.inference_mode():
            sigmas = torch.cat([sampling.sigmas.flip(0), sampling.sigmas.new_zeros(1)])  # the model's full schedule
            placeholder = torch.zeros(tuple(latent_shape))
            guider.sample(placeholder, placeholder, runner, sigmas, seed=seed)
        return runner.result

    def _predict_noise(self, x_t: Tensor, t: Tensor, requests: Sequence[NoiseRequest]) -> list[Tensor]:
        if self._session is None:
            predictions = self.session(one_off_names(requests), x_t.shape,
                                       lambda: self._predict_in_session(x_t, t, requests))
        else:
            with torch.inference_mode():
                predictions = self._predict_in_session(x_t, t, requests)
        return [p.to(device=x_t.device, dtype=x_t.dtype).clone() for p in predictions]  # normal tensors again

    def _predict_in_session(self, x_t: Tensor, t: Tensor, requests: Sequence[NoiseRequest]) -> list[Tensor]:
        """Group the requests by their rows; each group is one calc_cond_batch call (the requests that
        cover every row in order, e.g. NFSD's negative prompt on a batch of one, share the call of those
        that name no rows: one batched model call, as the memory check counts it)."""
        session = self._session
        if tuple(x_t.shape[2:]) != session.spatial_shape:
            raise ValueError(f"latents of size {tuple(x_t.shape[2:])} in a session prepared for "
                             f"{session.spatial_shape}")
        device = self.device
        sigma = session.sampling.sigma(t.to(device).float()).float()
        x = x_t.to(device=device, dtype=torch.float32) * (1.0 + sigma**2).sqrt().view(-1, 1, 1, 1)
        groups: dict[tuple[int, ...] | None, list[int]] = {}
        for index, request in enumerate(requests):
            key = None if request.rows is None else tuple(request.rows.tolist())
            if key == tuple(range(x.shape[0])):
                key = None
            groups.setdefault(key, []).append(index)
        predictions: list[Tensor | None] = [None] * len(requests)
        for rows, members in groups.items():
            select = slice(None) if rows is None else torch.tensor(rows, device=device)
            conds = [session.conds[self._name_of(session, requests[i].condition)] for i in members]
            denoised = comfy.samplers.calc_cond_batch(session.model, conds, x[select], sigma[select],
                                                      session.model_options)
            self.forward_calls += 1
            for i, x0 in zip(members, denoised):
                predictions[i] = (x[select] - x0.float()) / sigma[select].view(-1, 1, 1, 1)
        return predictions

    @staticmethod
    def _name_of(session: _Session, condition: Any) -> str:
        name = session.names.get(id(condition))
        if name is None:
            raise ValueError("a noise request names a CONDITIONING this session was not prepared with; "
                             f"known: {sorted(session.conds)}")
        return name
