"""Volume rendering of rays through the implicit volume.

Two ways to place samples, one way to composite them:
- batched (any device): S stratified samples per ray between where the ray enters and leaves
  the box, tensors [R, S]; the field is queried only where the occupancy grid says "occupied";
- packed (CUDA tensors with nerfacc's extension, see `acceleration`): nerfacc's occupancy-grid
  marching with a step of sqrt(3) 2 radius / S, tensors [K] with ray indices.
Weights w_i = T_i (1 - exp(-sigma_i delta_i)) are accumulated into colour, opacity, depth and
normals with nerfacc's `accumulate_along_rays` (plain torch for both layouts).
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence, TypeVar

import nerfacc
import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ..budget import QUERIED_SAMPLES_PER_PART
from .acceleration import use_packed_rendering, weights_from_density
from .field import FieldSamples, ImplicitVolume
from .occupancy import OccupancyGrid
from .rays import ray_box_intersection, stratified_samples
from .shading import Light

# nerfacc's (and threestudio's) skipping thresholds for the packed path.
ALPHA_THRESHOLD = 0.01
EARLY_STOP_EPS = 1e-4

Outputs = TypeVar("Outputs")


@dataclass
class RayOutput:
    """Per ray, for R rays: `colour` [R, C] and `normal` [R, 3] are opacity-weighted (the
    background is not added), `opacity` [R, 1], `depth` [R, 1] (weighted distance),
    `orientation` [R, 1] the orientation penalty sum_i stopgrad(w_i) max(0, n_i . d)^2."""

    colour: Tensor
    opacity: Tensor
    depth: Tensor
    normal: Tensor | None = None
    orientation: Tensor | None = None


@dataclass
class Samples:
    """Intervals along rays and the points where the field is read.

    Batched: `t_starts`, `t_ends`, `t_points` [R, S]; `queried` [R, S] marks the samples whose
    field is read (the rest have zero density). Packed: the same as [K] with `ray_indices` [K].
    """

    t_starts: Tensor
    t_ends: Tensor
    t_points: Tensor
    queried: Tensor | None = None
    ray_indices: Tensor | None = None

    def queried_per_ray(self, n_rays: int) -> Tensor:
        """[R] how many samples of each ray are queried."""
        if self.ray_indices is None:
            return self.queried.sum(dim=1)
        return torch.bincount(self.ray_indices, minlength=n_rays)

    def rays(self, start: int, end: int) -> "Samples":
        """The samples of rays start to end - 1, those rays renumbered from 0 (packed samples are
        ordered by ray)."""
        if self.ray_indices is None:
            return Samples(*(values[start:end] for values in (self.t_starts, self.t_ends, self.t_points, self.queried)))
        bounds = torch.tensor([start, end], device=self.ray_indices.device)
        first, last = torch.searchsorted(self.ray_indices, bounds).tolist()
        return Samples(self.t_starts[first:last], self.t_ends[first:last], self.t_points[first:last],
                       ray_indices=self.ray_indices[first:last] - start)


def concatenate(parts: Sequence[Outputs]) -> Outputs:
    """One output dataclass from several (ray chunks, frames): each tensor field concatenated
    along its first dimension; fields that are None stay None."""
    def cat(name: str) -> Tensor | None:
        values = [getattr(part, name) for part in parts]
        return None if values[0] is None else torch.cat(values)

    return type(parts[0])(**{f.name: cat(f.name) for f in dataclasses.fields(parts[0])})


def render_step_size(radius: float, samples_per_ray: int) -> float:
    """The marching step that puts `samples_per_ray` samples on the box diagonal (threestudio)."""
    return math.sqrt(3.0) * 2.0 * radius / samples_per_ray


def batched_samples(
    origins: Tensor,
    directions: Tensor,
    radius: float,
    samples_per_ray: int,
    occupancy: OccupancyGrid | None,
    generator: torch.Generator | None,
) -> Samples:
    near, far = ray_box_intersection(origins, directions, radius)
    t_starts, t_ends, t_points = stratified_samples(near, far, samples_per_ray, generator)
    queried = (far > near).unsqueeze(-1).expand_as(t_points)
    if occupancy is not None:
        queried = queried & occupancy.occupied(origins.unsqueeze(1) + directions.unsqueeze(1) * t_points.unsqueeze(-1))
    return Samples(t_starts, t_ends, t_points, queried=queried)


def packed_samples(
    field: ImplicitVolume,
    origins: Tensor,
    directions: Tensor,
    radius: float,
    samples_per_ray: int,
    occupancy: OccupancyGrid,
    generator: torch.Generator | None,
) -> Samples:
    """nerfacc's occupancy-grid marching (CUDA extension), stratified from `generator` when given."""
    near, far = ray_box_intersection(origins, directions, radius)

    def sigma_fn(t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor) -> Tensor:
        middle = (t_starts + t_ends).unsqueeze(-1) / 2
        return field.density(origins[ray_indices] + directions[ray_indices] * middle)

    with torch.random.fork_rng(devices=[origins.device] if origins.is_cuda else []):
        if generator is not None:
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        ray_indices, t_starts, t_ends = occupancy.estimator.sampling(
            origins,
            directions,
            sigma_fn=sigma_fn,
            t_min=near,
            t_max=far,
            render_step_size=render_step_size(radius, samples_per_ray),
            alpha_thre=ALPHA_THRESHOLD,
            early_stop_eps=EARLY_STOP_EPS,
            stratified=generator is not None,
        )
    return Samples(t_starts, t_ends, (t_starts + t_ends) / 2, ray_indices=ray_indices.long())


