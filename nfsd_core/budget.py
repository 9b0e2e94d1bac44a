"""Memory estimates of the work that settings imply, made before anything is allocated.

Each estimate is a pure function of sizes, counts and architectures; the caller compares it with
what the device has (`check_budget`) and, past it, refuses with the value of the offending input
that would fit (`largest_fitting`). The constants are measurements of this package's code and of
ComfyUI's Stable Diffusion classes (torch 2.13 on a CPU; bytes autograd keeps, counted with
saved-tensor hooks, and resident memory): `benchmarks/real_size.py` checks every estimate against
what a real-size step takes, tests/test_budget.py and tests/test_comfyui_memory.py at small sizes.

An optimisation step (`StepMemory`) holds the representation's state all along; the render's and
the encoder's graphs while the denoiser runs; then backward, through the encoder (its blocks
recomputed one at a time), then through the render (one part recomputed at a time). Its peak is
the largest of those moments.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
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

# Bytes autograd keeps per queried sample of a training render (the hash grid's corners, weights
# and features per level, the two MLPs' activations): threestudio's field keeps 2192 B.
QUERIED_SAMPLE_BASE = 16
QUERIED_SAMPLE_PER_LEVEL = 96
QUERIED_SAMPLE_PER_FEATURE = 4  # per level and feature
QUERIED_SAMPLE_PER_HIDDEN = 8  # per hidden unit and layer (both MLPs)
# ... and per sample, queried or not: the compositing (weights, transmittance, accumulation).
COMPOSITED_SAMPLE_BYTES = 40
# With the render recomputed in backward (NerfRepresentation.recompute), what it keeps per sample
# (positions and the occupancy mask), and the backward's own gradients over a recomputed chunk's
# graph (besides a chunk's gradient of every parameter, before it is added to the last).
KEPT_SAMPLE_BYTES = 14
RECOMPUTE_GRADIENTS = 1.2
# A training render composites its rays in parts of at most this many queried samples
# (rendering.render_rays), so that backward recomputes at most that many at once however much of a
# chunk the occupancy grid lets through (all of it in the first steps, or for an object that fills
# the frame).
QUERIED_SAMPLES_PER_PART = SAMPLE_CHUNK // 2
# Bytes per queried sample while an evaluation render's chunk is in flight (no graph kept), and what
# normals add (the density's gradient through the hash grid): fitted to the resident peak of renders
# with every sample queried, at the default volume and with 8 levels or 32 hidden units, within 6%
# (benchmarks/experiments/eval_sample_bytes.py). A mesh's density-only query is priced as a sample
# without normals: 1.1x to 1.2x what it takes. A sample the occupancy grid skips takes
# EVAL_SKIPPED_SAMPLE_BYTES (positions, masks, the zero-filled outputs).
EVAL_SAMPLE_BASE = 90
EVAL_SAMPLE_PER_FEATURE = 7  # per level and feature
EVAL_SAMPLE_PER_HIDDEN = 7  # per hidden unit and layer
NORMALS_PER_FEATURE = 100
NORMALS_PER_HIDDEN = 6
EVAL_SKIPPED_SAMPLE_BYTES = 140
# Copies of each parameter while training: the weights, their gradient and AdamW's two moments.
TRAINING_COPIES = 4
# Activations of ComfyUI's Stable Diffusion UNet (openaimodel, PyTorch attention), in values per
# channel and pixel: a ResBlock holds about 2x its input and 2x its output channels, a transformer
# block 23x its channels (the feed-forward's GEGLU); the skip connections stay alive throughout.
UNET_RESBLOCK_IN = 2
UNET_RESBLOCK_OUT = 2
UNET_TRANSFORMER = 23
UNET_UPSAMPLE = 3
# What a model's first call allocates once and keeps for the rest of the process, beside its
# activations (the math libraries' kernel workspaces and caches): 20 MiB at the tests' small sizes
# (tests/comfyui_memory_child.py), 24 to 32 MiB in the first call of each real-size stage against
# 1 to 2 MiB in later ones (benchmarks/real_size.py, warm-ups 0 and 1). A check made before a run
# cannot know whether the process has paid it yet, so every call's estimate counts it.
MODEL_CALL_WORKSPACE = 32 * 2**20
# The backward of a VAE encoder block recomputed in backward: its activations and their gradients,
# in values per output channel and pixel (ResnetBlock, attention; Downsample).
VAE_BLOCK_BACKWARD = 8
VAE_DOWNSAMPLE_BACKWARD = 4
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


def queried_sample_bytes(volume) -> int:
    """Bytes autograd keeps for one queried sample of a training render (VolumeSettings, or a mesh
    texture's ColourFieldSettings: one surface point a pixel)."""
    per_level = QUERIED_SAMPLE_PER_LEVEL + QUERIED_SAMPLE_PER_FEATURE * volume.features_per_level
    return (QUERIED_SAMPLE_BASE + volume.levels * per_level
            + QUERIED_SAMPLE_PER_HIDDEN * volume.hidden_width * max(volume.hidden_layers, 1))


def eval_sample_bytes(volume, normals: bool = False) -> int:
    """Bytes one queried sample of an evaluation render (no graph) takes while its chunk is in flight."""
    features = volume.levels * volume.features_per_level
    hidden = volume.hidden_width * max(volume.hidden_layers, 1)
    size = EVAL_SAMPLE_BASE + EVAL_SAMPLE_PER_FEATURE * features + EVAL_SAMPLE_PER_HIDDEN * hidden
    return size + (NORMALS_PER_FEATURE * features + NORMALS_PER_HIDDEN * hidden if normals else 0)


def chunk_rays(samples_per_ray: int) -> int:
    """Rays per render chunk, so that a chunk holds about SAMPLE_CHUNK samples."""
    return max(1, SAMPLE_CHUNK // samples_per_ray)


@dataclass(frozen=True)
class StepMemory:
    """Bytes of one optimisation step by what holds them (the score model's weights left out):
    - `state`: the representation's parameters, their gradients and AdamW's two moments;
    - `weights`: weights the step adds (the trainable copy of the VAE's encoder);
    - `render_kept`, `render_backward`: what the render keeps for backward, and the most its
      backward adds to that (one part recomputed, as many of its samples queried as it may hold);
    - `encode_kept`, `encode_backward`: what the VAE encode keeps for backward (its blocks'
      inputs), and the most its backward holds (the first blocks' inputs and one block recomputed);
    - `denoiser`: the model call's activations (no graph) and its first call's workspace;
    - `update`: the occupancy grid's refresh (every cell queried at once, no graph)."""

    state: int = 0
    weights: int = 0
    render_kept: int = 0
    render_backward: int = 0
    encode_kept: int = 0
    encode_backward: int = 0
    denoiser: int = 0
    update: int = 0

    @property
    def total(self) -> int:
        """The step's peak: the largest of its moments (see the module's doc)."""
        return self.state + self.weights + max(
            self.update,
            self.render_kept + self.encode_kept + self.denoiser,
            self.render_kept + self.encode_backward,
            self.render_kept + self.render_backward,
        )

    def parts(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}


def nerf_step_memory(settings, size: int) -> StepMemory:
    """The NeRF's own part of a training step at render size `size` (NerfSettings): its state,
    the render's graph (recomputed in backward, NerfRepresentation.recompute) and the occupancy
    grid's refresh. A part recomputed in backward is counted with as many queried samples as it
    may hold (QUERIED_SAMPLES_PER_PART, or the chunk's samples if fewer): how many it does hold
    depends on where the object is, which no estimate made before the run can know."""
    rays = settings.batch_size * size**2
    samples = rays * settings.samples_per_ray
    chunk = min(chunk_rays(settings.samples_per_ray), rays) * settings.samples_per_ray
    queried = min(chunk, QUERIED_SAMPLES_PER_PART)
    channels = max(settings.latent_channels, 3)
    per_pixel = (2 * 3 + 3 * channels + 2) * FLOAT_BYTES  # rays, colour, background, image; opacity, depth
    cells = settings.occupancy.resolution**3 if settings.occupancy.enabled else 0
    parameters = nerf_parameter_bytes(settings)
    part_graph = queried * queried_sample_bytes(settings.volume) + chunk * COMPOSITED_SAMPLE_BYTES
    return StepMemory(
        state=TRAINING_COPIES * parameters,
        render_kept=samples * KEPT_SAMPLE_BYTES + rays * per_pixel,
        render_backward=int(RECOMPUTE_GRADIENTS * part_graph) + parameters,
        update=cells * eval_sample_bytes(settings.volume),
    )


def nerf_training_bytes(settings) -> int:
    """A NeRF training step's own memory (NerfSettings), the score model and VAE left out: the
    largest over the render sizes of the schedule (see `nerf_step_memory`)."""
    return max(nerf_step_memory(settings, size).total for size in settings.render_sizes)


@dataclass(frozen=True)
class UNetShape:
    """What a Stable Diffusion UNet's activations depend on, in ComfyUI's `unet_config` terms:
    `channels` per level (model_channels x channel_mult), `res_blocks` per level,
    `transformer_depth` per input ResBlock, `middle_depth`, and `output_depth` per output block
    (listed as ComfyUI lists them: the last entry belongs to the first, deepest output block)."""

    channels: tuple[int, ...]
    res_blocks: tuple[int, ...]
    transformer_depth: tuple[int, ...]
    middle_depth: int
    output_depth: tuple[int, ...]


def model_call_memory(activations: int) -> int:
    """A model call's memory from its `activations`: they and the workspace a process's first call
    keeps (MODEL_CALL_WORKSPACE)."""
    return activations + MODEL_CALL_WORKSPACE


def unet_activation_bytes(unet: UNetShape, rows: int, height: int, width: int, dtype_bytes: int) -> int:
    """Peak activations of one UNet call on `rows` latents of height x width (no graph): the skip
    connections alive so far plus the block at work, the largest over the blocks in order. `rows`
    counts every row of the call: a guidance step evaluates its prompt, empty and negative prompt
    in one batched call (ComfyUI's score model joins them when they cover the same rows)."""
    pixels = [height * width / 4**level for level in range(len(unet.channels))]

    def block(level: int, inputs: float, outputs: int, depth: int, joined: float = 0.0) -> float:
        """A ResBlock (on `joined` channels, the previous output and a skip concatenated, if any)
        and its transformer blocks."""
        work = joined + UNET_RESBLOCK_IN * inputs + UNET_RESBLOCK_OUT * outputs
        if depth:
            work = max(work, (1 + UNET_TRANSFORMER) * outputs)
        return work * pixels[level]

    skips, peak, channels = [unet.channels[0] * pixels[0]], 0.0, unet.channels[0]
    depths = iter(unet.transformer_depth)
    for level, level_channels in enumerate(unet.channels):
        for _ in range(unet.res_blocks[level]):
            peak = max(peak, sum(skips) + block(level, channels, level_channels, next(depths)))
            channels = level_channels
            skips.append(channels * pixels[level])
        if level + 1 < len(unet.channels):
            skips.append(channels * pixels[level + 1])
    last = len(unet.channels) - 1
    peak = max(peak, sum(skips) + block(last, channels, channels, unet.middle_depth))
    depths = reversed(unet.output_depth)
    for level in reversed(range(len(unet.channels))):
        for _ in range(unet.res_blocks[level] + 1):
            joined = channels + skips.pop() / pixels[level]
            peak = max(peak, sum(skips) + block(level, joined, unet.channels[level], next(depths), joined))
            channels = unet.channels[level]
        if level:
            peak = max(peak, sum(skips) + UNET_UPSAMPLE * channels * pixels[level - 1])
    return int(peak * rows * dtype_bytes)


@dataclass(frozen=True)
class VaeShape:
    """What a Stable Diffusion VAE encoder's graph depends on: `channels` per level (ch x ch_mult),
    `res_blocks` per level, `latent_channels`."""

    channels: tuple[int, ...]
    res_blocks: int
    latent_channels: int = 4


def vae_encode_memory(vae: VaeShape, images: int, height: int, width: int, dtype_bytes: int) -> tuple[int, int]:
    """(kept, backward) bytes of encoding `images` of height x width pixels with a graph, the
    encoder's blocks recomputed in backward: kept are the blocks' inputs (and the few tensors of
    the layers between them), backward the most alive while backward recomputes a block."""
    inputs: list[tuple[float, float]] = []  # per block in order: (values kept, values at work in backward)
    pixels = float(height * width)
    kept = 3 * pixels  # the first convolution's input
    channels = vae.channels[0]
    for level, level_channels in enumerate(vae.channels):
        for _ in range(vae.res_blocks):
            inputs.append((channels * pixels, VAE_BLOCK_BACKWARD * level_channels * pixels))
            channels = level_channels
        if level + 1 < len(vae.channels):
            inputs.append((channels * pixels, VAE_DOWNSAMPLE_BACKWARD * channels * pixels))
            pixels /= 4
    inputs += [(channels * pixels, VAE_BLOCK_BACKWARD * channels * pixels)] * 3  # mid: block, attention, block
    tail = (3 * channels + 2 * vae.latent_channels) * pixels  # norm, activation, conv_out, quant_conv
    backward, before = 0.0, kept
    for block_kept, work in inputs:
        before += block_kept
        backward = max(backward, before + work)
    total_kept = before + tail
    scale = images * dtype_bytes
    return int(total_kept * scale), int(max(backward, total_kept) * scale)


def turntable_bytes(settings, frames: int, size: int, normals: bool = True, queried_share: float = 1.0) -> int:
    """Rendering `frames` views of size^2 pixels (NerfSettings): the parameters, one chunk in
    flight, and the frames kept (colour, opacity, depth and normals; the node's IMAGEs of them).

    `queried_share` is the largest share of a chunk's samples the field is queried at (the rest the
    occupancy grid skips): 1 bounds any NeRF; a trained one's is `nerf.turntable.queried_share`."""
    channels = max(settings.latent_channels, 3) if settings.colour == "latent" else 3
    samples_per_ray = settings.evaluation_samples_per_ray(size)
    chunk_samples = min(chunk_rays(samples_per_ray), size * size) * samples_per_ray
    per_sample = EVAL_SKIPPED_SAMPLE_BYTES + queried_share * eval_sample_bytes(settings.volume, normals)
    rendered = channels + 1 + 1 + 3  # values per pixel: colour, opacity, depth, normals
    # the frames and their concatenation while rendering; then the frames and the node's four RGB IMAGEs
    per_pixel = max(2 * rendered, rendered + 4 * 3)
    return int(nerf_parameter_bytes(settings) + chunk_samples * per_sample
               + frames * size * size * per_pixel * FLOAT_BYTES)


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


def texture_step_memory(settings, faces: int, vertices: int) -> StepMemory:
    """A mesh texture's training step (TextureSettings, a mesh of `faces` and `vertices`), the score
    model and VAE left out: the parameters with gradients and moments, the mesh and the cached camera
    bank all along, and every pixel of the batch's renders counted as surface (a colour-field query
    kept for backward, as a NeRF sample queried without recompute)."""
    pixels = settings.batch_size * settings.render_size**2
    per_pixel = queried_sample_bytes(settings.colour_field) + RENDER_PIXEL_BYTES
    bank = settings.camera_bank * settings.render_size**2 * BANK_PIXEL_BYTES
    return StepMemory(state=TRAINING_COPIES * texture_parameter_bytes(settings) + mesh_geometry_bytes(faces, vertices)
                      + bank, render_kept=pixels * per_pixel)


def texture_training_bytes(settings, faces: int, vertices: int) -> int:
    """A mesh texture training step's own memory (see `texture_step_memory`)."""
    return texture_step_memory(settings, faces, vertices).total


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
