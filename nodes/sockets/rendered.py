"""`RenderedState`: what the NeRF's and the mesh texture's socket values share.

Both are seen through cameras: after optimisation they hold their weights on the CPU, the map of
their latent colours to RGB and the LATENT of their front view (VAE units); nodes downstream
rebuild the representation from them to render turntables (and meshes). An RGB representation
reaches the model through the VAE; a latent one renders the model's latents directly and is shown
through the model's latent-to-RGB preview factors.

Two settings depend on the model, which the representation's node does not know: the image size
the model sees (`guidance_size`) and the pixels per latent of its VAE (`latent_downscale`). Those
the user left to the model are named in `from_model`; NFSD Optimizer resolves them (`for_model`)
before anything else, so the run, its identity and everything after it see concrete values.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import comfy.model_management
import torch
from PIL import Image
from torch import Tensor

from ...nfsd_core import LatentToRGB, RenderedRepresentation, StepMemory, to_pil
from ...nfsd_core.nerf import Render, orbit_cameras, render_turntable, training_views
from ..adapters.autograd import autograd_enabled
from ..adapters.codec import ComfyLatentCodec
from ..guards.limits import check_memory, interrupt_progress
from .representation import NodeRepresentation

RENDERER_VIEWS = 8  # frames of the turntable that NFSD Renderer shows
MODEL_SETTINGS = ("guidance_size", "latent_downscale")  # the settings a representation may leave to the model


@torch.no_grad()
def front_view_latent(trained: RenderedRepresentation, size: int, latent_format) -> Tensor:
    """LATENT samples [1, C, h, w] (VAE units) of the front evaluation view at `size` px, as the model sees it."""
    cameras = trained.settings.cameras
    front = orbit_cameras(1, cameras.eval_elevation, cameras.eval_distance, cameras.eval_fovy)
    render = trained.render(front, size, size)
    return latent_format.process_out(trained.latents_for_guidance(render.colour).float()).cpu()


def with_model_call(own: StepMemory, denoiser: int, encode: tuple[int, int, int]) -> StepMemory:
    """A step of the representation's own memory `own` with the model call's activations `denoiser`
    and the VAE encode's (weights, kept, backward) bytes (see NodeRepresentation.step_memory)."""
    weights, kept, backward = encode
    return dataclasses.replace(own, weights=weights, encode_kept=kept, encode_backward=backward, denoiser=denoiser)


