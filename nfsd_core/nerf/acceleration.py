"""Which parts of nerfacc can run here, decided without ever starting a CUDA build.

nerfacc loads its compiled kernels lazily: the first call of a kernel imports
`nerfacc.cuda._backend`, which takes a prebuilt `nerfacc.csrc` if there is one, and otherwise,
when `nvcc` is on PATH, JIT-compiles the CUDA sources (minutes on a GPU machine; an
`OSError: CUDA_HOME ...` under a CPU build of torch). So:

- the batched (rays x samples) weight function is used only after a one-off probe has run it on
  CPU tensors with that backend module blocked. In nerfacc 0.5.3 from PyPI it is plain torch and
  passes; a nerfacc whose batched path calls a kernel fails the probe harmlessly, and the plain
  torch formula below is used instead;
- the occupancy-grid sampler and the packed functions are used only for CUDA tensors, and only
  when the extension loads without a build: a prebuilt `nerfacc.csrc`, a backend some other code
  already loaded, or the user's explicit `NFSD_NERFACC_JIT=1`, which lets nerfacc compile it.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
import types

import torch
from torch import Tensor

BACKEND_MODULE = "nerfacc.cuda._backend"
JIT_OPT_IN = "NFSD_NERFACC_JIT"


def weights_from_density(t_starts: Tensor, t_ends: Tensor, density: Tensor) -> Tensor:
    """Volume-rendering weights [R, S] of intervals [t_start, t_end) with constant `density` [R, S].

    w_i = T_i (1 - exp(-sigma_i delta_i)), T_i = exp(-sum_{j<i} sigma_j delta_j).
    """
    optical_depth = density * (t_ends - t_starts)
    before = torch.cumsum(optical_depth, dim=-1) - optical_depth
    return torch.exp(-before) * (1.0 - torch.exp(-optical_depth))


@functools.cache
def batched_nerfacc_available() -> bool:
    """True when nerfacc's batched `render_weight_from_density` runs as plain torch (probed once)."""
    if importlib.util.find_spec("nerfacc") is None:
        return False
    import nerfacc

    t_starts = torch.tensor([[0.0, 0.5, 1.0]])
    t_ends = torch.tensor([[0.5, 1.0, 2.0]])
    density = torch.tensor([[1.0, 2.0, 0.5]])
    saved = sys.modules.get(BACKEND_MODULE)
    sys.modules[BACKEND_MODULE] = types.ModuleType(BACKEND_MODULE)  # has no `_C`: a kernel call raises ImportError
    try:
        weights = nerfacc.render_weight_from_density(t_starts, t_ends, density)[0]
    except Exception:
        return False
    finally:
        if saved is None:
            del sys.modules[BACKEND_MODULE]
        else:
            sys.modules[BACKEND_MODULE] = saved
    return torch.allclose(weights, weights_from_density(t_starts, t_ends, density), atol=1e-6)


@functools.cache
def nerfacc_extension_available() -> bool:
    """True when nerfacc's CUDA kernels can be used here without compiling anything (see above)."""
    if not torch.cuda.is_available() or importlib.util.find_spec("nerfacc") is None:
        return False
    backend = sys.modules.get(BACKEND_MODULE)
    if backend is not None:
        return getattr(backend, "_C", None) is not None
    if importlib.util.find_spec("nerfacc.csrc") is None and os.environ.get(JIT_OPT_IN) != "1":
        return False
    try:
        from nerfacc.cuda._backend import _C
    except Exception:
        return False
    return _C is not None


def use_packed_rendering(device: torch.device) -> bool:
    """Occupancy-grid sampling and packed rendering (nerfacc kernels) for tensors on `device`?"""
    return device.type == "cuda" and nerfacc_extension_available()


def render_weights(t_starts: Tensor, t_ends: Tensor, density: Tensor) -> Tensor:
    """Batched weights [R, S]: through nerfacc when its batched path is plain torch, else directly."""
    if batched_nerfacc_available():
        import nerfacc

        return nerfacc.render_weight_from_density(t_starts, t_ends, density)[0]
    return weights_from_density(t_starts, t_ends, density)
