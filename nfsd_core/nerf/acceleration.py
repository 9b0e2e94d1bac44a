"""Volume-rendering weights, and whether nerfacc's CUDA kernels can run here without a build.

nerfacc loads its compiled kernels lazily: the first call of a kernel imports
`nerfacc.cuda._backend`, which takes a prebuilt `nerfacc.csrc` if there is one, and otherwise,
when `nvcc` is on PATH, JIT-compiles the CUDA sources (minutes on a GPU machine; an
`OSError: CUDA_HOME ...` under a CPU build of torch). So the batched (rays x samples) weights are
computed here in plain torch, and the occupancy-grid sampler and the packed functions are used
only for CUDA tensors, and only when the extension loads without a build: a prebuilt
`nerfacc.csrc`, a backend some other code already loaded, or the user's explicit
`NFSD_NERFACC_JIT=1`, which lets nerfacc compile it.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys

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

