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


def requirement_lines(text: str) -> list[str]:
    return [line.replace(" ", "") for line in (raw.split(" #")[0].strip() for raw in text.splitlines())
            if line and not line.startswith("#")]


def test_requirements_never_touch_torch_and_are_pyprojects_dependencies():
    """What ComfyUI-Manager installs (requirements.txt) is what the registry lists (pyproject.toml), word for word."""
    required = requirement_lines((REPO / "requirements.txt").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert required and not TORCH_PACKAGES & set(requirement_names(required))
    assert sorted(required) == sorted(dependency.replace(" ", "") for dependency in project["dependencies"])


def test_the_registry_entry_has_its_icon_and_publish_workflow():
    """[tool.comfy]'s Icon is the committed icon.png as GitHub serves it from main (a PNG within the registry's
    800 x 400 px), and .github/workflows/publish.yml publishes with the registry's own action."""
    from PIL import Image

    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    repository = config["project"]["urls"]["Repository"].removeprefix("https://github.com/")
    assert config["tool"]["comfy"]["Icon"] == f"https://raw.githubusercontent.com/{repository}/main/icon.png"
    with Image.open(REPO / "icon.png") as icon:
        assert icon.format == "PNG" and icon.width <= 800 and icon.height <= 400
    publish = (REPO / ".github" / "workflows" / "publish.yml").read_text()
    assert "uses: Comfy-Org/publish-node-action@v1" in publish
    assert "personal_access_token: ${{ secrets.REGISTRY_ACCESS_TOKEN }}" in publish
    assert '- "pyproject.toml"' in publish  # a new version is published when pyproject.toml changes on main


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
