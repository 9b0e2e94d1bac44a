"""Training the 3D reference prior: rendered objects as `PriorData` for the shared two-stage
training (`nfsd_core.priors.training`), the judge beside it, and a DDIM sample check.

    python -m nfsd_core.shapes.training --output outputs/shapes_prior
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from ..distillation import Prompts
from ..nerf.cameras import CameraSettings
from ..priors.architecture import MiniatureSD
from ..priors.training import Log, PriorData, TrainingSettings, train_prior
from ..sampling import ddim_sample
from ..priors.degradation import degrade, negative_caption
from .data import (
    CAMERA_VIEWS, DATA_CAMERAS, PRIOR_CAMERAS_NAME, ShapeSet, fine_prompt, make_shape_set, real_caption,
    vocabulary_words,
)
from .evaluator import ShapeJudge
from .objects import COLOURS, FRONTED, OBJECTS
from .prior import SHAPES_PRIOR_DIR, load_shapes_prior

# Coloured, shaded objects need a wider VAE and UNet than the grey digits; latents stay 4 x 8 x 8.
SHAPES_SD = MiniatureSD(vae_channels=(32, 64, 64), unet_channels=(48, 96, 96))
# The digits' 300 VAE steps left these renders at reconstruction RMSE 0.12 (blobs of the wrong
# colour, and samples no better); 2000 steps reach 0.033 (0.038 on held-out renders), 17 minutes
# alone on 2 CPU cores. The denoiser has not been trained on that VAE yet.
SHAPES_TRAINING = TrainingSettings(vae_steps=2000, denoiser_steps=2400, architecture=SHAPES_SD)
TRAINING_IMAGES = 8000
JUDGE_IMAGES = (6000, 1400)  # training and held-out renders of the judge (other seeds than the prior's)


def shapes_training_data(shape_set: ShapeSet, elevation_step: int = 0) -> PriorData:
    """`shape_set` as what `priors.training` learns from; with an `elevation_step`, captions that name the
    view name the elevation too (`real_caption`)."""
    return PriorData(
        images=shape_set.images,
        caption=lambda row, generator: real_caption(shape_set.samples[row], generator, elevation_step),
        degrade=degrade,
        negative_caption=negative_caption,
        words=vocabulary_words(elevation_step),
    )


def train_shapes_prior(directory: str | Path, settings: TrainingSettings = SHAPES_TRAINING,
                       images: int = TRAINING_IMAGES, log: Log = print, vae_only: bool = False,
                       cameras: CameraSettings = DATA_CAMERAS[PRIOR_CAMERAS_NAME], elevation_step: int = 0,
                       vae_from: Path | None = None) -> dict | None:
    """Render `images` objects (seed `settings.seed`) through `cameras`, train the prior on them and save it
    (`train_prior`, which takes `vae_only` and `vae_from`); `elevation_step` as in `shapes_training_data`."""
    data = shapes_training_data(make_shape_set(images, settings.seed, cameras=cameras), elevation_step)
    return train_prior(directory, data, settings, log, vae_only, vae_from)


def check_samples(directory: str | Path, judge: ShapeJudge, per_prompt: int = 2, seed: int = 0) -> dict:
    """DDIM-50 samples at guidance 7.5 of every fine prompt with a view the cameras show, judged:
    the share named with the prompt's shape, colour and view."""
    model, codec = load_shapes_prior(directory=directory)
    rows = [(shape, colour, view) for shape in OBJECTS for colour in COLOURS for view in CAMERA_VIEWS] * per_prompt
    texts = [fine_prompt(colour, shape, view) for shape, colour, view in rows]
    prompts = Prompts(positive={text: model.encode_prompt(text) for text in dict.fromkeys(texts)},
                      unconditional=model.encode_prompt(""), negative=model.encode_prompt(""))
    size = SHAPES_SD.latent_size
    noise = torch.randn((len(rows), SHAPES_SD.latent_channels, size, size),
                        generator=torch.Generator().manual_seed(seed))
    images = codec.decode(ddim_sample(model, prompts, noise, views=texts))
    named = judge.predict(images)
    scores = {name: sum(p == truth for p, truth in zip(named[name], column)) / len(rows)
              for name, column in zip(("shape", "colour", "view"), zip(*rows))}
    fronted_views = [(p, v) for p, (s, _, v) in zip(named["view"], rows) if s in FRONTED]
    scores["view_of_fronted"] = sum(p == v for p, v in fronted_views) / len(fronted_views)
    return {"ddim_50_cfg_7.5": {key: round(value, 4) for key, value in scores.items()}, "samples": len(rows)}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m nfsd_core.shapes.training",
                                     description="Render the objects, train the 3D prior and its judge.")
    parser.add_argument("--output", type=Path, default=SHAPES_PRIOR_DIR, help="where to write the SD directory")
    parser.add_argument("--seed", type=int, default=SHAPES_TRAINING.seed)
    parser.add_argument("--images", type=int, default=TRAINING_IMAGES, help="rendered training images")
    parser.add_argument("--denoiser-steps", type=int, default=SHAPES_TRAINING.denoiser_steps)
    parser.add_argument("--cameras", choices=sorted(DATA_CAMERAS), default=PRIOR_CAMERAS_NAME,
                        help="the cameras the objects are rendered through (shapes.data.DATA_CAMERAS)")
    parser.add_argument("--view-elevation-step", type=int, default=0, choices=range(0, 91), metavar="DEGREES",
                        help="captions with a view also name the elevation rounded to this many degrees, as NeRF "
                             "cameras with the same CameraSettings.view_elevation_step do (0: never)")
    parser.add_argument("--vae-from", type=Path, default=None,
                        help="take the VAE of the prior in this directory (rendered from the same images) "
                             "instead of training one")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--vae-only", action="store_true",
                        help="stop after the VAE stage (about half the time); the next run resumes from it")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = replace(SHAPES_TRAINING, seed=args.seed, denoiser_steps=args.denoiser_steps)
    record = train_shapes_prior(args.output, settings, args.images,
                                log=lambda entry: print(json.dumps(entry), flush=True), vae_only=args.vae_only,
                                cameras=DATA_CAMERAS[args.cameras], elevation_step=args.view_elevation_step,
                                vae_from=args.vae_from)
    if record is None:
        return 0
    judge = ShapeJudge.fit(*JUDGE_IMAGES, seed=args.seed)
    judge.save(args.output / "evaluator")
    record.update(images=args.images, evaluator=judge.info, samples=check_samples(args.output, judge, seed=args.seed))
    (args.output / "training_log.json").write_text(json.dumps(record, indent=1))
    print(json.dumps({key: record[key] for key in ("total_seconds", "evaluator", "samples")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
