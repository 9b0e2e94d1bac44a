"""`python -m nfsd_core`: score distillation from the command line, on a local diffusers model.

Subcommands:
    generate   optimise a latent canvas with one or more rules (same seed) and save PNGs + statistics;
               with --source-image, edit that image (DDS, NFSD-edit, or any rule from the image)
    decompose  save the NFSD score decomposition (delta_C, delta_D, noise residual) of an image
    demo       same-seed SDS vs NFSD on the bundled digits prior (see nfsd_core.demo)
    demo3d     text to NeRF, turntable and mesh on the 3D reference prior (see nfsd_core.shapes.demo)
    batch      many generate / demo3d runs from a JSONL or CSV file, on Ray or one by one (see nfsd_core.batch)

Every subcommand checks its input before any model loads and exits with status 2 and a message
naming the bad input. To add a subcommand, write `add_<name>(subparsers)` that builds its parser
and sets `handler=run_<name>` (a function of the parsed arguments returning an exit status),
then list it in SUBCOMMANDS. A command that can run in a batch also sets `job=<name>_job`: a
function of the parsed arguments that checks them and returns the run as a `batch.Task`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from .batch.jobs import add_batch
from .batch.tasks import ModelSpec, Report, Task
from .checkpoint import CheckpointError, claim_checkpoint_dir
from .demo import add_demo
from .decomposition import COMPONENTS, decompose_score, decomposition_images
from .distillation import Prompts, ScoreDistillation, latent_mask
from .guidance import (
    DEFAULT_NEGATIVE_PROMPT, DEFAULT_WEIGHTING, NFSD_THRESHOLD, RULES, WEIGHTINGS, GuidanceRule, make_rule,
)
from .image_files import image_size, load_image, save_grid
from .limits import json_ready
from .models.diffusers import DTYPES, check_layout, load_diffusers, vae_downscale_factor
from .optimize import NonFiniteParameters, OptimizerSettings, StepRecord, history_columns, optimize
from .preview import LatentToRGB, fit_latent_to_rgb
from .representations.canvas import LatentCanvas
from .shapes.demo import add_demo3d
from .timesteps import SCHEDULE_KINDS, TimestepSchedule
from .usage import UsageError


def checked(argument: str, make: Callable[[], Any]) -> Any:
    """`make()`, with a ValueError or FileNotFoundError turned into a UsageError naming `argument`."""
    try:
        return make()
    except (ValueError, FileNotFoundError) as error:
        raise UsageError(f"{argument}: {error}") from error


def check_model_and_size(model: str, sizes: dict[str, int]) -> int:
    """Check the model directory's layout and that each pixel size fits its VAE; returns the factor."""
    checked("--model", lambda: check_layout(model))
    factor = vae_downscale_factor(model)
    for argument, pixels in sizes.items():
        if pixels < factor or pixels % factor:
            nearest = max(factor, round(pixels / factor) * factor)
            raise UsageError(f"{argument} {pixels} must be a positive multiple of the model's VAE factor {factor} "
                             f"(from {model}/vae/config.json); try {nearest}")
    return factor


