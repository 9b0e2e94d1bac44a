"""NFSD NeRF Representation: NeRF settings -> a NeRF for NFSD Optimizer; and `NerfState`, the NeRF
as it travels on an NFSD_NERF socket.

The node turns its widgets into nfsd_core's `NerfSettings` (threestudio's ProlificDreamer stage 1
by default), with a JSON field for every other setting. `NerfState` holds the settings and, once
optimised, the NeRF's weights on the CPU; nodes downstream rebuild the NeRF from them to render
turntables and meshes. An RGB NeRF reaches the model through the VAE, a latent NeRF renders the
model's latents directly and is shown through the model's latent-to-RGB preview factors.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import comfy.model_management
import torch
from comfy_api.latest import io
from PIL import Image
from torch import Tensor

from ..nfsd_core import LatentToRGB
from ..nfsd_core.budget import nerf_training_bytes, turntable_bytes
from ..nfsd_core.nerf import NerfRepresentation, NerfSettings, Render, orbit_cameras, render_turntable
from ..nfsd_core.nerf.background import BACKGROUND_KINDS
from ..nfsd_core.nerf.settings import COLOUR_SPACES
from .autograd import autograd_enabled
from .codec import ComfyLatentCodec
from .limits import check_finite, check_memory, interrupt_progress
from .representation import NodeRepresentation
from .types import CATEGORY, Nerf

DEFAULTS = NerfSettings()
RENDERER_VIEWS = 8  # frames of the turntable that NFSD Renderer shows for a NeRF


def latent_to_rgb(latent_format) -> LatentToRGB | None:
    """ComfyUI's latent preview factors as a LatentToRGB (model-space latents -> RGB in [0, 1]), or None.

    ComfyUI maps a latent pixel to factors^T latent + bias in [-1, 1] and shows (x + 1) / 2.
    """
    if latent_format.latent_rgb_factors is None:
        return None
    factors = torch.tensor(latent_format.latent_rgb_factors, dtype=torch.float32)  # [C, 3]
    bias = latent_format.latent_rgb_factors_bias
    bias = torch.zeros(3) if bias is None else torch.tensor(bias, dtype=torch.float32)
    return LatentToRGB(matrix=0.5 * factors.T, bias=0.5 * (bias + 1.0))


def to_pil(image: Tensor) -> Image.Image:
    """A PIL image of an RGB image [H, W, 3] in [0, 1]."""
    return Image.fromarray((image.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy())


def merge_into(config: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Update the nested dict `config` with `overrides`, merging dicts key by key."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            merge_into(config[key], value)
        else:
            config[key] = value


def parse_advanced(text: str) -> dict[str, Any]:
    """The `advanced` input: "" or a JSON object of NerfSettings overrides."""
    if not text.strip():
        return {}
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"advanced must be a JSON object of NeRF settings, e.g. "
                         f'{{"volume": {{"log2_table_size": 16}}}}; it does not parse: {error}') from None
    if not isinstance(overrides, dict):
        raise ValueError(f"advanced must be a JSON object of NeRF settings, got {type(overrides).__name__}")
    return overrides


def nerf_settings(colour: str, render_size: int, high_res_size: int, high_res_at: float, guidance_size: int,
                  samples_per_ray: int, batch_size: int, background: str, elevation_min: float,
                  elevation_max: float, distance_min: float, distance_max: float, sparsity: float, opaque: float,
                  orientation: float, seed: int, advanced: str = "") -> NerfSettings:
    """NerfSettings from the node's widgets; `advanced` (JSON) overrides any setting last."""
    for name, low, high in (("elevation", elevation_min, elevation_max), ("distance", distance_min, distance_max)):
        if low > high:
            raise ValueError(f"{name}_min ({low:g}) is above {name}_max ({high:g}): swap them")
    config = DEFAULTS.to_config()
    two_sizes = high_res_size > 0 and high_res_size != render_size
    config.update(colour=colour, guidance_size=guidance_size, samples_per_ray=samples_per_ray,
                  batch_size=batch_size, seed=seed,
                  render_sizes=[render_size, high_res_size] if two_sizes else [render_size],
                  size_milestones=[high_res_at] if two_sizes else [])
    config["background"]["kind"] = background
    config["cameras"].update(elevation_range=[elevation_min, elevation_max],
                             distance_range=[distance_min, distance_max])
    regularizers = config["regularizers"]
    regularizers["sparsity"].update(start=sparsity, end=sparsity)
    regularizers["opaque"].update(end=opaque)  # keeps the default ramp: 0 until 40 % of the run
    regularizers["orientation"].update(start=orientation, end=orientation)
    merge_into(config, parse_advanced(advanced))
    try:
        return NerfSettings.from_config(config)
    except (TypeError, ValueError) as error:
        raise ValueError(f"NeRF settings: {error}") from None


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


