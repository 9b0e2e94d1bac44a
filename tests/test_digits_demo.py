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
    metrics, floor = results["metrics"], results["baseline"]
    for group in ("fine", "coarse"):
        # The judge reads real digits and DDIM's samples as their prompts' digits, and puts DDIM
        # near the real floor; 60 distillation steps (--quick) are still far from the data.
        assert floor[group]["accuracy"] >= 0.9 and metrics["DDIM 50 (reference)"][group]["accuracy"] >= 0.9
        assert metrics["DDIM 50 (reference)"][group]["frechet"] < 1.5 * floor[group]["frechet"]
        assert metrics["NFSD 7.5"][group]["frechet"] > metrics["DDIM 50 (reference)"][group]["frechet"]
    assert Image.open(tmp_path / "grid.png").height > 3 * 64  # three method rows of 64 px samples
    printed = capsys.readouterr()
    assert "| NFSD 7.5 |" in printed.out and "real digits (floor)" in (tmp_path / "results.md").read_text()
    assert "demo" in printed.err  # the progress bar


def test_demo_refuses_bad_steps(capsys):
    with pytest.raises(SystemExit) as exit:  # argparse's usage error
        cli.main(["demo", "--steps", "0"])
    assert exit.value.code == 2
    assert "--steps" in capsys.readouterr().err


def test_benchmark_script_runs_a_small_comparison(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import digits_benchmark
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert digits_benchmark.main(["--steps", "3", "--per-fine", "1", "--per-coarse", "2",
                                  "--output", str(tmp_path), "--in-process"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["metrics"]) == 6 and (tmp_path / "grid.png").is_file()