def positive(argument: str, value: float) -> None:
    if not value > 0:
        raise UsageError(f"{argument} must be positive, got {value}")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments every model-based subcommand shares."""
    parser.add_argument("--model", required=True, help="local diffusers Stable Diffusion directory")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--negative-prompt", default=DEFAULT_NEGATIVE_PROMPT, help="default: the paper's")
    parser.add_argument("--nfsd-threshold", type=int, default=NFSD_THRESHOLD, help="NFSD uses e_u alone below this t")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="network precision")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def add_generate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("generate", help="optimise an image on a latent canvas",
                                   description="Optimise a latent canvas with score distillation. Several "
                                   "--rule values run a same-seed comparison and save the images side by side.")
    add_model_arguments(parser)
    parser.add_argument("--rule", nargs="+", default=["nfsd"], help=f"one or more of {', '.join(RULES)}")
    parser.add_argument("--width", type=int, default=512, help="pixels (a multiple of the VAE factor)")
    parser.add_argument("--height", type=int, default=512, help="pixels (a multiple of the VAE factor)")
    parser.add_argument("--batch", type=int, default=1, help="images per rule")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--lr", type=float, default=OptimizerSettings.lr, help="AdamW learning rate")
    parser.add_argument("--scale", type=float, default=None, help="guidance scale (default: each rule's own)")
    parser.add_argument("--t-min", type=float, default=TimestepSchedule.t_min, help="fraction of T")
    parser.add_argument("--t-max", type=float, default=TimestepSchedule.t_max, help="fraction of T")
    parser.add_argument("--t-schedule", choices=SCHEDULE_KINDS, default="uniform")
    parser.add_argument("--weighting", choices=WEIGHTINGS, default=DEFAULT_WEIGHTING)
    parser.add_argument("--grad-clip", type=float, default=None, help="clamp the gradient to +-this")
    parser.add_argument("--output", default="outputs/generate", help="directory for PNGs and run.json")
    parser.add_argument("--preview-every", type=int, default=0, help="write a fast preview PNG every N steps")
    parser.add_argument("--checkpoint-dir", default=None, help="save state here and resume from it")
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--source-image", default=None,
                        help="start from this image (resized to --width x --height); the edit rules edit it")
    parser.add_argument("--source-prompt", default=None, help="what the source image shows (edit rules)")
    parser.add_argument("--mask", default=None,
                        help="an image of the source's aspect: only latents under its white (non-black) pixels change")
    parser.set_defaults(handler=run_generate, job=generate_job)


@dataclasses.dataclass(frozen=True)
class GenerateSetup:
    """What `generate` checked before loading anything."""

    rules: list[GuidanceRule]
    timesteps: TimestepSchedule
    settings: OptimizerSettings
    factor: int
    mask: torch.Tensor | None = None  # the latent mask of --mask


def check_generate(args: argparse.Namespace) -> GenerateSetup:
    rules = [checked("--rule", lambda name=name: make_rule(name, args.nfsd_threshold)) for name in args.rule]
    names = [rule.name for rule in rules]
    if len(set(names)) < len(names):
        raise UsageError(f"--rule: each rule may appear once, got {' '.join(args.rule)}")
    for argument in ("steps", "batch"):
        positive(f"--{argument}", getattr(args, argument))
    if args.grad_clip is not None:
        positive("--grad-clip", args.grad_clip)
    if args.preview_every < 0 or args.checkpoint_every < 0:
        raise UsageError("--preview-every and --checkpoint-every must be >= 0 (0 turns them off)")
    check_edit_arguments(args, rules)
    timesteps = checked("--t-min/--t-max", lambda: TimestepSchedule(args.t_min, args.t_max, args.t_schedule))
    settings = checked("--lr", lambda: OptimizerSettings(lr=args.lr))
    factor = check_model_and_size(args.model, {"--width": args.width, "--height": args.height})
    mask = None
    if args.mask is not None:
        pixels = checked("--mask", lambda: load_image(args.mask).mean(dim=1))  # grey levels, white 1
        mask = checked("--mask", lambda: latent_mask(pixels, args.height // factor, args.width // factor))
    if args.checkpoint_dir:  # refused before the model loads: a folder holding others' files, or read-only
        for name in names:
            checked("--checkpoint-dir", lambda name=name: claim_checkpoint_dir(rule_checkpoint_dir(args, name)))
    return GenerateSetup(rules, timesteps, settings, factor, mask)


def check_edit_arguments(args: argparse.Namespace, rules: list[GuidanceRule]) -> None:
    """Edit rules need --source-image and --source-prompt; --mask needs a source; files must exist."""
    editing = [rule.name for rule in rules if rule.edits]
    if editing and (args.source_image is None or args.source_prompt is None):
        raise UsageError(f"--rule {' '.join(editing)} edits an image: give --source-image (the image to edit) and "
                         "--source-prompt (what it shows)")
    if args.mask is not None and args.source_image is None:
        raise UsageError("--mask confines the change to a region of --source-image: give --source-image too")
    for argument, path in (("--source-image", args.source_image), ("--mask", args.mask)):
        if path is not None and not Path(path).is_file():
            raise UsageError(f"{argument}: {path!r} is not a file")


def encode_source(args: argparse.Namespace, codec, device) -> torch.Tensor | None:
    """The latents [1, C, h, w] of --source-image at --width x --height, or None without one."""
    if args.source_image is None:
        return None
    with torch.no_grad():
        return codec.encode(load_image(args.source_image, (args.width, args.height)).to(device))


def run_generate(args: argparse.Namespace) -> int:
    setup = check_generate(args)
    model, codec = load_diffusers(args.model, args.dtype, args.device)
    written = generate(args, setup, model, codec)
    print(f"wrote {args.output}/", ", ".join(written))
    return 0


def generate_job(args: argparse.Namespace) -> Task:
    """`generate` as a batch run: checked now; a worker loads the model once for all its runs."""
    setup = check_generate(args)
    return Task(os.path.normpath(args.output), args.steps * len(setup.rules),
                ModelSpec(load_diffusers, (args.model, args.dtype, args.device)), generate_in_batch, (args, setup),
                gpu=str(args.device).startswith("cuda"))


def generate_in_batch(loaded: tuple, report: Report, args: argparse.Namespace, setup: GenerateSetup) -> dict:
    """A batch's `generate` run on the worker's model: the rules' steps, one after another, are its progress."""
    names = [rule.name for rule in setup.rules]

    @contextmanager
    def progress(steps: int, name: str) -> Iterator[Callable[[StepRecord], None]]:
        yield lambda record: report(names.index(name) * steps + record.step + 1)

    return {"wrote": generate(args, setup, *loaded, progress=progress)}