def query_field(
    field: ImplicitVolume, samples: Samples, origins: Tensor, directions: Tensor, normals: bool, create_graph: bool
) -> FieldSamples:
    """The field at every sample, shaped like `samples.t_points` (zeros where not queried)."""
    if samples.ray_indices is not None:
        points = origins[samples.ray_indices] + directions[samples.ray_indices] * samples.t_points.unsqueeze(-1)
        return field(points, normals=normals, create_graph=create_graph)
    points = origins.unsqueeze(1) + directions.unsqueeze(1) * samples.t_points.unsqueeze(-1)  # [R, S, 3]
    mask = samples.queried
    inside = field(points[mask], normals=normals, create_graph=create_graph)

    def scatter(values: Tensor) -> Tensor:
        full = values.new_zeros(mask.shape + values.shape[1:])
        full[mask] = values
        return full

    return FieldSamples(
        scatter(inside.density), scatter(inside.colour), None if inside.normal is None else scatter(inside.normal)
    )


def place_samples(
    field: ImplicitVolume,
    origins: Tensor,
    directions: Tensor,
    samples_per_ray: int,
    occupancy: OccupancyGrid | None,
    generator: torch.Generator | None,
) -> Samples:
    """Where along R rays the field is read: packed (occupancy-grid marching, CUDA with nerfacc's
    extension) or batched; every random draw of a render happens here."""
    if occupancy is not None and use_packed_rendering(origins.device):
        return packed_samples(field, origins, directions, field.radius, samples_per_ray, occupancy, generator)
    return batched_samples(origins, directions, field.radius, samples_per_ray, occupancy, generator)