@dataclass(frozen=True, eq=False, kw_only=True)  # compared by identity: it holds tensors
class RenderedState(NodeRepresentation):
    """A socket value of a `RenderedRepresentation`: a subclass adds its `settings` (and what else it
    holds); after optimisation it has its `weights` (state dict on the CPU), the map of its latent
    colours to RGB and the LATENT of its front view (VAE units). `from_model` names the settings
    (MODEL_SETTINGS) still to be taken from the model; until then they hold the settings' defaults."""

    weights: dict[str, Tensor] | None = None
    latent_rgb: LatentToRGB | None = None
    front_latent: Tensor | None = None
    from_model: frozenset[str] = frozenset()

    has_views = True
    checkpoint_by_default = True
    size_input = "guidance_size"
    noun = "representation"  # what the messages call it
    node_name = ""  # the node that makes it
    elevation_setting = ""  # the input that sets its training cameras' highest elevation

    @property
    @abc.abstractmethod
    def view_size(self) -> int:
        """Pixels per side of its final renders (front view, Renderer turntable)."""

    def preview_size(self, done: int, steps: int) -> int:
        """Pixels per side of the Optimizer's preview after `done` of `steps` steps."""
        return self.view_size

    @abc.abstractmethod
    def new_representation(self, latent_format) -> RenderedRepresentation:
        """A fresh nfsd_core representation (its initial weights), with `latent_format`'s latent-to-RGB
        map, or the optimised one's map when `latent_format` is None; no codec yet."""

    @abc.abstractmethod
    def turntable_estimate(self, elevation: float | None, distance: float | None) -> Callable[[int, int, bool], int]:
        """Memory of a turntable from `elevation` and `distance` (None: the evaluation camera's), as a
        function of its views, its size (size^2 pixels) and normals (an nfsd_core.budget estimate)."""

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

    @property
    def camera_views(self) -> tuple[str, ...]:
        return tuple(training_views(self.settings.cameras))

    @property
    def views_name_elevation(self) -> bool:
        return self.settings.cameras.view_elevation_step > 0

    def for_model(self, model, vae) -> "RenderedState":
        """The settings in `from_model` taken from the model: `guidance_size` its own image size,
        `latent_downscale` the pixels per latent of the VAE (RGB renders, which the VAE encodes) or of
        the model's latents."""
        if not self.from_model:
            return self
        values = {"guidance_size": model.native_image_size,
                  "latent_downscale": vae.spacial_compression_encode() if self.needs_vae and vae is not None
                  else model.pixels_per_latent}
        resolved = {name: values[name] for name in sorted(self.from_model)}
        try:
            settings = dataclasses.replace(self.settings, **resolved)
        except ValueError as error:
            taken = ", ".join(f"{name} {value}" for name, value in resolved.items())
            raise ValueError(f"{self.noun} settings with the model's {taken}: {error}") from None
        return dataclasses.replace(self, settings=settings, from_model=frozenset())

    def build(self, latent_format, device: torch.device, vae=None) -> RenderedRepresentation:
        settings = self.settings
        if latent_format.latent_channels != settings.latent_channels:
            raise ValueError(f"the MODEL works on {latent_format.latent_channels}-channel latents but this {self.noun} "
                             f"is made for {settings.latent_channels}; use an SD 1.x, 2.x or SDXL checkpoint")
        codec = None
        if self.needs_vae:
            codec = ComfyLatentCodec(vae, latent_format)
            if codec.downscale_factor != settings.latent_downscale:
                raise ValueError(f"the VAE shrinks images {codec.downscale_factor}x but the {self.noun} expects "
                                 f"{settings.latent_downscale}x; use the VAE of an SD 1.x, 2.x or SDXL checkpoint, "
                                 f"or set {self.node_name}'s advanced to "
                                 f'{{"latent_downscale": {codec.downscale_factor}}} for this one')
        trained = self.new_representation(latent_format)
        trained.attach(codec, check_interrupt=comfy.model_management.throw_exception_if_processing_interrupted)
        if self.weights is not None:  # optimised before: go on from there
            trained.load_state_dict(self.weights)
        return trained.to(device)

    def with_result(self, trained: RenderedRepresentation, latent_format) -> "RenderedState":
        weights = {name: value.detach().cpu().clone() for name, value in trained.state_dict().items()}
        return dataclasses.replace(self, weights=weights, latent_rgb=trained.latent_rgb,
                                   front_latent=front_view_latent(trained, self.view_size, latent_format))

    def latent(self) -> dict[str, Tensor]:
        self._check_optimised()
        return {"samples": self.front_latent}

    def render(self, vae) -> Tensor:
        return self.turntable(RENDERER_VIEWS, self.view_size).colour

    def check_render(self) -> None:
        self.check_turntable(RENDERER_VIEWS, self.view_size)

    def preview(self, trained: RenderedRepresentation, done: int, steps: int, previewer) -> Image.Image | None:
        """The evaluation view from a camera that circles once over the run (latent colours through
        the representation's own latent-to-RGB map: no `previewer` is needed)."""
        if trained.latent_colour and trained.latent_rgb is None:
            return None
        cameras = self.settings.cameras
        size = self.preview_size(done, steps)
        camera = orbit_cameras(1, cameras.eval_elevation, cameras.eval_distance, cameras.eval_fovy,
                               start_azimuth=360.0 * done / steps)
        with torch.no_grad():
            colour = trained.render(camera, size, size).colour
            return to_pil(trained.to_rgb(colour)[0].movedim(-1, 0))

    def restore(self, device: torch.device) -> RenderedRepresentation:
        """The optimised representation on `device`, for rendering; its renders stop on Cancel."""
        self._check_optimised()
        restored = self.new_representation(None)
        restored.load_state_dict(self.weights)
        restored.attach(check_interrupt=comfy.model_management.throw_exception_if_processing_interrupted)
        return restored.to(device)

    def turntable(self, views: int, size: int, elevation: float | None = None, distance: float | None = None,
                  normals: bool = False, node_id: str | None = None) -> Render:
        """`views` renders turning once around (see nfsd_core's render_turntable), on ComfyUI's device,
        refused when they cannot fit in memory; the progress bar follows the views, Cancel stops them."""
        self.check_turntable(views, size, normals, elevation, distance)
        with autograd_enabled():  # a NeRF's normals are density gradients
            restored = self.restore(comfy.model_management.get_torch_device())
            return render_turntable(restored, views, size, elevation, distance, normals=normals,
                                    progress=interrupt_progress(views, node_id))

    def check_turntable(self, views: int, size: int, normals: bool = False, elevation: float | None = None,
                        distance: float | None = None) -> None:
        """Refuse a turntable of `views` renders of `size` px that cannot fit in memory, naming what fits."""
        estimate = self.turntable_estimate(elevation, distance)
        check_memory(estimate(views, size, normals), f"{views} views of {size} px", {
            "views": (lambda n: estimate(n, size, normals), 1, views, 1),
            "size": (lambda side: estimate(views, side, normals), 8, size, 8),
        })

    def _check_optimised(self) -> None:
        if self.weights is None:
            raise ValueError(f"this {self.noun} has not been optimised yet: connect it through NFSD Optimizer first")
