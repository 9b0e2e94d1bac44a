"""`NerfState`: a NeRF as it travels on an NFSD_NERF socket.

It holds the NeRF's settings and, once optimised, its weights on the CPU; nodes downstream
rebuild the NeRF from them to render turntables and meshes. An RGB NeRF reaches the model through
the VAE; a latent NeRF renders the model's latents directly and is shown through the model's
latent-to-RGB preview factors.

Two settings depend on the model, which NFSD NeRF Representation does not know: the image size
the model sees (`guidance_size`) and the pixels per latent of its VAE (`latent_downscale`). Those
the user left to the model are named in `from_model`; NFSD Optimizer resolves them (`for_model`)
before anything else, so the run, its identity and everything after it see concrete values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import comfy.model_management
import torch
from PIL import Image
from torch import Tensor

from ...nfsd_core import LatentToRGB, nerf_training_bytes, to_pil, turntable_bytes
from ...nfsd_core.nerf import NerfRepresentation, NerfSettings, Render, orbit_cameras, render_turntable, training_views
from ..adapters.autograd import autograd_enabled
from ..adapters.codec import ComfyLatentCodec
from ..adapters.preview import latent_to_rgb
from ..guards.limits import check_memory, interrupt_progress
from .representation import NodeRepresentation

RENDERER_VIEWS = 8  # frames of the turntable that NFSD Renderer shows for a NeRF
MODEL_SETTINGS = ("guidance_size", "latent_downscale")  # the NerfSettings a NeRF may leave to the model


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
    latent colours to RGB (latent NeRFs) and the LATENT of its front view (VAE units). `from_model`
    names the settings (MODEL_SETTINGS) still to be taken from the model; until then they hold
    NerfSettings' defaults."""

    settings: NerfSettings
    weights: dict[str, Tensor] | None = None
    latent_rgb: LatentToRGB | None = None
    front_latent: Tensor | None = None
    from_model: frozenset[str] = frozenset()

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

    @property
    def camera_views(self) -> tuple[str, ...]:
        return tuple(training_views(self.settings.cameras))

    def memory_needed(self, batch: int) -> int:
        return nerf_training_bytes(dataclasses.replace(self.settings, batch_size=batch))

    def for_model(self, model, vae) -> "NerfState":
        """The settings in `from_model` taken from the model: `guidance_size` its own image size,
        `latent_downscale` the pixels per latent of the VAE (RGB NeRFs, which the VAE encodes) or of
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
            raise ValueError(f"NeRF settings with the model's {taken}: {error}") from None
        return dataclasses.replace(self, settings=settings, from_model=frozenset())

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
            return to_pil(trained.to_rgb(colour)[0].movedim(-1, 0))

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
