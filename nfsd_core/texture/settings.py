"""All settings of a mesh-texturing run in one JSON-serialisable tree of frozen dataclasses.

The colour lives in a field over the surface (a hash grid and a small MLP, as the NeRF's colour;
Fantasia3D's appearance stage), rendered from the NeRF's random cameras at `render_size` pixels
and resized to `guidance_size` for the model: RGB through the VAE, or latents straight into the
model (Latent-Paint). The defaults suit SD 1.x / 2.x at 512 px on a GPU.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from ..limits import check_ranges, real, whole
from ..models.base import SD_LATENT_CHANNELS, SD_PIXELS_PER_LATENT
from ..nerf.background import BackgroundSettings
from ..nerf.cameras import CameraSettings
from ..nerf.field import HashGridSettings
from ..nerf.settings import COLOUR_SPACES, MAX_SIZE, LearningRateScales, settings_from_dict
from ..nerf.shading import DEFAULT_AMBIENT, DEFAULT_LIGHT, SHADINGS as NERF_SHADINGS, check_shading
from .visibility import VISIBILITY_BACKENDS

SHADINGS = (*NERF_SHADINGS, "random_light")
MAX_CAMERA_BANK = 4096


@dataclass(frozen=True)
class ColourFieldSettings(HashGridSettings):
    """The colour field: a hash grid over the mesh's bounding cube (16 levels x 2 features, 2^19
    rows) and an MLP of one hidden layer of 64 (the NeRF's colour network). Its finest resolution,
    2048 over a cube about the mesh's size, gives cells as fine as the NeRF's 4096 over a cube twice
    as large."""

    finest_resolution: int = whole(2048, 2, 65536)


@dataclass(frozen=True)
class TextureSettings:
    """How the texture is rendered, seen and learned.

    - `colour`: "rgb" renders pixels that the codec (VAE) encodes with gradient; "latent" renders
      `latent_channels` latents (Latent-Paint), resized to guidance_size / latent_downscale.
    - `shading`: "albedo" shows the colour as it is (like the NeRF's renders); "lambertian" lights
      it from the fixed direction `light` (renderer frame: z up, front +x) with `ambient`, so the
      texture learns the albedo under the light the images were made with; "random_light" draws a
      light near each training camera (DreamFusion), evaluation renders use `light`. RGB only.
    - `camera_bank`: 0 casts every step's random cameras; N > 0 draws N cameras once (from `seed`)
      and each step takes its cameras from them, so the visibility pass runs once per bank camera
      and is cached (N x render_size^2 x 16 bytes).
    - `fit_radius`, `front`: where the mesh sits for the cameras (see `surface`).
    - `visibility`: "auto" (Embree on the CPU where embreex is installed, else the torch rasteriser),
      "torch" or "embree".
    - `seed` fixes the initial weights and the camera bank.
    """

    colour: str = "rgb"
    latent_channels: int = whole(SD_LATENT_CHANNELS, 1, 16)
    latent_downscale: int = whole(SD_PIXELS_PER_LATENT, 1, 64)
    render_size: int = whole(512, 8, MAX_SIZE)
    guidance_size: int = whole(512, 8, MAX_SIZE)
    batch_size: int = whole(1, 1, 64)
    shading: str = "albedo"
    light: tuple[float, float, float] = real(DEFAULT_LIGHT, -1000.0, 1000.0)
    ambient: float = real(DEFAULT_AMBIENT, 0.0, 1.0)
    camera_bank: int = whole(0, 0, MAX_CAMERA_BANK)
    fit_radius: float = real(0.5, 0.0, 100.0)
    front: str = "+z"
    visibility: str = "auto"
    seed: int = whole(0, 0, 2**64 - 1)
    colour_field: ColourFieldSettings = field(default_factory=ColourFieldSettings)
    background: BackgroundSettings = field(default_factory=BackgroundSettings)
    cameras: CameraSettings = field(default_factory=CameraSettings)
    learning_rates: LearningRateScales = field(default_factory=LearningRateScales)

    def __post_init__(self):
        from .surface import FRONTS

        for name, value, choices in (("colour", self.colour, COLOUR_SPACES), ("shading", self.shading, SHADINGS),
                                     ("front", self.front, FRONTS), ("visibility", self.visibility,
                                                                     VISIBILITY_BACKENDS)):
            if value not in choices:
                raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
        check_ranges(self)
        check_shading(self.colour, self.shading, self.light)
        if self.colour == "latent" and self.background.kind == "random":
            raise ValueError("the 'random' background draws RGB colours, which latent colour mode cannot show; "
                             "use the 'environment' background")
        if self.colour == "latent" and self.guidance_size % self.latent_downscale:
            raise ValueError(
                f"guidance_size {self.guidance_size} must be a multiple of latent_downscale {self.latent_downscale}"
            )

    @property
    def latent_colour(self) -> bool:
        return self.colour == "latent"

    @property
    def channels(self) -> int:
        return self.latent_channels if self.latent_colour else 3

    def to_config(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples as lists, as they come back from JSON)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "TextureSettings":
        return settings_from_dict(cls, config)
