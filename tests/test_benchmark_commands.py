"""Every benchmark and experiment command starts: its imports resolve and it prints its usage. Most are
run at test size elsewhere; this catches the ones that are not when a module they import moves."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
COMMANDS = sorted(path for path in [*BENCHMARKS.glob("*.py"), *BENCHMARKS.glob("experiments/*.py")]
                  if 'if __name__ == "__main__":' in path.read_text())
# Run as `python SCRIPT --help` would, but with torchvision hidden: diffusers imports it when present, and
# some environments carry an import-only stand-in (no torchvision has a CPU build there).
RUN_AS_SCRIPT = """import os, runpy, sys
sys.modules["torchvision"] = None
script = sys.argv[1]
sys.path.insert(0, os.path.dirname(script))
sys.argv = [script, "--help"]
runpy.run_path(script, run_name="__main__")
"""


def test_every_benchmark_command_is_found():
    assert {path.stem for path in COMMANDS} >= {"shapes_benchmark", "real_size", "turntable_stripes", "size_nerf"}


@pytest.mark.parametrize("script", COMMANDS, ids=lambda path: path.stem)
def test_a_benchmark_command_starts_and_prints_its_usage(script: Path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCHMARKS.parent), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", RUN_AS_SCRIPT, str(script)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("usage:"), run.stdout[:500]