def generate(args: argparse.Namespace, setup: GenerateSetup, model, codec, progress=None) -> list[str]:
    """Run every rule of a checked `generate` and write its images and run.json; returns the files'
    names. `progress(steps, rule)` is a context giving each rule's on_step hook (default: a tqdm bar)."""
    prompts = Prompts.from_text(model, args.prompt, args.negative_prompt, source_prompt=args.source_prompt)
    source = encode_source(args, codec, model.device)
    latent_rgb = fit_latent_to_rgb(codec) if args.preview_every else None
    output = Path(args.output)
    report: dict[str, Any] = {"settings": vars_for_json(args), "runs": {}}
    finals = []
    for rule in setup.rules:
        guidance = ScoreDistillation(model, prompts, rule, args.scale, setup.timesteps, args.weighting,
                                     args.grad_clip, args.seed, source_latents=source if rule.edits else None,
                                     mask=setup.mask)
        canvas, report["runs"][rule.name] = optimize_canvas(args, setup, guidance, latent_rgb, output,
                                                            progress or progress_bar, source)
        with torch.no_grad():
            finals.append(codec.decode(canvas.latents.detach()))
        save_grid(finals[-1].unsqueeze(0), output / f"{rule.name}.png")
        write_json(output / "run.json", report)
    names = [rule.name for rule in setup.rules]
    if len(names) > 1:
        save_grid(torch.stack(finals, dim=1), output / "comparison.png", column_labels=names)
    return [f"{n}.png" for n in names] + ["comparison.png"] * (len(names) > 1) + ["run.json"]


def optimize_canvas(
    args: argparse.Namespace,
    setup: GenerateSetup,
    guidance: ScoreDistillation,
    latent_rgb: LatentToRGB | None,
    output: Path,
    progress: Callable[[int, str], Any],
    source: torch.Tensor | None = None,
) -> tuple[LatentCanvas, dict[str, Any]]:
    """Run (or resume) one rule on a fresh canvas (random, or the `source` latents); returns the
    canvas and the rule's summary for run.json."""
    name, factor = guidance.rule.name, setup.factor
    if source is None:
        canvas = LatentCanvas.random(args.batch, guidance.model.latent_channels, args.height // factor,
                                     args.width // factor, seed=args.seed).to(guidance.model.device)
    else:
        canvas = LatentCanvas(source.expand(args.batch, -1, -1, -1)).to(guidance.model.device)

    def save_preview(step: int, representation: LatentCanvas) -> None:
        images = latent_rgb(representation.latents, upscale=factor)
        save_grid(images.unsqueeze(0), output / "previews" / f"{name}_{step:05d}.png")

    started = time.perf_counter()
    with progress(args.steps, name) as on_step:
        try:
            result = optimize(
                canvas, guidance, args.steps, setup.settings, on_step=on_step,
                on_preview=save_preview if latent_rgb is not None else None, preview_every=args.preview_every,
                checkpoint_dir=rule_checkpoint_dir(args, name), checkpoint_every=args.checkpoint_every,
                identity_extras=prompt_identity(args),
            )
        except CheckpointError as error:  # a checkpoint of other settings, or damaged
            raise UsageError(f"--checkpoint-dir: {error}") from error
        except NonFiniteParameters as error:  # settings that make the run diverge
            raise UsageError(str(error)) from error
    history = result.history
    return canvas, {
        "scale": guidance.scale,
        "steps_done": result.steps_done,
        "seconds_this_session": time.perf_counter() - started,
        "evaluations": sum(record.evaluations for record in history),
        "history": history_columns(history),
    }


def prompt_identity(args: argparse.Namespace) -> dict[str, Any]:
    """What beyond the guidance's settings decides a run: prompts, model, dtype (the source prompt
    only where given, so runs without one keep the identity they had before editing existed)."""
    extras = {"prompt": args.prompt, "negative_prompt": args.negative_prompt, "model": args.model, "dtype": args.dtype}
    if args.source_prompt is not None:
        extras["source_prompt"] = args.source_prompt
    return extras


def rule_checkpoint_dir(args: argparse.Namespace, rule: str) -> Path | None:
    """The checkpoint folder of one rule's run: a subfolder of --checkpoint-dir named after the rule."""
    return Path(args.checkpoint_dir) / rule if args.checkpoint_dir else None


class progress_bar:
    """A tqdm bar over a rule's steps; entering gives the `on_step` hook (resumed runs start further on)."""

    def __init__(self, steps: int, name: str):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=steps, desc=name, unit="step", dynamic_ncols=True)

    def __enter__(self) -> Callable[[StepRecord], None]:
        def on_step(record: StepRecord) -> None:
            self.bar.update(record.step + 1 - self.bar.n)
            self.bar.set_postfix(t=record.t[0], grad=f"{record.grad_norm:.3g}", refresh=False)

        return on_step

    def __exit__(self, *exc_info) -> None:
        self.bar.close()


