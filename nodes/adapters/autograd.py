"""Autograd inside ComfyUI, which runs every node under `torch.inference_mode()`.

Weights loaded by ComfyUI nodes are inference tensors: autograd cannot save them for backward, and
they must not be changed for the other nodes sharing them. A node that differentiates therefore
(1) leaves inference mode only for its own work, with `autograd_enabled()`, which restores both
modes on exit, whether the work returns, fails or is interrupted; and (2) differentiates through
`trainable_copy(module)`, a private copy whose tensors are normal, leaving the shared module as it was.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Iterator, TypeVar

import torch

Module = TypeVar("Module", bound=torch.nn.Module)


@contextmanager
def autograd_enabled() -> Iterator[None]:
    """Leave inference mode and enable gradients for the block; the caller's modes return after it."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def trainable_copy(module: Module, leave_out: tuple[str, ...] = ()) -> Module:
    """A deep copy of `module` made outside inference mode (so its tensors are normal), frozen.

    Gradients flow through it to its inputs; its own parameters do not require grad. The
    submodules named in `leave_out` (attributes of `module` the copy will never call, e.g. a VAE's
    decoder when only its encoder is needed) are not copied: the copy has None in their place.
    """
    memo = {id(getattr(module, name)): None for name in leave_out if getattr(module, name, None) is not None}
    with torch.inference_mode(False):
        duplicate = copy.deepcopy(module, memo)
    return duplicate.requires_grad_(False)
