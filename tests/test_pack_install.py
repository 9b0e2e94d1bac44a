"""What ComfyUI-Manager installs, and the pack entry point, checked without ComfyUI."""

import importlib.util
import inspect
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parents[1]
TORCH_PACKAGES = {"torch", "torchvision", "torchaudio"}


def requirement_names(lines):
    return [re.split(r"[<>=!~;\[ ]", line.strip(), maxsplit=1)[0].lower() for line in lines
            if line.strip() and not line.strip().startswith("#")]


def test_requirements_never_touch_torch_and_match_pyproject():
    required = requirement_names((REPO / "requirements.txt").read_text().splitlines())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert required and not TORCH_PACKAGES & set(required)
    assert not TORCH_PACKAGES & set(requirement_names(project["dependencies"]))
    assert set(required) <= set(requirement_names(project["dependencies"]))


def test_no_install_hooks_or_compiled_extensions():
    assert not (REPO / "install.py").exists()  # ComfyUI-Manager needs requirements.txt alone
    sources = [path for folder in ("nodes", "nfsd_core") for path in (REPO / folder).rglob("*")
               if path.suffix in {".c", ".cc", ".cpp", ".cu", ".pyx"}]
    assert not sources


def test_entry_point_imports_without_comfyui():
    spec = importlib.util.spec_from_file_location("nfsd_pack_probe", REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert inspect.iscoroutinefunction(module.comfy_entrypoint)
    assert "nfsd_pack_probe.nodes" not in sys.modules  # the ComfyUI side loads only when ComfyUI asks
