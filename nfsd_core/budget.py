"""Memory estimates of the work that settings imply, made before anything is allocated.

Each estimate is a pure function of sizes and counts; the caller compares it with what the device
has (`check_budget`) and, past it, refuses with the value of the offending input that would fit
(`largest_fitting`). The figures are upper bounds from measurements of this package's plain
PyTorch code on a CPU (torch 2.13, resident memory of a training render with backward, an
evaluation render, a mesh): a NeRF render is counted as if every sample were queried, which is
what happens before the occupancy grid has learned where the object is.
"""

from __future__ import annotations

import os
from typing import Callable

try:
    import resource
except ImportError:  # Windows
    resource = None

Progress = Callable[[int, int], None]
"""Called with (units done, units in all) after each unit of a long job; raising from it stops the job."""

FLOAT_BYTES = 4
GIB = 2**30

# Samples (rays x samples per ray) rendered at once; bounds an evaluation render's memory at any
# image size and makes a chunk last well under a second on a CPU, so Cancel is checked often.
SAMPLE_CHUNK = 2**17

# Bytes a sample holds in a training render until backward: a base, per hash level and feature,
# per hidden unit of the two MLPs (measured: 16 levels x 2 features, width 64: 3.9 kB).
TRAIN_SAMPLE_BASE = 400
TRAIN_SAMPLE_PER_LEVEL = 100
TRAIN_SAMPLE_PER_FEATURE = 28
TRAIN_SAMPLE_PER_HIDDEN = 16
# The same while an evaluation render is in flight (no graph kept; normals: 3.5x for their gradient).
EVAL_SAMPLE_BASE = 1300
EVAL_SAMPLE_PER_LEVEL = 20
EVAL_SAMPLE_PER_HIDDEN = 8
NORMALS_FACTOR = 4
# Copies of each parameter while training: the weights, their gradient and AdamW's two moments.
TRAINING_COPIES = 4
# A canvas latent's copies in a step: latents, gradient, AdamW's two moments, noise, x_t, the
# guidance gradient and the clean-up's temporaries.
CANVAS_COPIES = 10
# Bytes per marching-cubes grid vertex: float32 density, scikit-image's float64 copy, its masks.
MESH_BYTES_PER_VOXEL = 24


def gib(size: float) -> str:
    """`size` bytes as '1.5 GB' (GiB)."""
    return f"{size / GIB:.1f} GB"


def hash_grid_rows(levels: int, base_resolution: int, finest_resolution: int, log2_table_size: int) -> int:
    """Table rows of a hash grid over all its levels (a level holds min(N_l^3, 2^log2) rows)."""
    from .nerf.hashgrid import level_resolutions  # here: the nerf package itself imports this module

    table = 2**log2_table_size
    return sum(min(resolution**3, table) for resolution in level_resolutions(levels, base_resolution,
                                                                             finest_resolution))


def nerf_parameter_bytes(settings) -> int:
    """Bytes of a NeRF's parameters (NerfSettings): hash tables, the two MLPs, the background."""
    volume = settings.volume
    rows = hash_grid_rows(volume.levels, volume.base_resolution, volume.finest_resolution, volume.log2_table_size)
    features = volume.levels * volume.features_per_level
    width, layers = volume.hidden_width, volume.hidden_layers
    mlp = 2 * (features * width + max(layers - 1, 0) * width * width + width * max(settings.latent_channels, 3))
    environment = settings.background
    background = environment.hidden_width * (15 + environment.hidden_layers * environment.hidden_width)
    return (rows * volume.features_per_level + mlp + background) * FLOAT_BYTES


def train_sample_bytes(volume) -> int:
    """Bytes one sample of a training render holds until backward (VolumeSettings, or a mesh
    texture's ColourFieldSettings: one surface point a pixel)."""
    per_level = TRAIN_SAMPLE_PER_LEVEL + TRAIN_SAMPLE_PER_FEATURE * volume.features_per_level
    return TRAIN_SAMPLE_BASE + volume.levels * per_level + TRAIN_SAMPLE_PER_HIDDEN * volume.hidden_width * max(
        volume.hidden_layers, 1)


