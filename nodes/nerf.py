"""NFSD NeRF Representation: NeRF settings -> a NeRF (sockets.nerf.NerfState) for NFSD Optimizer.

The node turns its widgets into nfsd_core's `NerfSettings` (threestudio's ProlificDreamer stage 1
by default), with a JSON field for every other setting, and refuses settings whose training step
cannot fit in memory before anything is built. The image size the model sees (`guidance_size` 0)
and the VAE's pixels per latent (`latent_downscale`, unless `advanced` sets it) are the model's
own: NFSD Optimizer, which knows the model, fills them in (see sockets.rendered).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from comfy_api.latest import io

from ..nfsd_core import nerf_training_bytes, parse_json, setting_bounds
from ..nfsd_core.nerf import BACKGROUND_KINDS, COLOUR_SPACES, NerfSettings
from .guards.limits import check_finite, check_memory, validation
from .schema import CATEGORY, SEED_CONTROL
from .sockets import Nerf
from .sockets.nerf import NerfState
from .sockets.rendered import MODEL_SETTINGS

DEFAULTS = NerfSettings()
GUIDANCE_SIZES, RAY_SAMPLES, BATCH_SIZES = (setting_bounds(NerfSettings, name)
                                            for name in ("guidance_size", "samples_per_ray", "batch_size"))
ADVANCED_EXAMPLE = '{"volume": {"log2_table_size": 16}}'
MAX_ADVANCED_CHARS = 65536  # every NeRF setting spelled out takes about 2,000
MAX_ADVANCED_DEPTH = 8  # NerfSettings nest 4 deep (regularizers.sparsity.start); lists one more
MODELS_OWN_SIZE = 0  # the guidance_size widget's value that means "the model's own image size"


def merge_into(config: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Update the nested dict `config` with `overrides`, merging dicts key by key."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            merge_into(config[key], value)
        else:
            config[key] = value


def parse_advanced(text: str, what: str = "NeRF settings", example: str = ADVANCED_EXAMPLE) -> dict[str, Any]:
    """The `advanced` input: "" or a JSON object of settings overrides (`what`, e.g. `example`), within
    bounds (size, depth)."""
    if not text.strip():
        return {}
    overrides = parse_json("advanced", text, MAX_ADVANCED_CHARS, MAX_ADVANCED_DEPTH, example)
    if not isinstance(overrides, dict):
        raise ValueError(f"advanced must be a JSON object of {what}, e.g. {example}, got {type(overrides).__name__}")
    return overrides


def nerf_settings(widgets: Mapping[str, Any]) -> NerfSettings:
    """NerfSettings from the node's widgets (input name -> value); `advanced` (JSON) overrides any
    setting last."""
    for name in ("elevation", "distance"):
        low, high = widgets[f"{name}_min"], widgets[f"{name}_max"]
        if low > high:
            raise ValueError(f"{name}_min ({low:g}) is above {name}_max ({high:g}): swap them")
    config = DEFAULTS.to_config()
    render_size, high_res_size = widgets["render_size"], widgets["high_res_size"]
    two_sizes = high_res_size > 0 and high_res_size != render_size
    passed_through = ("colour", "guidance_size", "samples_per_ray", "batch_size", "seed")
    config.update({name: widgets[name] for name in passed_through},
                  render_sizes=[render_size, high_res_size] if two_sizes else [render_size],
                  size_milestones=[widgets["high_res_at"]] if two_sizes else [])
    config["background"]["kind"] = widgets["background"]
    config["cameras"].update(elevation_range=[widgets["elevation_min"], widgets["elevation_max"]],
                             distance_range=[widgets["distance_min"], widgets["distance_max"]])
    regularizers = config["regularizers"]
    regularizers["sparsity"].update(start=widgets["sparsity"], end=widgets["sparsity"])
    regularizers["opaque"].update(end=widgets["opaque"])  # keeps the default ramp: 0 until 40 % of the run
    regularizers["orientation"].update(start=widgets["orientation"], end=widgets["orientation"])
    return settings_with_advanced(NerfSettings, config, widgets, parse_advanced(widgets.get("advanced", "")), "NeRF")


def settings_with_advanced(settings_class, config: dict[str, Any], widgets: Mapping[str, Any],
                           advanced: dict[str, Any], noun: str):
    """`settings_class` (NerfSettings, TextureSettings) from the widgets' `config`, the parsed `advanced`
    overrides merged in last; a `guidance_size` left to the model holds the default until NFSD
    Optimizer knows the model."""
    if widgets["guidance_size"] == MODELS_OWN_SIZE:
        config["guidance_size"] = settings_class().guidance_size
    merge_into(config, advanced)
    try:
        return settings_class.from_config(config)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{noun} settings: {error}") from None


def settings_from_model(widgets: Mapping[str, Any]) -> frozenset[str]:
    """The MODEL_SETTINGS the node leaves to the model: guidance_size at MODELS_OWN_SIZE, and each
    one `advanced` does not set."""
    advanced = parse_advanced(widgets.get("advanced", ""))
    left = {name for name in MODEL_SETTINGS if name not in advanced}
    return frozenset(left if widgets["guidance_size"] == MODELS_OWN_SIZE else left - {"guidance_size"})


def check_training_memory(settings: NerfSettings) -> None:
    """Refuse settings whose training step alone (render, parameters, occupancy grid) cannot fit,
    naming the render size, samples_per_ray and batch_size that would."""
    largest, volume = max(settings.render_sizes), settings.volume

    def with_values(**values) -> int:
        return nerf_training_bytes(dataclasses.replace(settings, **values))

    def at_size(size: int) -> int:
        return with_values(render_sizes=tuple(min(s, size) for s in settings.render_sizes))

    check_memory(nerf_training_bytes(settings), f"a NeRF training step ({settings.batch_size} x {largest} px renders "
                 f"of {settings.samples_per_ray} samples per ray, a hash grid of 2^{settings.volume.log2_table_size} "
                 "rows per level)", {
                     "samples_per_ray": (lambda n: with_values(samples_per_ray=n), 1, settings.samples_per_ray, 1),
                     "render_size/high_res_size": (at_size, 8, largest, 8),
                     "batch_size": (lambda n: with_values(batch_size=n), 1, settings.batch_size, 1),
                     'advanced {"volume": {"log2_table_size": N}} with N': (
                         lambda n: with_values(volume=dataclasses.replace(volume, log2_table_size=n)), 4,
                         volume.log2_table_size, 1),
                 })


class NeRFRepresentation(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        cameras, regularizers = DEFAULTS.cameras, DEFAULTS.regularizers
        return io.Schema(
            node_id="NFSD_NeRFRepresentation",
            display_name="NFSD NeRF Representation",
            category=f"{CATEGORY}/representations",
            description="A NeRF (hash grid + small MLPs, plain PyTorch) for NFSD Optimizer to optimise from text. "
                        "Defaults are threestudio's ProlificDreamer stage 1, for a GPU; on a CPU shrink the sizes.",
            inputs=[
                io.Combo.Input("colour", options=list(COLOUR_SPACES), default=DEFAULTS.colour,
                               tooltip="rgb: the NeRF renders pixels, which the VAE encodes (with gradients) for the "
                               "model, as DreamFusion does: wire the VAE into NFSD Optimizer. latent: it renders the "
                               "model's latents directly (Latent-NeRF): no VAE, several times faster (the best choice "
                               "on a CPU), coarser colours."),
                io.Int.Input("render_size", default=DEFAULTS.render_sizes[0], min=8, max=1024, step=8,
                             tooltip="Side of the square training renders, in pixels, until high_res_at. The cost of "
                             "a step grows with its square."),
                io.Int.Input("high_res_size", default=DEFAULTS.render_sizes[-1], min=0, max=1024, step=8,
                             tooltip="Render size from high_res_at of the run on (threestudio: 256); 0 keeps "
                             "render_size. Slow on a CPU: use 0 there."),
                io.Float.Input("high_res_at", default=DEFAULTS.size_milestones[0], min=0.01, max=0.99, step=0.01,
                               tooltip="Fraction of the steps after which high_res_size is rendered."),
                io.Int.Input("guidance_size", default=MODELS_OWN_SIZE, min=MODELS_OWN_SIZE, max=GUIDANCE_SIZES[1],
                             step=8,
                             tooltip="Pixels the model sees: renders are resized to this square before the VAE "
                             "encodes them (latent NeRFs: to this divided by the model's pixels per latent, 8 for SD "
                             "checkpoints, 4 for NFSD Demo Model). 0 (the default): the model's own image size, 512 "
                             "for SD 1.x and 2.x-base, 768 for SD 2.x-768 (v-prediction), 1024 for SDXL, 32 for NFSD "
                             f"Demo Model. Set from {GUIDANCE_SIZES[0]} up, it is used as set. Every model call and "
                             "VAE encode grows with its square: on a CPU 128 to 256 is bearable."),
                io.Int.Input("samples_per_ray", default=DEFAULTS.samples_per_ray, min=RAY_SAMPLES[0],
                             max=RAY_SAMPLES[1],
                             tooltip="Points sampled along each ray; the render cost grows with it (threestudio: "
                             "64)."),
                io.Int.Input("batch_size", default=DEFAULTS.batch_size, min=BATCH_SIZES[0], max=BATCH_SIZES[1],
                             tooltip="Cameras per step, spread around the object; each costs a render and model "
                             "evaluations (threestudio: 1)."),
                io.Combo.Input("background", options=list(BACKGROUND_KINDS), default=DEFAULTS.background.kind,
                               tooltip="environment: a small network learns the background from the view direction "
                               "(RGB NeRFs see random solid colours half of the time, so the object cannot hide in "
                               "it). random: a random solid colour per image, white in renders; RGB NeRFs only."),
                io.Float.Input("elevation_min", default=cameras.elevation_range[0], min=-90.0, max=90.0, step=1.0,
                               tooltip="Lowest elevation of the random training cameras, in degrees (0: level, 90: "
                               "straight above)."),
                io.Float.Input("elevation_max", default=cameras.elevation_range[1], min=-90.0, max=90.0, step=1.0,
                               tooltip="Highest elevation of the random training cameras, in degrees. Views above 60 "
                               "degrees get the 'overhead' view prompt: above 60, turn on NFSD View Prompts' "
                               "overhead_view."),
                io.Float.Input("distance_min", default=cameras.distance_range[0], min=0.1, max=10.0, step=0.05,
                               tooltip="Nearest distance of the training cameras from the centre; the NeRF fills a "
                               "cube from -1 to 1. With advanced {\"cameras\": {\"relative_distance\": true}} it is "
                               "the half-height each camera frames at the centre instead, so every fovy sees the "
                               "object at the same size (the demo workflow's 0.5)."),
                io.Float.Input("distance_max", default=cameras.distance_range[1], min=0.1, max=10.0, step=0.05,
                               tooltip="Farthest distance of the training cameras from the centre."),
                io.Float.Input("sparsity", default=regularizers.sparsity.end, min=0.0, max=10000.0, step=0.1,
                               tooltip="Weight of the sparsity loss, which keeps empty space empty (threestudio: 10). "
                               "0 turns it off. The guidance's pull grows with its scale: at SDS's 100, weights "
                               "100 / 7.5 times NFSD 7.5's (sparsity and opaque) keep the same balance."),
                io.Float.Input("opaque", default=regularizers.opaque.end, min=0.0, max=100000.0, step=1.0,
                               tooltip="Weight of the opaque loss, which makes every pixel fully object or fully "
                               "background, from 40% of the run on (threestudio: 1000). 0 turns it off."),
                io.Float.Input("orientation", default=regularizers.orientation.end, min=0.0, max=100000.0, step=1.0,
                               tooltip="Weight of DreamFusion's orientation loss (normals face the camera). 0: off, "
                               "the default, since renders are unshaded. It costs a second derivative per sample."),
                io.Int.Input("seed", default=DEFAULTS.seed, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip=f"Seed of the NeRF's initial weights. {SEED_CONTROL}"),
                io.String.Input("advanced", default="", multiline=True, optional=True,
                                tooltip="JSON overrides of any other NeRF setting, applied last, e.g. "
                                '{"volume": {"log2_table_size": 16}, "cameras": {"fovy_range": [40, 70]}} '
                                '(see README, Text to NeRF). {"latent_downscale": N} fixes the pixels per latent, '
                                "which otherwise come from the model's VAE. Empty: none."),
            ],
            outputs=[Nerf.Output(display_name="nerf", tooltip="The NeRF, for NFSD Optimizer.")],
        )

    @classmethod
    def validate_inputs(cls, advanced=None) -> bool | str:
        """Refuses `advanced` JSON that does not parse when the graph is queued (None: linked, checked when it runs)."""
        return advanced is None or validation(lambda: parse_advanced(advanced))

    @classmethod
    def execute(cls, **widgets) -> io.NodeOutput:
        check_finite(cls, widgets)
        settings = nerf_settings(widgets)
        check_training_memory(settings)  # the settings checked their own bounds; now their sum
        return io.NodeOutput(NerfState(settings, from_model=settings_from_model(widgets)))
