"""Activation checkpointing of a network's blocks: keep their inputs, recompute the rest in backward.

Score distillation differentiates through the VAE's encoder (an RGB NeRF's render reaches the
model's latents only through it). At 512 px the activations that encoder keeps for backward are
gigabytes, most of them in its first, full-resolution blocks. With `recompute_in_backward`
each chosen block keeps only its input; its activations are computed again, one block at a time,
when backward reaches it (torch.utils.checkpoint, non-reentrant). Forward and backward run the
same operations in the same order, so values and gradients are unchanged, bit for bit; the
price is one more forward pass of those blocks.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def outermost(root: nn.Module, kinds: tuple[type, ...]) -> Iterator[nn.Module]:
    """The submodules of `root` that are instances of `kinds` and lie inside no other such one."""
    for child in root.children():
        if isinstance(child, kinds):
            yield child
        else:
            yield from outermost(child, kinds)


def recompute_in_backward(root: nn.Module, kinds: tuple[type, ...]) -> int:
    """Make every outermost submodule of `root` of one of `kinds` recompute its activations in
    backward instead of keeping them (only while autograd records; inference is unchanged).
    Changes `root` in place (use it on a module of your own; a block wrapped before stays as it
    is); returns how many blocks it wrapped."""
    wrapped = 0
    for block in outermost(root, kinds):
        if getattr(block.forward, "recomputes", False):
            continue
        forward = block.forward

        def recomputed(*args, _forward=forward, **kwargs):
            if torch.is_grad_enabled():
                return checkpoint(_forward, *args, use_reentrant=False, **kwargs)
            return _forward(*args, **kwargs)

        recomputed.recomputes = True
        block.forward = recomputed
        wrapped += 1
    return wrapped
