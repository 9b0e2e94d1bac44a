"""What every node checks before its work: finite numbers, memory that fits, Cancel while it runs.

A graph is untrusted input. ComfyUI's own validation passes NaN (NaN < min is false) and knows
nothing of the memory a combination of inputs implies, so nodes call these first:
- `check_finite(cls, values)`: every FLOAT input of the node given in `values` must be finite;
- `check_memory(needed, what, fixes)`: an nfsd_core.budget estimate against the device's budget;
- `interrupt_progress(total, node_id)`: a progress callback for nfsd_core's long loops that
  updates ComfyUI's progress bar and raises on Cancel (hooks that only check for Cancel take
  `comfy.model_management.throw_exception_if_processing_interrupted` itself);
- `validation(check)`: a node's text check as `validate_inputs` returns it, so that a STRING
  widget is refused when the graph is queued (ComfyUI passes only widget values there: a linked
  input is None, and the node checks it again when it runs).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import comfy.model_management
import comfy.utils
import torch
from comfy_api.latest import io

from ...nfsd_core import (UNetShape, address_space_left, check_budget, largest_fitting, model_call_memory,
                          unet_activation_bytes)


def validation(check: Callable[[], object]) -> bool | str:
    """True if `check()` passes, else its ValueError's message: what a V3 `validate_inputs` returns."""
    try:
        check()
    except ValueError as error:
        return str(error)
    return True


def float_inputs(node_class) -> list[io.Float.Input]:
    """The FLOAT inputs of a V3 node class."""
    return [item for item in node_class.define_schema().inputs if isinstance(item, io.Float.Input)]


def check_finite(node_class, values: Mapping[str, Any]) -> None:
    """ValueError naming the node and the first FLOAT input whose value in `values` is NaN or infinite.

    Inputs missing from `values`, or linked ones in a prompt ([node, slot] lists), are skipped; the
    hostile-input tests set every FLOAT input of every node to NaN, so none can be left out unseen.
    """
    schema = node_class.define_schema()
    for item in float_inputs(node_class):
        value = values.get(item.id)
        if isinstance(value, (int, float)) and not math.isfinite(value):
            raise ValueError(f"{schema.display_name}: {item.id} is {value}, not a number it can use; give a finite "
                             f"value from {item.min:g} to {item.max:g}")


# ComfyUI's own margin over a model's estimated activations when it batches conditions (samplers.py).
MODEL_MEMORY_MARGIN = 1.5


def unet_shape(patcher) -> UNetShape | None:
    """The shape of a MODEL's UNet (ModelPatcher) when it is ComfyUI's Stable Diffusion UNet
    (SD 1.x, 2.x, SDXL and their fine-tunes: `UNetModel` with its `unet_config`), else None."""
    config = getattr(getattr(patcher.model, "model_config", None), "unet_config", {})
    needed = ("model_channels", "channel_mult", "num_res_blocks", "transformer_depth", "transformer_depth_output")
    if not all(name in config for name in needed) or config.get("use_temporal_resblock"):
        return None
    levels = len(config["channel_mult"])
    res_blocks = config["num_res_blocks"]
    res_blocks = (res_blocks,) * levels if isinstance(res_blocks, int) else tuple(res_blocks)
    return UNetShape(channels=tuple(config["model_channels"] * mult for mult in config["channel_mult"]),
                     res_blocks=res_blocks, transformer_depth=tuple(config["transformer_depth"]),
                     middle_depth=max(config.get("transformer_depth_middle") or 0, 0),
                     output_depth=tuple(config["transformer_depth_output"]))


def model_call_bytes(patcher, latent_shape) -> int:
    """Memory of one batched call of a MODEL (ModelPatcher) on latents of `latent_shape` [B, C, h, w]:
    its activations and the workspace its first call keeps (nfsd_core's `model_call_memory`)."""
    return model_call_memory(model_activation_bytes(patcher, latent_shape))


def model_activation_bytes(patcher, latent_shape) -> int:
    """The activations of one batched call of a MODEL (ModelPatcher) on latents of `latent_shape`:
    for ComfyUI's Stable Diffusion UNets, an estimate from the architecture and the dtype it
    computes in (nfsd_core's `unet_activation_bytes`, measured on SD 1.5, 2.1 and SDXL); for
    any other model ComfyUI's own estimate, with the margin its sampler keeps."""
    shape = unet_shape(patcher)
    if shape is None:
        return int(MODEL_MEMORY_MARGIN * patcher.model.memory_required(list(latent_shape)))
    dtype = patcher.model.manual_cast_dtype or patcher.model.get_dtype()
    rows, _, height, width = latent_shape
    return unet_activation_bytes(shape, rows, height, width, comfy.model_management.dtype_size(dtype))


def resident_bytes(device: torch.device, *patchers) -> int:
    """What a run on `device` needs beside its own work: on a GPU, whose budget is its total memory,
    the weights of the models it keeps loaded (ModelPatchers) and the memory ComfyUI reserves
    for everything else; nothing on a CPU, whose budget is the memory free now (the weights are
    already in it)."""
    if device.type in ("cpu", "mps"):
        return 0
    return sum(patcher.model_size() for patcher in patchers) + int(comfy.model_management.extra_reserved_memory())


def memory_budget(device: torch.device | None = None) -> int:
    """Bytes a node may plan to use on `device` (default: ComfyUI's): on a CPU the memory free now
    (running out of RAM takes the whole machine down), or less where the process's address-space
    limit (ulimit -v) leaves less; on a GPU its total memory (running out there is an error ComfyUI
    recovers from, after unloading models; the check refuses what can never fit)."""
    device = device or comfy.model_management.get_torch_device()
    if device.type not in ("cpu", "mps"):
        return int(comfy.model_management.get_total_memory(device))
    free = int(comfy.model_management.get_free_memory(device))
    limit = address_space_left()
    return free if limit is None else min(free, limit)


def check_memory(needed: int, what: str, fixes: Mapping[str, tuple[Callable[[int], int], int, int, int]],
                 device: torch.device | None = None) -> None:
    """Refuse `what` when its estimate `needed` exceeds the budget, naming for each input in `fixes`
    (name -> (estimate as a function of that input alone, lowest, highest, step)) the largest value that fits."""
    budget = memory_budget(device)
    if needed <= budget:
        return
    fitting = {name: largest_fitting(estimate, low, high, budget, step)
               for name, (estimate, low, high, step) in fixes.items()}
    check_budget(needed, budget, what, [f"{name} {value}" for name, value in fitting.items() if value is not None])


def interrupt_progress(total: int, node_id: str | None = None) -> Callable[[int, int], None]:
    """A progress callback for nfsd_core's long loops: ComfyUI's progress bar follows it, and
    Cancel stops the loop (the interrupt is raised from the callback)."""
    bar = comfy.utils.ProgressBar(total, node_id=node_id)

    def progress(done: int, of: int) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        bar.update_absolute(done, of)

    return progress