@torch.no_grad()
def front_view_latent(nerf: NerfRepresentation, latent_format) -> Tensor:
    """LATENT samples [1, C, h, w] (VAE units) of the front evaluation view, as the model sees it."""
    settings = nerf.settings
    cameras = settings.cameras
    size = settings.render_sizes[-1]
    front = orbit_cameras(1, cameras.eval_elevation, cameras.eval_distance, cameras.eval_fovy)
    render = nerf.render(front, size, size)
    return latent_format.process_out(nerf.latents_for_guidance(render.colour).float()).cpu()


@dataclass(frozen=True, eq=False)  # compared by identity: it holds tensors
class NerfState(NodeRepresentation):
    """A NeRF: its settings, and after optimisation its `weights` (state dict, CPU), the map of its
    latent colours to RGB (latent NeRFs) and the LATENT of its front view (VAE units)."""

    settings: NerfSettings
    weights: dict[str, Tensor] | None = None
    latent_rgb: LatentToRGB | None = None
    front_latent: Tensor | None = None

    has_views = True
    checkpoint_by_default = True
    socket_type = "NFSD_NERF"
    size_input = "guidance_size"

    @property
    def pixels_per_latent(self) -> int:
        return self.settings.latent_downscale

    @property
    def needs_vae(self) -> bool:
        return self.settings.colour == "rgb"

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        settings = self.settings
        side = settings.guidance_size // settings.latent_downscale
        return (settings.batch_size, settings.latent_channels, side, side)

    def memory_needed(self, batch: int) -> int:
        return nerf_training_bytes(dataclasses.replace(self.settings, batch_size=batch))

    def build(self, latent_format, device: torch.device, vae=None) -> NerfRepresentation:
        settings = self.settings
        if latent_format.latent_channels != settings.latent_channels:
            raise ValueError(f"the MODEL works on {latent_format.latent_channels}-channel latents but NeRFs are made "
                             f"for {settings.latent_channels}; use an SD 1.x, 2.x or SDXL checkpoint")
        codec = None
        if self.needs_vae:
            codec = ComfyLatentCodec(vae, latent_format)
            if codec.downscale_factor != settings.latent_downscale:
                raise ValueError(f"the VAE shrinks images {codec.downscale_factor}x but the NeRF expects "
                                 f"{settings.latent_downscale}x; use the VAE of an SD 1.x, 2.x or SDXL checkpoint, "
                                 f"or set NFSD NeRF Representation's advanced to "
                                 f'{{"latent_downscale": {codec.downscale_factor}}} for this one')
        nerf = NerfRepresentation(settings, codec, latent_to_rgb(latent_format))
        nerf.attach(check_interrupt=comfy.model_management.throw_exception_if_processing_interrupted)
        if self.weights is not None:  # optimised before: go on from there
            nerf.load_state_dict(self.weights)
        return nerf.to(device)

    def with_result(self, trained: NerfRepresentation, latent_format) -> "NerfState":
        weights = {name: value.detach().cpu().clone() for name, value in trained.state_dict().items()}
        return NerfState(self.settings, weights, trained.latent_rgb, front_view_latent(trained, latent_format))

    def latent(self) -> dict[str, Tensor]:
        self._check_optimised()
        return {"samples": self.front_latent}

    def render(self, vae) -> Tensor:
        return self.turntable(RENDERER_VIEWS, self.settings.render_sizes[-1]).colour

    def preview(self, trained: NerfRepresentation, done: int, steps: int, previewer) -> Image.Image | None:
        """The evaluation view at the current render size, from a camera that circles once over the run
        (a latent NeRF's colours through its own latent-to-RGB map: no `previewer` is needed)."""
        if trained.latent_colour and trained.latent_rgb is None:
            return None
        settings = self.settings
        cameras = settings.cameras
        size = settings.render_size(max(done - 1, 0), steps)
        camera = orbit_cameras(1, cameras.eval_elevation, cameras.eval_distance, cameras.eval_fovy,
                               start_azimuth=360.0 * done / steps)
        with torch.no_grad():
            colour = trained.render(camera, size, size).colour
            return to_pil(trained.to_rgb(colour)[0])

    def restore(self, device: torch.device) -> NerfRepresentation:
        """The optimised NeRF on `device`, for rendering and meshing; its renders stop on Cancel."""
        self._check_optimised()
        nerf = NerfRepresentation(self.settings, latent_rgb=self.latent_rgb)
        nerf.load_state_dict(self.weights)
        nerf.attach(check_interrupt=comfy.model_management.throw_exception_if_processing_interrupted)
        return nerf.to(device)

    def turntable(self, views: int, size: int, elevation: float | None = None, distance: float | None = None,
                  normals: bool = False, node_id: str | None = None) -> Render:
        """`views` renders turning once around (see nfsd_core's render_turntable), on ComfyUI's device,
        refused when they cannot fit in memory; the progress bar follows the views, Cancel stops them."""
        settings = self.settings
        check_memory(turntable_bytes(settings, views, size, normals), f"{views} views of {size} px", {
            "views": (lambda n: turntable_bytes(settings, n, size, normals), 1, views, 1),
            "size": (lambda side: turntable_bytes(settings, views, side, normals), 8, size, 8),
        })
        with autograd_enabled():  # normals are density gradients
            nerf = self.restore(comfy.model_management.get_torch_device())
            return render_turntable(nerf, views, size, elevation, distance, normals=normals,
                                    progress=interrupt_progress(views, node_id))

    def _check_optimised(self) -> None:
        if self.weights is None:
            raise ValueError("this NeRF has not been optimised yet: connect it through NFSD Optimizer first")


