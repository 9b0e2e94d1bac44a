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

from ...nfsd_core import address_space_left, check_budget, largest_fitting


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


def model_call_bytes(patcher, latent_shape) -> int:
    """Memory of one batched call of a MODEL (ModelPatcher) on latents of `latent_shape` [B, C, h, w]:
    ComfyUI's own estimate, with the margin its sampler keeps."""
    return int(MODEL_MEMORY_MARGIN * patcher.model.memory_required(list(latent_shape)))


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

