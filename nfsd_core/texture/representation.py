"""A texture on a fixed mesh as a `Representation` for `nfsd_core.optimize.optimize`.

Each step: take random cameras (drawn from the step's generator, or from the camera bank), find
what each pixel sees without gradient (`visibility`, cached per bank camera), look the colour up
at those surface points with gradient, shade it, lay it over the background and hand the score
model latents, exactly as a NeRF render: the codec's encoding of the RGB image, or the latent
image itself. Every row names its view (front/side/back/overhead) for view-dependent prompts.
Only the colour field and the background are parameters: the mesh is fixed, so the state saved
in a checkpoint is small and a run's identity names the mesh by its digest.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..budget import SAMPLE_CHUNK
from ..models.base import LatentCodec
from ..nerf.background import Background
from ..nerf.cameras import Cameras, CameraSettings, make_cameras, sample_cameras
from ..nerf.rays import camera_rays
from ..nerf.representation import Render
from ..nerf.shading import Light, lambertian
from ..preview import LatentToRGB
from ..representations.base import GuidanceView
from ..representations.rendered import RenderedRepresentation
from .field import ColourField, bounding_cube, rgb_to_latents
from .settings import TextureSettings
from .surface import Surface
from .visibility import Hits, Visibility

CONFIG_TYPE = "mesh_texture"
CAMERA_CLEARANCE = 1.05  # the nearest camera stays this many mesh radii from the centre
RANDOM_LIGHT_SPREAD = 0.5  # a random light's direction: the camera's, plus this times a standard normal draw


def check_cameras(surface: Surface, cameras: CameraSettings) -> None:
    """Refuse camera distances that put a camera inside (or on) the mesh, naming the fix."""
    nearest = min(cameras.distance_range[0], cameras.eval_distance)
    if nearest < CAMERA_CLEARANCE * surface.radius:
        raise ValueError(f"the mesh reaches {surface.radius:.3g} from the centre but cameras come as close as "
                         f"{nearest:g}: lower fit_radius (the mesh's size for the cameras) or raise the camera "
                         "distances")


class TextureRepresentation(RenderedRepresentation):
    """A colour field on the fixed `surface` (renderer frame), seen from random cameras.

    `codec` is needed to guide in RGB mode; `latent_rgb` maps latent colours to RGB for previews
    and bakes (and turns the mesh's vertex colours into start latents); `check_interrupt` is
    called before each camera's visibility pass, each chunk of colour queries and its backward.
    """

    noun = "mesh texture"

    def __init__(self, surface: Surface, settings: TextureSettings = TextureSettings(),
                 codec: LatentCodec | None = None, latent_rgb: LatentToRGB | None = None):
        super().__init__()
        check_cameras(surface, settings.cameras)
        self.settings = settings
        self.surface = surface
        centre, half = bounding_cube(surface.vertices)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)
            self.field = ColourField(settings.colour_field, settings.channels, settings.latent_colour, centre, half)
            self.background = Background(settings.background, settings.channels, settings.latent_colour)
        self.register_buffer("vertices", surface.vertices, persistent=False)
        self.register_buffer("faces", surface.faces, persistent=False)
        self.register_buffer("normals", surface.normals, persistent=False)
        self.register_buffer("start", self._start_colours(surface.colours, latent_rgb), persistent=False)
        self.bank = None
        if settings.camera_bank:
            self.bank = sample_cameras(settings.cameras, settings.camera_bank,
                                       torch.Generator().manual_seed(settings.seed))
        self._bank_hits: dict[int, Hits] = {}
        self._visibility: Visibility | None = None
        self.attach(codec, latent_rgb)

    def _start_colours(self, colours: Tensor | None, latent_rgb: LatentToRGB | None) -> Tensor | None:
        if colours is None or not self.latent_colour:
            return colours
        if latent_rgb is None:
            raise ValueError("a latent texture starts from the mesh's vertex colours through a latent-to-RGB map: "
                             "give latent_rgb, or start without the colours")
        return rgb_to_latents(latent_rgb, colours)

    @classmethod
    def from_config(cls, config: dict[str, Any], surface: Surface, codec: LatentCodec | None = None,
                    latent_rgb: LatentToRGB | None = None) -> "TextureRepresentation":
        """The representation a checkpoint's `config()` describes, on `surface` (the same mesh)."""
        if config.get("type") != CONFIG_TYPE:
            raise ValueError(f"not a mesh texture configuration (type {config.get('type')!r})")
        if config["mesh"]["digest"] != surface.digest():
            raise ValueError("this configuration was made for another mesh (its digest differs)")
        return cls(surface, TextureSettings.from_config(config["settings"]), codec, latent_rgb)

    @property
    def device(self) -> torch.device:
        return self.vertices.device

    def config(self) -> dict[str, Any]:
        mesh = {"digest": self.surface.digest(), "vertices": len(self.surface.vertices),
                "faces": len(self.surface.faces)}
        return {"type": CONFIG_TYPE, "settings": self.settings.to_config(), "mesh": mesh}

    def parameter_groups(self, lr: float) -> list[dict[str, Any]]:
        """Hash grid, MLP and background at their own multiples of `lr` (the NeRF's scales)."""
        scales = self.settings.learning_rates
        groups = [("encoding", list(self.field.encoding.parameters()), scales.encoding),
                  ("networks", list(self.field.net.parameters()), scales.networks),
                  ("background", list(self.background.parameters()), scales.background)]
        return [{"params": params, "lr": lr * scale, "name": name} for name, params, scale in groups if params]

    def visibility(self, cameras: Cameras, height: int, width: int) -> Hits:
        """What each pixel of `cameras` sees (no gradient), on the representation's device."""
        if self._visibility is None or self._visibility.vertices.device != self.device:
            self._visibility = Visibility(self.vertices, self.faces, self.settings.visibility)
        return self._visibility(cameras, height, width, self.check_interrupt)

    def bank_hits(self, index: int) -> Hits:
        """The hits of bank camera `index`, cast on first use and kept."""
        if index not in self._bank_hits or self._bank_hits[index].face.device != self.device:
            size = self.settings.render_size
            self._bank_hits[index] = self.visibility(self.bank.select(index), size, size).compact()
        return self._bank_hits[index]

    def training_views(self, generator: torch.Generator) -> tuple[Cameras, Hits]:
        """The step's cameras and their hits: fresh random cameras, or cameras of the bank (one from
        each of B equal parts of it when azimuths are spread, as the bank is ordered by azimuth slice)."""
        settings = self.settings
        size = settings.render_size
        if self.bank is None:
            cameras = sample_cameras(settings.cameras, settings.batch_size, generator)
            return cameras, self.visibility(cameras, size, size)
        batch, bank = settings.batch_size, len(self.bank)
        draws = torch.rand(batch, generator=generator)
        slots = (torch.arange(batch) + draws) / batch if settings.cameras.uniform_azimuth else draws
        index = (slots * bank).long().clamp_max(bank - 1)
        cameras = make_cameras(*(getattr(self.bank, name)[index] for name in ("elevation", "azimuth", "distance",
                                                                              "fovy")))
        hits = [self.bank_hits(i) for i in index.tolist()]
        return cameras, Hits(*(torch.cat([getattr(h, name) for h in hits]) for name in ("face", "barycentric",
                                                                                         "depth")))

    def surface_colour(self, faces: Tensor, barycentric: Tensor, chunk: int = SAMPLE_CHUNK) -> Tensor:
        """Colours [P, C] at points given by `faces` [P] and barycentrics (u, v) [P, 2]."""
        def query(begin: int, end: int) -> Tensor:
            corners = self.faces[faces[begin:end]]
            weights = barycentric_weights(barycentric[begin:end])
            start = None if self.start is None else interpolate(self.start, corners, weights)
            return self.field(interpolate(self.vertices, corners, weights), start)

        return self._chunked(len(faces), query, chunk)

    def vertex_colour(self, chunk: int = SAMPLE_CHUNK) -> Tensor:
        """Colours [N, C] at the mesh's vertices."""
        return self._chunked(len(self.vertices), lambda begin, end: self.field(
            self.vertices[begin:end], None if self.start is None else self.start[begin:end]), chunk)

    def _chunked(self, count: int, query, chunk: int) -> Tensor:
        """`query(begin, end)` over [0, count) `chunk` points at a time, `check_interrupt` before each,
        and before each chunk's backward: a step's backward through a large render stops on Cancel too."""
        parts = []
        for begin in range(0, count, chunk):
            if self.check_interrupt is not None:
                self.check_interrupt()
            part = query(begin, min(begin + chunk, count))
            if part.requires_grad and self.check_interrupt is not None:
                part.register_hook(lambda gradient: self.check_interrupt())
            parts.append(part)
        return torch.cat(parts) if parts else torch.zeros(0, self.settings.channels, device=self.device)

    def lights(self, cameras: Cameras, generator: torch.Generator | None) -> Tensor:
        """Unit light directions [B, 3]: the fixed `light`, or with "random_light" while training one
        near each camera's direction, drawn from `generator`."""
        fixed = Light.from_direction(self.settings.light, self.settings.ambient).direction
        if self.settings.shading != "random_light" or generator is None:
            return fixed.expand(len(cameras), 3)
        towards_camera = F.normalize(cameras.c2w[:, :3, 3], dim=-1)
        jitter = torch.randn(len(cameras), 3, generator=generator)
        return F.normalize(towards_camera + RANDOM_LIGHT_SPREAD * jitter, dim=-1)

    def render(self, cameras: Cameras, height: int, width: int, generator: torch.Generator | None = None,
               normals: bool = False, chunk: int | None = None, hits: Hits | None = None) -> Render:
        """Render `cameras` at height x width pixels (`hits`: their visibility, when known).

        With a `generator` (training) backgrounds and random lights are drawn from it; without one
        the render is deterministic (evaluation). Opacity is 1 where the mesh is seen, depth the
        distance along the ray, normals the interpolated vertex normals (world frame, z up) turned
        towards the camera.
        """
        hits = (self.visibility(cameras, height, width) if hits is None else hits).to(self.device)
        cameras = cameras.to(self.device)
        _, directions = camera_rays(cameras, height, width)
        covered = hits.covered
        faces = hits.face[covered].long()
        colour = self.surface_colour(faces, hits.barycentric[covered], chunk or SAMPLE_CHUNK)
        normal = None
        if normals or self.settings.shading != "albedo":
            corners = self.faces[faces]
            normal = F.normalize(interpolate(self.normals, corners, barycentric_weights(hits.barycentric[covered])),
                                 dim=-1)
            facing_away = (normal * directions[covered]).sum(-1, keepdim=True) > 0
            normal = torch.where(facing_away, -normal, normal)
        background = self.background(directions, generator)
        if self.settings.shading != "albedo":
            light = self.lights(cameras, generator).to(self.device)
            image_of_pixel = torch.arange(len(cameras), device=self.device).view(-1, 1, 1).expand_as(covered)[covered]
            colour = lambertian(colour, normal, light[image_of_pixel], self.settings.ambient)
        surface = colour.new_zeros(covered.shape + (colour.shape[-1],))
        surface[covered] = colour
        image = torch.where(covered.unsqueeze(-1), surface, background)
        normal_image = None
        if normals:
            normal_image = normal.new_zeros(covered.shape + (3,))
            normal_image[covered] = normal
        return Render(image, covered.unsqueeze(-1).float(), hits.depth.unsqueeze(-1), normal_image)

    def render_for_guidance(self, step: int, steps: int, generator: torch.Generator) -> GuidanceView:
        """The step's render at `render_size`, for the score model."""
        self.train()
        size = self.settings.render_size
        cameras, hits = self.training_views(generator)
        render = self.render(cameras, size, size, generator, hits=hits)
        latents = self.latents_for_guidance(render.colour)
        surface = render.colour.detach()[render.opacity[..., 0] > 0]
        stats = {"coverage": float(render.opacity.mean()), "surface_std": float(surface.std()) if len(surface) > 1
                 else 0.0}
        return GuidanceView(latents, views=cameras.guidance_views(self.settings.cameras), stats=stats)


def barycentric_weights(barycentric: Tensor) -> Tensor:
    """Weights [P, 3] of a triangle's corners from barycentrics (u, v) [P, 2]."""
    u, v = barycentric.unbind(-1)
    return torch.stack([1.0 - u - v, u, v], dim=-1)


def interpolate(values: Tensor, corners: Tensor, weights: Tensor) -> Tensor:
    """Per-vertex `values` [N, D] at points inside triangles `corners` [P, 3] with `weights` [P, 3]."""
    return (values[corners] * weights.unsqueeze(-1)).sum(dim=1)