def check_nerf(representation) -> NerfState:
    """`representation` if it is a NeRF, else a ValueError for a node's `nerf` input (its socket
    type refuses a canvas when the graph is validated; this catches what reaches it otherwise)."""
    if not isinstance(representation, NerfState):
        raise ValueError("nerf must come from NFSD NeRF Representation through NFSD Optimizer (a latent canvas has no "
                         "views: use NFSD Renderer for it)")
    return representation


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
                io.Int.Input("guidance_size", default=DEFAULTS.guidance_size, min=64, max=2048, step=8,
                             tooltip="Pixels the model sees: renders are resized to this square before the VAE "
                             "encodes them (latent NeRFs: to this / 8 latents). 512 for SD 1.x and 2.x-base, 768 for "
                             "SD 2.x-768, 1024 for SDXL. Every model call and VAE encode grows with its square: on a "
                             "CPU 128 to 256 is bearable."),
                io.Int.Input("samples_per_ray", default=DEFAULTS.samples_per_ray, min=4, max=1024,
                             tooltip="Points sampled along each ray; the render cost grows with it (threestudio: "
                             "64)."),
                io.Int.Input("batch_size", default=DEFAULTS.batch_size, min=1, max=64,
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
                               "degrees get the 'overhead' view prompt."),
                io.Float.Input("distance_min", default=cameras.distance_range[0], min=0.1, max=10.0, step=0.05,
                               tooltip="Nearest distance of the training cameras from the centre; the NeRF fills a "
                               "cube from -1 to 1."),
                io.Float.Input("distance_max", default=cameras.distance_range[1], min=0.1, max=10.0, step=0.05,
                               tooltip="Farthest distance of the training cameras from the centre."),
                io.Float.Input("sparsity", default=regularizers.sparsity.end, min=0.0, max=10000.0, step=0.1,
                               tooltip="Weight of the sparsity loss, which keeps empty space empty (threestudio: 10). "
                               "0 turns it off."),
                io.Float.Input("opaque", default=regularizers.opaque.end, min=0.0, max=100000.0, step=1.0,
                               tooltip="Weight of the opaque loss, which makes every pixel fully object or fully "
                               "background, from 40% of the run on (threestudio: 1000). 0 turns it off."),
                io.Float.Input("orientation", default=regularizers.orientation.end, min=0.0, max=100000.0, step=1.0,
                               tooltip="Weight of DreamFusion's orientation loss (normals face the camera). 0: off, "
                               "the default, since renders are unshaded. It costs a second derivative per sample."),
                io.Int.Input("seed", default=DEFAULTS.seed, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the NeRF's initial weights."),
                io.String.Input("advanced", default="", multiline=True, optional=True,
                                tooltip="JSON overrides of any other NeRF setting, applied last, e.g. "
                                '{"volume": {"log2_table_size": 16}, "cameras": {"fovy_range": [40, 70]}} '
                                "(see README, Text to NeRF). Empty: none."),
            ],
            outputs=[Nerf.Output(display_name="nerf", tooltip="The NeRF, for NFSD Optimizer.")],
        )

    @classmethod
    def execute(cls, colour, render_size, high_res_size, high_res_at, guidance_size, samples_per_ray, batch_size,
                background, elevation_min, elevation_max, distance_min, distance_max, sparsity, opaque, orientation,
                seed, advanced="") -> io.NodeOutput:
        check_finite(cls, {"high_res_at": high_res_at, "elevation_min": elevation_min, "elevation_max": elevation_max,
                           "distance_min": distance_min, "distance_max": distance_max, "sparsity": sparsity,
                           "opaque": opaque, "orientation": orientation})
        settings = nerf_settings(colour, render_size, high_res_size, high_res_at, guidance_size, samples_per_ray,
                                 batch_size, background, elevation_min, elevation_max, distance_min, distance_max,
                                 sparsity, opaque, orientation, seed, advanced)
        check_training_memory(settings)  # the settings checked their own bounds; now their sum
        return io.NodeOutput(NerfState(settings))
