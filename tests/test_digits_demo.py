"""`python -m nfsd_core demo --quick` end to end on the shipped prior, and the benchmark script."""

import json
import sys
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("diffusers")

from nfsd_core import cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_demo_quick_writes_grid_and_tables(tmp_path, capsys):
    assert cli.main(["demo", "--quick", "--output", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results["metrics"]) == ["DDIM 50 (reference)", "SDS 100", "NFSD 7.5"]
    assert results["methods"]["NFSD 7.5"]["evaluations_per_step"] > results["methods"]["SDS 100"][
        "evaluations_per_step"] == 2.0
    for group in ("fine", "coarse"):
        assert 0 <= results["metrics"]["NFSD 7.5"][group]["accuracy"] <= 1
        assert results["baseline"][group]["frechet"] > 0
    assert Image.open(tmp_path / "grid.png").height > 3 * 64  # three method rows of 64 px samples
    printed = capsys.readouterr()
    assert "| NFSD 7.5 |" in printed.out and "real digits (floor)" in (tmp_path / "results.md").read_text()
    assert "demo" in printed.err  # the progress bar


def test_demo_refuses_bad_steps(capsys):
    assert cli.main(["demo", "--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().err


def test_benchmark_script_runs_a_small_comparison(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import digits_benchmark
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert digits_benchmark.main(["--steps", "3", "--per-fine", "1", "--per-coarse", "2",
                                  "--output", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["metrics"]) == 6 and (tmp_path / "grid.png").is_file()
