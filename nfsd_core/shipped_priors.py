"""The miniature Stable Diffusion priors that ship inside the package, by name.

Each is a standard diffusers SD directory under `nfsd_core/assets`, small enough to run on a CPU
with nothing to download:
- `digits`: handwritten digits (scikit-learn's), for the 2D demos;
- `shapes`: rendered simple objects seen from the NeRF trainer's own cameras, for the 3D demo.
`calibration_images` are typical images of a prior, to which a fast latent -> RGB preview is
fitted; they are made on demand, so loading a prior never loads its training code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from .digits.prior import DIGITS_PRIOR_DIR
from .models.diffusers import DiffusersLatentCodec, DiffusersScoreModel, load_diffusers
from .shapes.prior import SHAPES_PRIOR_DIR

CALIBRATION_IMAGES = 64


def digit_images(count: int = CALIBRATION_IMAGES) -> Tensor:
    """The first `count` training digits the prior's evaluator ships with, as its images."""
    from .digits.data import to_images
    from .digits.evaluator import load_digits_evaluator

    return to_images(load_digits_evaluator().split.train_digits[:count])


def shape_images(count: int = CALIBRATION_IMAGES) -> Tensor:
    """`count` renders of the objects, seeded apart from the prior's training set."""
    from .shapes.data import make_shape_set

    return make_shape_set(count, seed=12345).images


def shape_choices() -> dict[str, tuple[str, ...]]:
    """The objects, colours and views of the shapes prior's images (what `render_shape` takes)."""
    from .shapes.objects import COLOURS, OBJECTS
    from .shapes.render import VIEW_AZIMUTHS

    return {"object": tuple(OBJECTS), "colour": tuple(COLOURS), "view": tuple(VIEW_AZIMUTHS)}


def render_shape(shape: str, colour: str, view: str = "front", size: int = 32) -> tuple[Tensor, Tensor]:
    """One of the shapes prior's objects as its images show it, over mid grey: (image [1, 3, size,
    size] in [0, 1], the object's coverage [1, 1, size, size] in [0, 1]). No diffusers needed."""
    from .shapes.render import render_view

    render = render_view(shape, colour, view, size)
    return render.image, render.mask


@dataclass(frozen=True)
class ShippedPrior:
    """A prior's `directory`, what its images are (`subject`), prompts it knows (`example_prompts`)
    and `calibration_images(count)`: [count, 3, H, W] in [0, 1]."""

    name: str
    directory: Path
    subject: str
    example_prompts: tuple[str, ...]
    calibration_images: Callable[..., Tensor]

    def load(self, device: str | torch.device = "cpu",
             dtype: str | torch.dtype = "fp32") -> tuple[DiffusersScoreModel, DiffusersLatentCodec]:
        return load_diffusers(self.directory, dtype, device)


SHIPPED_PRIORS = {
    "digits": ShippedPrior("digits", DIGITS_PRIOR_DIR, "handwritten digits",
                           ("a handwritten digit seven", "an odd handwritten digit"), digit_images),
    "shapes": ShippedPrior("shapes", SHAPES_PRIOR_DIR, "simple objects (sphere, cube, cylinder, cone, torus, mug, "
                           "house) in six colours, seen from the front, side or back",
                           ("a red mug", "a blue house", "a green cube"), shape_images),
}