def eval_sample_bytes(volume, normals: bool = False) -> int:
    """Bytes one sample of an evaluation render (no graph) takes while its chunk is in flight."""
    size = EVAL_SAMPLE_BASE + EVAL_SAMPLE_PER_LEVEL * volume.levels * volume.features_per_level + (
        EVAL_SAMPLE_PER_HIDDEN * volume.hidden_width * max(volume.hidden_layers, 1))
    return size * (NORMALS_FACTOR if normals else 1)


def chunk_rays(samples_per_ray: int) -> int:
    """Rays per render chunk, so that a chunk holds about SAMPLE_CHUNK samples."""
    return max(1, SAMPLE_CHUNK // samples_per_ray)


def nerf_training_bytes(settings) -> int:
    """A NeRF training step's own memory (NerfSettings), the score model and VAE left out: the
    largest render with every sample queried, the parameters with their gradients and moments,
    and the occupancy grid, whose update queries every cell at once."""
    largest = max(settings.render_sizes)
    samples = settings.batch_size * largest**2 * settings.samples_per_ray
    cells = settings.occupancy.resolution**3 if settings.occupancy.enabled else 0
    return (samples * train_sample_bytes(settings.volume) + TRAINING_COPIES * nerf_parameter_bytes(settings)
            + cells * eval_sample_bytes(settings.volume))


def turntable_bytes(settings, frames: int, size: int, normals: bool = True) -> int:
    """Rendering `frames` views of size^2 pixels (NerfSettings): the parameters, one chunk in
    flight, and the frames kept (colour, opacity, depth and normals; the node's IMAGEs of them)."""
    channels = max(settings.latent_channels, 3) if settings.colour == "latent" else 3
    chunk_samples = min(chunk_rays(settings.samples_per_ray), size * size) * settings.samples_per_ray
    per_pixel = (channels + 1 + 1 + 3) + 4 * 3  # the render's channels, then four RGB IMAGEs
    return (nerf_parameter_bytes(settings) + chunk_samples * eval_sample_bytes(settings.volume, normals)
            + 2 * frames * size * size * per_pixel * FLOAT_BYTES)


def mesh_bytes(settings, resolution: int) -> int:
    """Marching cubes on a resolution^3 grid (NerfSettings): the parameters, the density grid with
    its float64 copy, one chunk of queries, and a surface of about 12 resolution^2 vertices."""
    chunk = chunk_rays(1) * eval_sample_bytes(settings.volume)
    surface = 12 * resolution**2 * (3 + 3 + 3) * FLOAT_BYTES * 4
    return nerf_parameter_bytes(settings) + resolution**3 * MESH_BYTES_PER_VOXEL + chunk + surface


# A mesh texture: bytes per mesh face and vertex held while it trains or renders (faces, an Embree
# BVH, normals, vertex data and their copies), per pixel of a render beyond the colour field's own
# (hits, rays, background, image and its gradient), per cached bank pixel (face, barycentrics,
# depth), and per texel of a bake (face, barycentrics, colours, the fill's nearest-texel indices).
MESH_FACE_BYTES = 200
MESH_VERTEX_BYTES = 100
RENDER_PIXEL_BYTES = 120
BANK_PIXEL_BYTES = 16
BAKE_TEXEL_BYTES = 96
# The torch rasteriser's candidate (pixel, triangle) pairs in flight (visibility.PAIR_BUDGET x ~100 bytes).
RASTER_BYTES = 2**20 * 100


def texture_parameter_bytes(settings) -> int:
    """Bytes of a mesh texture's parameters (TextureSettings): hash tables, the MLP, the background."""
    field = settings.colour_field
    rows = hash_grid_rows(field.levels, field.base_resolution, field.finest_resolution, field.log2_table_size)
    width, layers = field.hidden_width, field.hidden_layers
    features = field.levels * field.features_per_level
    mlp = features * width + max(layers - 1, 0) * width * width + width * settings.channels
    environment = settings.background
    background = environment.hidden_width * (15 + environment.hidden_layers * environment.hidden_width)
    return (rows * field.features_per_level + mlp + background) * FLOAT_BYTES


def mesh_geometry_bytes(faces: int, vertices: int) -> int:
    """A fixed mesh held for rendering: its arrays, normals, Embree's BVH, the rasteriser's chunk."""
    return faces * MESH_FACE_BYTES + vertices * MESH_VERTEX_BYTES + RASTER_BYTES


def texture_training_bytes(settings, faces: int, vertices: int) -> int:
    """A mesh texture's training step (TextureSettings, a mesh of `faces` and `vertices`), the score
    model and VAE left out: every pixel of the batch's renders counted as surface (a colour-field
    query kept for backward, as a NeRF sample), the parameters with gradients and moments, the mesh
    and the cached camera bank."""
    pixels = settings.batch_size * settings.render_size**2
    per_pixel = train_sample_bytes(settings.colour_field) + RENDER_PIXEL_BYTES
    bank = settings.camera_bank * settings.render_size**2 * BANK_PIXEL_BYTES
    return (pixels * per_pixel + TRAINING_COPIES * texture_parameter_bytes(settings)
            + mesh_geometry_bytes(faces, vertices) + bank)


def texture_turntable_bytes(settings, frames: int, size: int, faces: int, vertices: int) -> int:
    """Rendering `frames` views of size^2 pixels of a mesh texture: the parameters and mesh, one
    frame's queries in flight, and the frames kept (as `turntable_bytes`)."""
    per_pixel = (settings.channels + 1 + 1 + 3) + 4 * 3
    in_flight = min(SAMPLE_CHUNK, size * size) * eval_sample_bytes(settings.colour_field)
    return (texture_parameter_bytes(settings) + mesh_geometry_bytes(faces, vertices) + in_flight
            + size * size * RENDER_PIXEL_BYTES + 2 * frames * size * size * per_pixel * FLOAT_BYTES)


def bake_bytes(settings, size: int, faces: int, vertices: int) -> int:
    """Baking a mesh texture into a size^2 image: the parameters and mesh, the cut mesh (up to three
    vertices a face), the texels' work and one chunk of queries."""
    in_flight = SAMPLE_CHUNK * eval_sample_bytes(settings.colour_field)
    cut = 3 * faces * MESH_VERTEX_BYTES
    return (texture_parameter_bytes(settings) + mesh_geometry_bytes(faces, vertices) + cut + in_flight
            + size * size * BAKE_TEXEL_BYTES)


def canvas_bytes(batch: int, channels: int, height: int, width: int) -> int:
    """A latent canvas of [batch, channels, height, width] latents and its step's working copies."""
    return CANVAS_COPIES * batch * channels * height * width * FLOAT_BYTES


def largest_fitting(estimate: Callable[[int], int], low: int, high: int, budget: int, step: int = 1) -> int | None:
    """The largest value in [low, high] (a multiple of `step` above `low`) whose `estimate` fits
    `budget` (estimates grow with the value), or None when even `low` does not fit."""
    if estimate(low) > budget:
        return None
    lo, hi = 0, (high - low) // step  # in units of `step` above `low`; lo always fits
    while lo < hi:
        middle = (lo + hi + 1) // 2
        if estimate(low + middle * step) <= budget:
            lo = middle
        else:
            hi = middle - 1
    return low + lo * step


def address_space_left() -> int | None:
    """Bytes this process may still map under its address-space limit (`ulimit -v`,
    RLIMIT_AS), or None when it has none or the platform cannot tell (only Linux has /proc)."""
    if resource is None:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/statm") as statm:
            mapped = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None
    return max(soft - mapped, 0)


class OverBudget(ValueError):
    """Settings whose estimated memory exceeds what the device has."""


def check_budget(needed: int, budget: int, what: str, fixes: list[str]) -> None:
    """OverBudget naming `what`, both sizes and the `fixes` (e.g. "resolution 448") when `needed` > `budget`."""
    if needed <= budget:
        return
    advice = ("; " + ", or ".join(fixes) + " fits") if fixes else "; no setting of it fits"
    raise OverBudget(f"{what} needs about {gib(needed)} of memory, more than the {gib(budget)} available{advice}")
