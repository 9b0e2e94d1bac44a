"""Test environments for ComfyUI on a CPU-only machine may hold an import-only `torchvision` stand-in
(ComfyUI needs `import torchvision` to start; no torchvision build matches the CPU torch).
transformers takes that stand-in for the real package and then fails importing its transforms,
which breaks every diffusers model import. `hide_torchvision_stub` tells transformers the truth:
there is no torchvision. It does nothing where torchvision is real or absent. A new process (the
CLI run by a test) is started through `python_without_torchvision_stub()`, which hides the stand-in
from the import system there; processes started by others (Ray's workers) find the same hiding in
`stub_hiding_folder()` on their import path.
"""

import sys


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


def python_without_torchvision_stub() -> list[str]:
    """The start of a command line that runs `python -m MODULE ARGS...` as `[*this, MODULE, *ARGS]`,
    with the import-only stand-in hidden (`import torchvision` fails, so transformers sees none)."""
    if not torchvision_is_a_stub():
        return [sys.executable, "-m"]
    launcher = ("import runpy, sys; sys.modules['torchvision'] = None; module = sys.argv.pop(1); "
                "runpy.run_module(module, run_name='__main__', alter_sys=True)")
    return [sys.executable, "-c", launcher]


def stub_hiding_folder(directory) -> str | None:
    """Where only the stand-in is installed: a folder in `directory` holding a `sitecustomize`
    module that hides it from the import system of every Python started with the folder on its
    path, for processes this one does not start itself (Ray's workers take this process's path).
    None where torchvision is real or absent."""
    import os

    if not torchvision_is_a_stub():
        return None
    folder = os.path.join(directory, "hide-torchvision-stub")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "sitecustomize.py"), "w") as file:
        file.write("import sys\n\nsys.modules['torchvision'] = None  # hide the import-only stand-in\n")
    return folder
