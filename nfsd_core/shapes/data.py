"""Rendered objects as a prior's training data, with their captions and exact ground truth.

Every image is an object of `objects.OBJECTS` in a colour of `objects.COLOURS`, seen from a
camera drawn as the NeRF trainer draws its training cameras (`sample_cameras`), named with the
trainer's own view names, over a random solid background (the NeRF's "random" background: uniform
RGB). The shipped prior's data, and the judge's, is drawn through the trainer's defaults
(`TRAINER_CAMERAS`), whose distance and fovy, drawn independently, show the same object at many
sizes (the frame's half-height at the origin spans 0.36 to 1.05) that no caption names. A NeRF
trained through such cameras comes out too large (issue 18, README "Object size"); the 3D demo
trains through `SHAPE_CAMERAS` instead, which frame one half-height. A prior can also be trained
on data drawn through `SHAPE_CAMERAS` (`DATA_CAMERAS`); measured, it does not bring the size down.
Captions:

- fine: "a red mug, side view" (or without the view);
- coarse: "a mug, side view" (or without the view), for any colour: the many-image condition of
  the paper's over-smoothing argument;
- empty for about 10%; degraded copies get the negative captions of `priors.degradation`.
The truth of each image (`ShapeSample`) is kept for the judge and the benchmark's metrics.

With an elevation step (`python -m nfsd_core.shapes.training --view-elevation-step 10`), most captions
that name the view also name the camera's elevation, rounded as the NeRF's view names round it
(`nerf.cameras.elevation_phrase`): "a red mug, side view, elevation 20". A view name alone leaves 55
degrees of elevation open, over which a cube's renders average to a rounded blob (issue 18,
`benchmarks/experiments/reconstruction_ceiling.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..distillation import VIEW_SUFFIXES, view_suffix
from ..nerf.cameras import CameraSettings, Cameras, elevation_phrase, sample_cameras
from ..priors.degradation import NEGATIVE_PHRASES
from .objects import COLOURS, OBJECTS
from .render import Scene, render_scenes

IMAGE_SIZE = 32
VIEWS = tuple(VIEW_SUFFIXES)  # the view names nfsd_core gives cameras: front, side, back, overhead
# The views the training cameras show: their elevations (-10 to 45 degrees) never reach "overhead" (above 60).
CAMERA_VIEWS = ("front", "side", "back")
# The NeRF trainer's default cameras: the shipped prior's data and the judge's.
TRAINER_CAMERAS = CameraSettings()
# The 3D demo's training cameras: elevation and azimuth as the trainer's, fovy 40 to 55, and the distance that
# shows the half-height 0.5 at the origin (0.96 to 1.37), so every camera sees the object at one size, as large as
# the trainer's closest views show it (benchmarks/experiments/size_nerf.py, "fixed frame 0.5"). The evaluation view
# (turntables) stays the trainer's: elevation 15, distance 1.5, fovy 70.
FRAME_HALF_HEIGHT = 0.5
SHAPE_CAMERAS = CameraSettings(distance_range=(FRAME_HALF_HEIGHT, FRAME_HALF_HEIGHT), fovy_range=(40.0, 55.0),
                               relative_distance=True)
# The cameras a prior's data can be drawn through, by name (`python -m nfsd_core.shapes.training --cameras`),
# and the shipped prior's.
DATA_CAMERAS = {"trainer": TRAINER_CAMERAS, "frame": SHAPE_CAMERAS}
PRIOR_CAMERAS_NAME = "trainer"
# How a real image's caption is drawn; the rest of the probability is the empty caption.
CAPTION_PROBABILITIES = {"fine_view": 0.35, "fine": 0.15, "coarse_view": 0.25, "coarse": 0.15}
# With an elevation step: the share of the captions that name the view which also name the elevation.
ELEVATION_CAPTION_SHARE = 0.7


@dataclass(frozen=True)
class ShapeSample:
    """The exact truth of one rendered image."""

    shape: str
    colour: str
    view: str
    elevation: float
    azimuth: float
    distance: float
    fovy: float
    background: tuple[float, float, float]


@dataclass
class ShapeSet:
    """Rendered `images` [N, 3, H, W] in [0, 1] and the `samples` they show, row by row."""

    images: Tensor
    samples: list[ShapeSample]


def fine_prompt(colour: str, shape: str, view: str | None = None) -> str:
    """E.g. "a red mug, side view", or "a red mug" without a view; `view` is a view name (`view_suffix`)."""
    return f"a {colour} {shape}" + (f", {view_suffix(view)}" if view else "")


def coarse_prompt(shape: str, view: str | None = None) -> str:
    """E.g. "a mug, side view": any colour."""
    return f"a {shape}" + (f", {view_suffix(view)}" if view else "")


def vocabulary_words(elevation_step: int = 0) -> list[str]:
    """Every word the captions use (the tokenizer gives each its own token), and with an `elevation_step` the
    words of the elevations (their numbers are digits, a token each, as CLIP's tokenizer splits them)."""
    elevations = "elevation minus" if elevation_step else ""
    text = " ".join([*COLOURS, *OBJECTS, *VIEWS, "a view", *NEGATIVE_PHRASES, elevations])
    return sorted(set(text.replace("-", " - ").replace(",", " ").split()))


def sample_scenes(count: int, generator: torch.Generator,
                  cameras: CameraSettings = TRAINER_CAMERAS) -> tuple[list[ShapeSample], Cameras]:
    """`count` random objects, colours, backgrounds and training cameras, all drawn from `generator`."""
    shapes = torch.randint(len(OBJECTS), (count,), generator=generator).tolist()
    colours = torch.randint(len(COLOURS), (count,), generator=generator).tolist()
    backgrounds = torch.rand(count, 3, generator=generator).tolist()
    drawn = sample_cameras(cameras, count, generator)
    shape_names, colour_names = list(OBJECTS), list(COLOURS)
    samples = [
        ShapeSample(shape_names[s], colour_names[c], view, e, a, d, f, tuple(b))
        for s, c, view, e, a, d, f, b in zip(shapes, colours, drawn.views, drawn.elevation.tolist(),
                                              drawn.azimuth.tolist(), drawn.distance.tolist(), drawn.fovy.tolist(),
                                              backgrounds)
    ]
    return samples, drawn


def render_samples(samples: list[ShapeSample], cameras: Cameras, size: int = IMAGE_SIZE) -> Tensor:
    """Images [N, 3, size, size] of `samples` from their `cameras`."""
    scenes = [Scene(s.shape, s.colour, s.background) for s in samples]
    return render_scenes(scenes, cameras, size).image


def make_shape_set(count: int, seed: int, size: int = IMAGE_SIZE,
                   cameras: CameraSettings = TRAINER_CAMERAS) -> ShapeSet:
    """A seeded set of rendered objects (the same `seed` gives the same images)."""
    samples, drawn = sample_scenes(count, torch.Generator().manual_seed(seed), cameras)
    return ShapeSet(render_samples(samples, drawn, size), samples)


def real_caption(sample: ShapeSample, generator: torch.Generator, elevation_step: int = 0) -> str:
    """A random caption of a rendered object: fine or coarse, with or without its view, or empty. With an
    `elevation_step`, a caption with the view names the elevation too, `ELEVATION_CAPTION_SHARE` of the time."""
    draw = torch.rand((), generator=generator).item()
    for kind, probability in CAPTION_PROBABILITIES.items():
        if draw < probability:
            view = sample.view if kind.endswith("_view") else None
            if view and elevation_step and torch.rand((), generator=generator).item() < ELEVATION_CAPTION_SHARE:
                view = f"{view}, {elevation_phrase(sample.elevation, elevation_step)}"
            if kind.startswith("fine"):
                return fine_prompt(sample.colour, sample.shape, view)
            return coarse_prompt(sample.shape, view)
        draw -= probability
    return ""
