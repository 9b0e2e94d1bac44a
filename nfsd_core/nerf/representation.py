"""The NeRF as a `Representation` for `nfsd_core.optimize.optimize`.

Each step: refresh the occupancy grid, draw random cameras (and background colours, and sample
jitter) from the step's generator, render at the step's size, and hand the score model latents:
the codec's encoding of the render (RGB mode, with gradient) or the rendered latents themselves
(latent mode). Every row names its view (front/side/back/overhead) for view-dependent prompts.

The codec (VAE), the latent-to-RGB map and the interrupt check are tools, not state (see
`representations.rendered`, which also turns renders into the model's latents).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..budget import chunk_rays
from ..models.base import LatentCodec
from ..preview import LatentToRGB
from ..representations.base import GuidanceView
from ..representations.rendered import RenderedRepresentation
from .background import Background
from .cameras import Cameras, sample_cameras
from .field import ImplicitVolume
from .occupancy import OccupancyGrid
from .rays import camera_rays
from .regularizers import orientation_active, regularization
from .rendering import concatenate, render_rays, render_step_size
from .settings import NerfSettings

CONFIG_TYPE = "nerf"


@dataclass
class Render:
    """B rendered images: `colour` [B, H, W, C] over the background, `opacity` and `depth`
    [B, H, W, 1], `normal` [B, H, W, 3] (opacity-weighted) or None, and the per-pixel
    orientation penalty [B, H, W, 1] or None."""

    colour: Tensor
    opacity: Tensor
    depth: Tensor
    normal: Tensor | None = None
    orientation: Tensor | None = None


class NerfRepresentation(RenderedRepresentation):
    """A NeRF in [-radius, radius]^3, z up, optimised through renders from random cameras.

    `codec` is needed to guide in RGB mode (and decodes latent renders for previews when no
    `latent_rgb` is given); `latent_rgb` maps latent colours to RGB for previews and meshes;
    `check_interrupt` is called between the chunks of every render and stops it by raising
    (ComfyUI's Cancel), so a long step or render stops within a chunk.

    `recompute` (default True): a training render keeps no field activations for backward but
    computes each chunk's again there (`rendering.render_rays`), which changes no result and
    keeps the render's graph to a few bytes per sample.
    """

    noun = "NeRF"
    recompute = True

    def __init__(
        self,
        settings: NerfSettings = NerfSettings(),
        codec: LatentCodec | None = None,
        latent_rgb: LatentToRGB | None = None,
    ):
        super().__init__()
        self.settings = settings
        latent = settings.colour == "latent"
        channels = settings.latent_channels if latent else 3
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)
            self.field = ImplicitVolume(settings.volume, channels, latent, settings.radius)
            self.background = Background(settings.background, channels, latent)
        self.occupancy = OccupancyGrid(settings.occupancy, settings.radius) if settings.occupancy.enabled else None
        self.attach(codec, latent_rgb)

    @classmethod
    def from_config(
        cls, config: dict[str, Any], codec: LatentCodec | None = None, latent_rgb: LatentToRGB | None = None
    ) -> "NerfRepresentation":
        """The representation a checkpoint's `config()` describes (weights still to be loaded)."""
        if config.get("type") != CONFIG_TYPE:
            raise ValueError(f"not a NeRF configuration (type {config.get('type')!r})")
        return cls(NerfSettings.from_config(config["settings"]), codec, latent_rgb)

    @property
    def device(self) -> torch.device:
        return self.field.encoding.tables[0].device

    def config(self) -> dict[str, Any]:
        return {"type": CONFIG_TYPE, "settings": self.settings.to_config()}

    def parameter_groups(self, lr: float) -> list[dict[str, Any]]:
        """Hash grid, MLPs and background at their own multiples of `lr` (empty groups left out)."""
        scales = self.settings.learning_rates
        groups = [
            ("encoding", list(self.field.encoding.parameters()), scales.encoding),
            ("networks", list(self.field.density_net.parameters()) + list(self.field.colour_net.parameters()),
             scales.networks),
            ("background", list(self.background.parameters()), scales.background),
        ]
        return [{"params": params, "lr": lr * scale, "name": name} for name, params, scale in groups if params]

    def render(
        self,
        cameras: Cameras,
        height: int,
        width: int,
        generator: torch.Generator | None = None,
        normals: bool = False,
        orientation: bool = False,
        chunk: int | None = None,
        shaded: bool = True,
    ) -> Render:
        """Render `cameras` at height x width pixels.

        With a `generator` (training) the samples are jittered and backgrounds drawn from it;
        without one the render is deterministic (evaluation), with more samples per ray when it is
        larger than the training's (`NerfSettings.evaluation_samples_per_ray`). The rays are rendered
        `chunk` at a time (default: about `budget.SAMPLE_CHUNK` samples), with `check_interrupt` before
        each chunk; chunks draw the jitter in order, so the render does not depend on the chunk size.
        With `shading` "lambertian" in the settings the colours are lit, unless `shaded` is False.
        """
        origins, directions = camera_rays(cameras.to(self.device), height, width)
        flat_origins, flat_directions = origins.reshape(-1, 3), directions.reshape(-1, 3)
        samples_per_ray = (self.settings.samples_per_ray if generator is not None
                           else self.settings.evaluation_samples_per_ray(max(height, width)))
        chunk = chunk or chunk_rays(samples_per_ray)
        light = self.settings.shading_light(self.device) if shaded else None
        outputs = []
        for start in range(0, flat_origins.shape[0], chunk):
            if self.check_interrupt is not None:
                self.check_interrupt()
            outputs.append(render_rays(
                self.field,
                flat_origins[start : start + chunk],
                flat_directions[start : start + chunk],
                samples_per_ray,
                self.occupancy,
                generator,
                normals=normals,
                orientation=orientation,
                recompute=self.recompute,
                light=light,
            ))
        rays = concatenate(outputs)
        shape = origins.shape[:-1]

        def image(values: Tensor | None) -> Tensor | None:
            return None if values is None else values.reshape(shape + values.shape[-1:])

        opacity = image(rays.opacity)
        colour = image(rays.colour) + (1.0 - opacity) * self.background(directions, generator)
        return Render(colour, opacity, image(rays.depth), image(rays.normal), image(rays.orientation))

    def render_for_guidance(self, step: int, steps: int, generator: torch.Generator) -> GuidanceView:
        """The step's render; an interrupt (or any error) inside it leaves the occupancy grid as the
        step found it, so a state saved then is the state after the previous step and resumes exactly."""
        self.train()
        saved_grid = None
        if self.occupancy is not None and self.occupancy.updates_at(step):
            saved_grid = {name: value.clone() for name, value in self.occupancy.state_dict().items()}
        try:
            return self._render_for_guidance(step, steps, generator)
        except BaseException:
            if saved_grid is not None:
                self.occupancy.load_state_dict(saved_grid)
            raise

    def _render_for_guidance(self, step: int, steps: int, generator: torch.Generator) -> GuidanceView:
        settings = self.settings
        if self.occupancy is not None:
            step_size = render_step_size(settings.radius, settings.samples_per_ray)
            self.occupancy.update(step, self.field.density, step_size, generator)
        cameras = sample_cameras(settings.cameras, settings.batch_size, generator)
        size = settings.render_size(step, steps)
        orientation = orientation_active(settings.regularizers, step, steps)
        render = self.render(cameras, size, size, generator, orientation=orientation,
                             shaded=settings.shaded(step, steps))
        latents = self.latents_for_guidance(render.colour)
        penalty, stats = regularization(settings.regularizers, step, steps, render.opacity, render.orientation)
        stats.update(opacity=float(render.opacity.detach().mean()), render_size=float(size))
        return GuidanceView(latents, views=cameras.guidance_views(settings.cameras), regularization=penalty,
                            stats=stats)
