"""All settings of a NeRF run in one JSON-serialisable tree of frozen dataclasses.

The defaults follow threestudio's ProlificDreamer stage 1 (the natural host for NFSD's CFG 7.5):
renders of 64 px, then a larger size from a fraction of the run on; random cameras; learning
rates of hash grid : MLPs : background = 1 : 0.1 : 0.1 (0.01 / 0.001 / 0.001 at base lr 0.01).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from typing import Any

import torch

from ..bounded_text import excerpt
from ..limits import check_ranges, real, whole
from ..models.base import SD_LATENT_CHANNELS, SD_PIXELS_PER_LATENT
from .background import BackgroundSettings
from .cameras import CameraSettings
from .field import VolumeSettings
from .occupancy import OccupancySettings
from .regularizers import RegularizerSettings
from .shading import DEFAULT_AMBIENT, DEFAULT_LIGHT, SHADINGS, Light, check_shading

COLOUR_SPACES = ("rgb", "latent")
MAX_SIZE = 2048  # pixels per side of a render or of the images the model sees
RAY_SAMPLES_MAX = 1024
# An evaluation render larger than the training's takes up to this many times its samples per ray.
MAX_EVALUATION_SAMPLE_FACTOR = 4


@dataclass(frozen=True)
class LearningRateScales:
    """Learning rates of the parameter groups, relative to the optimiser's base lr."""

    encoding: float = real(1.0, 0.0, 1000.0)
    networks: float = real(0.1, 0.0, 1000.0)
    background: float = real(0.1, 0.0, 1000.0)

    def __post_init__(self):
        check_ranges(self)


@dataclass(frozen=True)
class NerfSettings:
    """How the NeRF is built, rendered and regularised.

    - `colour`: "rgb" renders images that the codec (VAE) encodes, with gradient, after resizing
      to `guidance_size` pixels; "latent" renders `latent_channels` latents directly (Latent-NeRF),
      resized to guidance_size / latent_downscale.
    - `render_sizes` [k + 1] and `size_milestones` [k] (increasing fractions of the run): the
      render is render_sizes[i] pixels square once i milestones have passed.
    - `samples_per_ray`: stratified samples per ray (batched renderer), and the marching step
      sqrt(3) 2 radius / samples_per_ray of the packed one.
    - `shading`: "albedo" renders the colour as it is; "lambertian" lights each sample from the fixed
      direction `light` (world frame: z up, front +x) with `ambient`, by its density-gradient normal,
      so that the score model sees the geometry (DreamFusion). Training renders are unshaded before
      the fraction `shaded_from` of the run (threestudio's ambient-only steps). RGB only.
    - `seed` fixes the initial weights.
    """

    colour: str = "rgb"
    latent_channels: int = whole(SD_LATENT_CHANNELS, 1, 16)
    latent_downscale: int = whole(SD_PIXELS_PER_LATENT, 1, 64)
    radius: float = real(1.0, 0.001, 1000.0)
    samples_per_ray: int = whole(64, 1, RAY_SAMPLES_MAX)
    render_sizes: tuple[int, ...] = whole((64, 256), 1, MAX_SIZE)
    size_milestones: tuple[float, ...] = real((0.5,), 0.0, 1.0)
    guidance_size: int = whole(512, 8, MAX_SIZE)
    batch_size: int = whole(1, 1, 64)
    shading: str = "albedo"
    light: tuple[float, float, float] = real(DEFAULT_LIGHT, -1000.0, 1000.0)
    ambient: float = real(DEFAULT_AMBIENT, 0.0, 1.0)
    shaded_from: float = real(0.0, 0.0, 1.0)
    seed: int = whole(0, 0, 2**64 - 1)
    volume: VolumeSettings = field(default_factory=VolumeSettings)
    background: BackgroundSettings = field(default_factory=BackgroundSettings)
    cameras: CameraSettings = field(default_factory=CameraSettings)
    occupancy: OccupancySettings = field(default_factory=OccupancySettings)
    regularizers: RegularizerSettings = field(default_factory=RegularizerSettings)
    learning_rates: LearningRateScales = field(default_factory=LearningRateScales)

    def __post_init__(self):
        if self.colour not in COLOUR_SPACES:
            raise ValueError(f"unknown colour space {excerpt(self.colour)}; choose one of {', '.join(COLOUR_SPACES)}")
        if self.shading not in SHADINGS:
            raise ValueError(f"unknown shading {excerpt(self.shading)}; choose one of {', '.join(SHADINGS)}")
        check_ranges(self)
        check_shading(self.colour, self.shading, self.light)
        if not self.render_sizes:
            raise ValueError("render_sizes must list at least one pixel size")
        if self.colour == "latent" and self.background.kind == "random":
            raise ValueError("the 'random' background draws RGB colours, which latent colour mode cannot show; "
                             "use the 'environment' background")
        milestones = list(self.size_milestones)
        if len(milestones) != len(self.render_sizes) - 1:
            raise ValueError(
                f"give one size milestone per size change: {len(self.render_sizes)} render sizes need "
                f"{len(self.render_sizes) - 1} milestones, got {len(milestones)}"
            )
        if milestones != sorted(milestones) or any(not 0.0 < m < 1.0 for m in milestones):
            raise ValueError(f"size_milestones must be increasing fractions of the run in (0, 1), got {milestones}")
        if self.colour == "latent" and self.guidance_size % self.latent_downscale:
            raise ValueError(
                f"guidance_size {self.guidance_size} must be a multiple of latent_downscale {self.latent_downscale}"
            )

    def render_size(self, step: int, steps: int) -> int:
        """The render size at `step` of `steps`."""
        passed = sum(step >= milestone * steps for milestone in self.size_milestones)
        return self.render_sizes[passed]

    def shaded(self, step: int, steps: int) -> bool:
        """Whether the training render at `step` of `steps` is shaded."""
        return self.shading != "albedo" and step >= self.shaded_from * steps

    def shading_light(self, device: torch.device | str | None = None) -> Light | None:
        """The light of shaded renders ("lambertian"), or None where renders are unshaded."""
        return None if self.shading == "albedo" else Light.from_direction(self.light, self.ambient, device)

    def evaluation_samples_per_ray(self, size: int) -> int:
        """Samples per ray of an evaluation render `size` pixels square: `samples_per_ray` times how many
        times the largest training render it is, rounded up, from 1 to `MAX_EVALUATION_SAMPLE_FACTOR`.

        Evaluation samples sit at fixed depths. At the training's spacing, a render several times larger
        than the training's resolves the steps between them as rings over the object; at 4 times the
        samples they are gone (README "Stripes on large turntables").
        """
        factor = min(MAX_EVALUATION_SAMPLE_FACTOR, max(1, -(-size // max(self.render_sizes))))
        return min(RAY_SAMPLES_MAX, self.samples_per_ray * factor)

    def to_config(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples as lists, as they come back from JSON)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "NerfSettings":
        return settings_from_dict(cls, config)


def settings_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild dataclass `cls` from `dataclasses.asdict` output (after a JSON round trip)."""
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"unknown {cls.__name__} setting(s) {', '.join(excerpt(name) for name in unknown[:5])}"
                         + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""))
    values = {}
    for name, value in data.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            if not isinstance(value, dict):
                raise ValueError(f"{name} must be a JSON object of {kind.__name__} settings, got {excerpt(value)}")
            try:
                value = settings_from_dict(kind, value)
            except ValueError as error:
                raise ValueError(f"{name}.{error}") from None
        elif typing.get_origin(kind) is tuple:
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"{name} must be a list, got {excerpt(value)}")
            value = tuple(value)
        values[name] = value
    return cls(**values)
