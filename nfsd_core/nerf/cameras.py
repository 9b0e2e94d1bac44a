"""Cameras around the object, as threestudio's `random-camera-datamodule` places them.

World frame: z is up and the object sits at the origin. A camera at elevation e, azimuth a and
distance d sits at d (cos e cos a, cos e sin a, sin e) and looks at the origin, so azimuth 0 is
the front view (camera on +x), with +y to the right of the image and +z up. Camera frames follow
OpenGL: the camera looks down its -z axis, x right, y up; `c2w` [B, 4, 4] maps camera to world.
Angles are in degrees, `fovy` is the vertical field of view.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..limits import check_ranges, real, whole

# threestudio's view-dependent prompting thresholds (degrees).
FRONT_HALF_ANGLE = 45.0
BACK_HALF_ANGLE = 45.0
OVERHEAD_ELEVATION = 60.0
MAX_ELEVATION = 89.9
VIEWS = ("front", "side", "back", "overhead")  # the names `view_names` gives, in prompting order


@dataclass(frozen=True)
class CameraSettings:
    """Ranges of the random training cameras and the fixed evaluation orbit.

    Defaults are threestudio's ProlificDreamer stage 1: elevation [-10, 45], distance [1, 1.5],
    fovy [40, 70]; evaluation at elevation 15, distance 1.5, fovy 70. With `uniform_azimuth`
    a batch of B cameras takes one azimuth from each of B equal slices (threestudio's
    `batch_uniform_azimuth`).

    With `view_elevation_step` above 0, a training camera's view name also says its elevation,
    rounded to that many degrees ("front, elevation 20"; `view_names`), for a prior whose captions
    name it (`shapes.data`: issue 18, a view name alone leaves the elevation open).

    Drawn independently, distance and fovy make the object look larger or smaller (a camera at d
    with fovy f sees the half-height d tan(f / 2) at the origin). With `relative_distance` the drawn
    distance is that half-height instead, and the camera stands at distance / tan(fovy / 2): every
    fovy then sees the object at the same size (for (r, r)), only the perspective changes. The
    evaluation camera's distance stays absolute.
    """

    elevation_range: tuple[float, float] = real((-10.0, 45.0), -90.0, 90.0)
    azimuth_range: tuple[float, float] = real((-180.0, 180.0), -360.0, 360.0)
    distance_range: tuple[float, float] = real((1.0, 1.5), 0.01, 100.0)
    fovy_range: tuple[float, float] = real((40.0, 70.0), 1.0, 179.0)
    uniform_azimuth: bool = True
    relative_distance: bool = False
    eval_elevation: float = real(15.0, -90.0, 90.0)
    eval_distance: float = real(1.5, 0.01, 100.0)
    eval_fovy: float = real(70.0, 1.0, 179.0)
    view_elevation_step: int = whole(0, 0, 90)

    def __post_init__(self):
        check_ranges(self)
        for name in ("elevation_range", "azimuth_range", "distance_range", "fovy_range"):
            if len(getattr(self, name)) != 2:
                raise ValueError(f"camera {name} must be [low, high], got {getattr(self, name)}")
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"camera {name} must be (low, high) with low <= high, got {(low, high)}")


@dataclass
class Cameras:
    """B cameras: `c2w` [B, 4, 4], and the [B] `elevation`, `azimuth` (degrees), `distance`, `fovy` (degrees)."""

    c2w: Tensor
    elevation: Tensor
    azimuth: Tensor
    distance: Tensor
    fovy: Tensor

    def __len__(self) -> int:
        return self.c2w.shape[0]

    @property
    def views(self) -> list[str]:
        return view_names(self.elevation, self.azimuth)

    def guidance_views(self, settings: CameraSettings) -> list[str]:
        """The view names the guidance prompts these cameras with: `views`, each with its elevation
        where `settings.view_elevation_step` asks for it (one of `training_views(settings)`)."""
        return view_names(self.elevation, self.azimuth, settings.view_elevation_step)

    def _map(self, function) -> "Cameras":
        return Cameras(*(function(getattr(self, f.name)) for f in dataclasses.fields(self)))

    def to(self, device: torch.device | str) -> "Cameras":
        return self._map(lambda values: values.to(device))

    def select(self, index: int) -> "Cameras":
        """Camera `index` alone (a batch of one)."""
        return self._map(lambda values: values[index : index + 1])

    def focal_length(self, height: int) -> Tensor:
        """Focal lengths [B] in pixels for images `height` pixels tall."""
        return 0.5 * height / torch.tan(torch.deg2rad(self.fovy) / 2)


def look_at_origin(elevation: Tensor, azimuth: Tensor, distance: Tensor) -> Tensor:
    """Camera-to-world matrices [B, 4, 4] of cameras at the given [B] spherical positions, z up.

    Elevations are kept within +-89.9 degrees: straight above the origin "right" is undefined.
    """
    elevation_rad = torch.deg2rad(elevation.clamp(-MAX_ELEVATION, MAX_ELEVATION))
    azimuth_rad = torch.deg2rad(azimuth)
    position = distance.unsqueeze(-1) * torch.stack(
        [
            torch.cos(elevation_rad) * torch.cos(azimuth_rad),
            torch.cos(elevation_rad) * torch.sin(azimuth_rad),
            torch.sin(elevation_rad),
        ],
        dim=-1,
    )
    forward = F.normalize(-position, dim=-1)
    world_up = torch.tensor([0.0, 0.0, 1.0], dtype=position.dtype).expand_as(forward)
    right = F.normalize(torch.linalg.cross(forward, world_up), dim=-1)
    up = F.normalize(torch.linalg.cross(right, forward), dim=-1)
    c2w = torch.eye(4, dtype=position.dtype).repeat(position.shape[0], 1, 1)
    c2w[:, :3, :3] = torch.stack([right, up, -forward], dim=-1)
    c2w[:, :3, 3] = position
    return c2w


def make_cameras(elevation: Tensor, azimuth: Tensor, distance: Tensor, fovy: Tensor) -> Cameras:
    """Cameras looking at the origin from [B] elevations, azimuths, distances, with [B] fovy."""
    elevation, azimuth, distance, fovy = (torch.as_tensor(v, dtype=torch.float32) for v in (elevation, azimuth, distance, fovy))
    return Cameras(look_at_origin(elevation, azimuth, distance), elevation, azimuth, distance, fovy)


def sample_cameras(settings: CameraSettings, batch: int, generator: torch.Generator) -> Cameras:
    """B random training cameras, every draw from `generator` (CPU tensors).

    Elevation: with probability 1/2 uniform in degrees, else uniform on the sphere (threestudio).
    """
    def uniform(low: float, high: float, u: Tensor) -> Tensor:
        return low + (high - low) * u

    draws = torch.rand(6, batch, generator=generator)
    low, high = (math.radians(v) for v in settings.elevation_range)
    sphere_u = uniform((math.sin(low) + 1) / 2, (math.sin(high) + 1) / 2, draws[1])
    on_sphere = torch.rad2deg(torch.asin((2 * sphere_u - 1).clamp(-1, 1)))
    elevation = torch.where(draws[0] < 0.5, uniform(*settings.elevation_range, draws[2]), on_sphere)
    if settings.uniform_azimuth:
        slices = (draws[3] + torch.arange(batch)) / batch
    else:
        slices = draws[3]
    azimuth = uniform(*settings.azimuth_range, slices)
    distance = uniform(*settings.distance_range, draws[4])
    fovy = uniform(*settings.fovy_range, draws[5])
    if settings.relative_distance:
        distance = distance / torch.tan(torch.deg2rad(fovy) / 2)
    return make_cameras(elevation, azimuth, distance, fovy)


def orbit_cameras(frames: int, elevation: float, distance: float, fovy: float, start_azimuth: float = 0.0) -> Cameras:
    """`frames` cameras evenly around the z axis at one elevation (a turntable), starting at the front."""
    if frames < 1:
        raise ValueError(f"an orbit needs at least one frame, got {frames}")
    azimuth = start_azimuth + 360.0 * torch.arange(frames, dtype=torch.float32) / frames
    azimuth = (azimuth + 180.0) % 360.0 - 180.0
    full = torch.ones(frames)
    return make_cameras(elevation * full, azimuth, distance * full, fovy * full)


def rounded_elevation(elevation: float, step: int) -> int:
    """`elevation` in degrees rounded to the nearest multiple of `step` degrees (halves up)."""
    return step * math.floor(elevation / step + 0.5)


def elevation_phrase(elevation: float, step: int) -> str:
    """How a view name says an elevation rounded to `step` degrees: "elevation 20", "elevation minus 10"
    (words and digits, no sign: the shapes prior's tokenizer would split a "-" off as a word of its own)."""
    degrees = rounded_elevation(elevation, step)
    return f"elevation {degrees}" if degrees >= 0 else f"elevation minus {-degrees}"


def view_names(elevation: Tensor, azimuth: Tensor, elevation_step: int = 0) -> list[str]:
    """threestudio's view of each camera: "overhead" above 60 degrees elevation, else "front"
    within 45 degrees of azimuth 0, "back" within 45 degrees of 180, "side" otherwise. With an
    `elevation_step` above 0 each name goes on with the camera's `elevation_phrase`: "side, elevation 20"."""
    azimuth = (azimuth + 180.0) % 360.0 - 180.0
    names = []
    for e, a in zip(elevation.tolist(), azimuth.tolist()):
        if e > OVERHEAD_ELEVATION:
            name = "overhead"
        elif abs(a) < FRONT_HALF_ANGLE:
            name = "front"
        elif abs(a) > 180.0 - BACK_HALF_ANGLE:
            name = "back"
        else:
            name = "side"
        names.append(f"{name}, {elevation_phrase(e, elevation_step)}" if elevation_step > 0 else name)
    return names


def training_views(settings: CameraSettings) -> list[str]:
    """The views (see `view_names`) that `sample_cameras` can give cameras of `settings`, in the order
    front, side, back, overhead: "overhead" only if the elevation range reaches above 60 degrees, the
    others only for the azimuths the range covers (all three for a full turn). With the settings'
    `view_elevation_step`, each of them with every rounded elevation of the range, lowest first."""
    low, high = settings.elevation_range
    views = set()
    if high > OVERHEAD_ELEVATION:
        views.add("overhead")
    if low <= OVERHEAD_ELEVATION:
        start, end = settings.azimuth_range
        # A view's name changes only at the azimuths +-45 and +-135 (and their turns): the names of the range's
        # ends and of one azimuth between each pair of neighbouring changes are every name the range holds.
        changes = [edge + turn for turn in range(-720, 721, 360) for edge in (-135.0, -45.0, 45.0, 135.0)
                   if start < edge + turn < end]
        cuts = [start, *sorted(changes), end]
        azimuths = cuts + [(left + right) / 2 for left, right in zip(cuts, cuts[1:])]
        views.update(view_names(torch.full((len(azimuths),), float(low)), torch.tensor(azimuths)))
    named = [view for view in VIEWS if view in views]
    step = settings.view_elevation_step
    if step == 0:
        return named
    lowest, highest = (rounded_elevation(e, step) for e in settings.elevation_range)
    phrases = [elevation_phrase(e, step) for e in range(lowest, highest + 1, step)]
    return [f"{view}, {phrase}" for view in named for phrase in phrases]