def add_decompose(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("decompose", help="save the score decomposition of an image",
                                   description="Encode an image and save delta_C, delta_D, the noise residual "
                                   "(e_u - eps) and delta_N at several timesteps (NFSD paper, figures 2 to 4).")
    add_model_arguments(parser)
    parser.add_argument("--image", required=True, help="image file to encode")
    parser.add_argument("--t", type=int, nargs="+", default=[100, 300, 500, 700, 900], help="DDPM timesteps")
    parser.add_argument("--width", type=int, default=None, help="resize to this many pixels (default: as is)")
    parser.add_argument("--height", type=int, default=None, help="resize to this many pixels (default: as is)")
    parser.add_argument("--render", choices=("vae", "linear"), default="vae",
                        help="show maps through the VAE decoder or the fitted linear latent->RGB map")
    parser.add_argument("--output", default="outputs/decompose", help="directory for the PNG and JSON")
    parser.set_defaults(handler=run_decompose)


def run_decompose(args: argparse.Namespace) -> int:
    if not Path(args.image).is_file():
        raise UsageError(f"--image: {args.image!r} is not a file")
    width, height = checked("--image", lambda: image_size(args.image))
    width, height = args.width or width, args.height or height
    factor = check_model_and_size(args.model, {"--width (or the image width)": width,
                                               "--height (or the image height)": height})
    model, codec = load_diffusers(args.model, args.dtype, args.device)
    for t in args.t:
        if not 0 <= t < model.schedule.num_timesteps:
            raise UsageError(f"--t {t} is outside the model's timesteps 0..{model.schedule.num_timesteps - 1}")

    prompts = Prompts.from_text(model, args.prompt, args.negative_prompt)
    latents = codec.encode(load_image(args.image, (width, height)).to(model.device))
    decomposition = decompose_score(model, prompts, latents, args.t, seed=args.seed,
                                    nfsd_threshold=args.nfsd_threshold)
    render = codec.decode if args.render == "vae" else partial(fit_latent_to_rgb(codec), upscale=factor)
    images = decomposition_images(decomposition, render)
    rows = torch.stack([images[name][:, 0] for name in COMPONENTS])
    output = Path(args.output)
    save_grid(rows, output / "decomposition.png", column_labels=[f"t={t}" for t in args.t], row_labels=COMPONENTS)
    norms = {name: [float(m.norm()) for m in decomposition.maps[name][:, 0]] for name in COMPONENTS}
    write_json(output / "decomposition.json", {"settings": vars_for_json(args), "t": args.t, "norms": norms,
                                               "rows": list(COMPONENTS)})
    print(f"wrote {output}/decomposition.png and decomposition.json")
    return 0


def vars_for_json(args: argparse.Namespace) -> dict[str, Any]:
    return {key: value for key, value in vars(args).items() if key not in ("handler", "job")}


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_ready(data), indent=1, allow_nan=False))


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [add_generate, add_decompose, add_demo, add_demo3d,
                                                                   add_batch]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m nfsd_core", description="Noise-Free Score Distillation "
                                     "and related rules on a local diffusers Stable Diffusion model.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def command_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Each subcommand's parser in `parser` (one that `build_parser` made), by name."""
    return next(action.choices for action in parser._actions if isinstance(action, argparse._SubParsersAction))


def parse_command(command: str, argv: Sequence[str]) -> argparse.Namespace:
    """`argv` parsed as `python -m nfsd_core COMMAND ARGV...` would parse it, but refused with a
    UsageError where argparse would print its usage and exit."""
    parser = build_parser()

    def refuse(message: str) -> None:
        raise UsageError(message)

    for each in (parser, command_parsers(parser)[command]):
        each.error = refuse
    return parser.parse_args([command, *argv])


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except UsageError as error:
        print(f"{parser.prog} {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; with --checkpoint-dir, the same command resumes where this run stopped", file=sys.stderr)
        return 130