def composite(
    field: ImplicitVolume,
    samples: Samples,
    origins: Tensor,
    directions: Tensor,
    normals: bool,
    orientation: bool,
    light: Light | None = None,
) -> RayOutput:
    """Query the field at `samples` and composite it along the rays (deterministic: no draws).

    With a `light` every sample's colour is shaded by its normal before compositing; while autograd
    is on the normals keep their graph, so the shading's gradient reaches the density.
    """
    shaded = light is not None
    create_graph = orientation or (shaded and torch.is_grad_enabled())
    values = query_field(field, samples, origins, directions, normals or orientation or shaded, create_graph)
    colour = light.shade(values.colour, values.normal) if shaded else values.colour
    n_rays = origins.shape[0]
    if samples.ray_indices is None:
        weights = weights_from_density(samples.t_starts, samples.t_ends, values.density)
    else:
        weights = nerfacc.render_weight_from_density(
            samples.t_starts, samples.t_ends, values.density, ray_indices=samples.ray_indices, n_rays=n_rays
        )[0]

    def accumulate(weights: Tensor, values: Tensor | None) -> Tensor:
        return nerfacc.accumulate_along_rays(weights, values, ray_indices=samples.ray_indices, n_rays=n_rays)

    output = RayOutput(
        colour=accumulate(weights, colour),
        opacity=accumulate(weights, None),
        depth=accumulate(weights, samples.t_points.unsqueeze(-1)),
    )
    if values.normal is not None:
        output.normal = accumulate(weights, values.normal)
    if orientation:
        ray_directions = directions if samples.ray_indices is None else directions[samples.ray_indices]
        if samples.ray_indices is None:
            ray_directions = ray_directions.unsqueeze(1)
        facing_away = (values.normal * ray_directions).sum(-1).clamp_min(0.0).pow(2).unsqueeze(-1)
        output.orientation = accumulate(weights.detach(), facing_away)
    return output


def render_rays(
    field: ImplicitVolume,
    origins: Tensor,
    directions: Tensor,
    samples_per_ray: int,
    occupancy: OccupancyGrid | None = None,
    generator: torch.Generator | None = None,
    normals: bool = False,
    orientation: bool = False,
    recompute: bool = False,
    light: Light | None = None,
) -> RayOutput:
    """Render R rays with `origins`, unit `directions` [R, 3] through `field`.

    `generator` jitters the samples (training); None samples interval midpoints (evaluation).
    `normals` adds the opacity-weighted normal; `orientation` adds the differentiable
    orientation penalty (and implies normals with a graph); `light` shades the samples' colours
    (`composite`). With `recompute` (and autograd on)
    the field's activations are not kept for backward but computed again there (activation
    checkpointing): the graph kept is the samples and the outputs, a few bytes per sample
    instead of kilobytes per queried one. The samples are drawn before, so the recomputation
    reads the field where the forward did, and the gradients are the same, bit for bit.

    With autograd on, the rays are composited in parts of at most `QUERIED_SAMPLES_PER_PART`
    queried samples (`ray_parts`), recomputed or not alike: backward then recomputes one part at a
    time, so its peak does not depend on how much of the render the occupancy grid lets through.
    """
    samples = place_samples(field, origins, directions, samples_per_ray, occupancy, generator)
    if not torch.is_grad_enabled():
        return composite(field, samples, origins, directions, normals, orientation, light)
    parts = ray_parts(samples.queried_per_ray(origins.shape[0]), QUERIED_SAMPLES_PER_PART)
    outputs = []
    for start, end in parts:
        part = samples if len(parts) == 1 else samples.rays(start, end)  # the usual case: no slicing, no sync
        arguments = (field, part, origins[start:end], directions[start:end], normals, orientation, light)
        outputs.append(checkpoint(composite, *arguments, use_reentrant=False) if recompute else composite(*arguments))
    return outputs[0] if len(outputs) == 1 else concatenate(outputs)


def ray_parts(queried: Tensor, limit: int) -> list[tuple[int, int]]:
    """Consecutive ranges (start, end) of the rays whose queried sample counts are `queried` [R],
    each querying at most `limit` samples (a ray that alone queries more is a range of its own)."""
    ends = torch.cumsum(queried, dim=0).tolist()
    parts, start, done = [], 0, 0
    while start < len(ends):
        end = max(bisect.bisect_right(ends, done + limit, lo=start), start + 1)
        parts.append((start, end))
        start, done = end, ends[end - 1]
    return parts
