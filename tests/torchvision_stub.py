"""Test environments for ComfyUI on a CPU-only machine may hold an import-only `torchvision` stand-in
(ComfyUI needs `import torchvision` to start; no torchvision build matches the CPU torch).
transformers takes that stand-in for the real package and then fails importing its transforms,
which breaks every diffusers model import. `hide_torchvision_stub` tells transformers the truth:
there is no torchvision. It does nothing where torchvision is real or absent, and cannot reach
new processes: a test that runs the CLI in a subprocess skips with `torchvision_is_a_stub()`.
"""


def torchvision_is_a_stub() -> bool:
    try:
        import torchvision
    except ImportError:
        return False
    return "stub" in str(getattr(torchvision, "__version__", ""))


def hide_torchvision_stub() -> None:
    """Make transformers, in this process, see no torchvision when only the stand-in is installed."""
    if not torchvision_is_a_stub():
        return
    import transformers.utils
    import transformers.utils.import_utils

    for module in (transformers.utils, transformers.utils.import_utils):
        module.is_torchvision_available = lambda: False
