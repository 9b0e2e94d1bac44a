"""`python -m nfsd_core generate / decompose` on a tiny local SD directory."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image

from diffusers_helpers import tiny_sd_dir  # noqa: F401
from nfsd_core import cli
from torchvision_stub import python_without_torchvision_stub
from nfsd_core.checkpoint import read_checkpoint
from nfsd_core.image_files import load_image

ROOT = Path(__file__).resolve().parents[1]


def generate_args(model, output, *extra):
    return ["generate", "--model", str(model), "--prompt", "a cat", "--width", "64", "--height", "48",
            "--output", str(output), *extra]


def test_generate_writes_pngs_and_step_statistics(tiny_sd_dir, tmp_path):
    command = [*python_without_torchvision_stub(), "nfsd_core", *generate_args(tiny_sd_dir, tmp_path), "--rule", "nfsd", "sds",
               "--batch", "2", "--steps", "3", "--preview-every", "2"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert "nfsd" in done.stderr and "3/3" in done.stderr  # the progress bars
    assert Image.open(tmp_path / "nfsd.png").size == (2 * 64 + 2, 48)  # the batch side by side
    assert Image.open(tmp_path / "comparison.png").size == (2 * 64 + 2, 14 + 2 * 48 + 2)
    assert (tmp_path / "previews" / "sds_00002.png").is_file()
    report = json.loads((tmp_path / "run.json").read_text())
    assert report["settings"]["rule"] == ["nfsd", "sds"] and report["settings"]["steps"] == 3
    assert report["runs"]["nfsd"]["scale"] == 7.5 and report["runs"]["sds"]["scale"] == 100
    for rule, history in ((rule, run["history"]) for rule, run in report["runs"].items()):
        assert history["step"] == [0, 1, 2]
        for t, grad_norm, evaluations in zip(history["t"], history["grad_norm"], history["evaluations"]):
            assert len(t) == 2 and grad_norm > 0
            # SDS: e_c and e_u per row; NFSD adds e_n for the rows with t >= 200.
            assert evaluations == 4 + (rule == "nfsd") * sum(step_t >= 200 for step_t in t)
    assert {"delta_C", "delta_D"} <= set(report["runs"]["nfsd"]["history"])


class interrupt_at_step_two:
    """Stands in for cli.progress_bar: its on_step hook interrupts the run like a Ctrl-C."""

    def __init__(self, steps, name):
        pass

    def __enter__(self):
        def on_step(record):
            if record.step == 1:
                raise KeyboardInterrupt

        return on_step

    def __exit__(self, *exc_info):
        pass


def test_interrupted_generate_resumes_to_the_uninterrupted_result(tiny_sd_dir, tmp_path, monkeypatch, capsys):
    assert cli.main(generate_args(tiny_sd_dir, tmp_path / "straight", "--steps", "4")) == 0
    resumable = generate_args(tiny_sd_dir, tmp_path / "resumed", "--steps", "4",
                              "--checkpoint-dir", str(tmp_path / "checkpoints"))
    with monkeypatch.context() as patch:
        patch.setattr(cli, "progress_bar", interrupt_at_step_two)
        assert cli.main(resumable) == 130
    assert "resumes" in capsys.readouterr().err
    assert read_checkpoint(tmp_path / "checkpoints" / "nfsd").step == 2
    assert cli.main(resumable) == 0
    torch.testing.assert_close(load_image(tmp_path / "resumed" / "nfsd.png"),
                               load_image(tmp_path / "straight" / "nfsd.png"))
    straight, resumed = (json.loads((tmp_path / run / "run.json").read_text())["runs"]["nfsd"]["history"]
                         for run in ("straight", "resumed"))
    assert resumed["t"] == straight["t"]
    assert resumed["loss"] == pytest.approx(straight["loss"], rel=1e-4)
    for other, difference in ((["--steps", "5"], "steps: saved 4, now 5"), (["--lr", "5.0"], "optimizer.lr: saved"),
                              (["--dtype", "bf16"], "extras.dtype: saved 'fp32', now 'bf16'")):
        assert cli.main(resumable + other) == 2
        error = capsys.readouterr().err
        assert "--checkpoint-dir" in error and "belongs to another run" in error and difference in error


def test_generate_refuses_a_checkpoint_folder_of_other_files_before_loading(configs_only, tmp_path, monkeypatch,
                                                                           capsys):
    monkeypatch.setattr(cli, "load_diffusers", lambda *a: pytest.fail("the model loaded before the check"))
    (tmp_path / "mine" / "nfsd").mkdir(parents=True)
    (tmp_path / "mine" / "nfsd" / "state.json").write_text("{}")
    assert cli.main(generate_args(configs_only / "model", tmp_path) + ["--checkpoint-dir", str(tmp_path / "mine")]) == 2
    assert "holds files NFSD did not write (state.json)" in capsys.readouterr().err
    assert (tmp_path / "mine" / "nfsd" / "state.json").read_text() == "{}"


@pytest.fixture(scope="module")
def configs_only(tiny_sd_dir, tmp_path_factory):
    """The tiny model's configs without any weights: a CLI that loaded weights here would crash."""
    root = tmp_path_factory.mktemp("configs")
    shutil.copytree(tiny_sd_dir, root / "model", ignore=shutil.ignore_patterns("*.safetensors"))
    shutil.copytree(tiny_sd_dir, root / "no-unet", ignore=shutil.ignore_patterns("*.safetensors", "unet"))
    Image.new("RGB", (60, 64)).save(root / "odd.png")
    Image.new("RGB", (64, 64), "white").save(root / "square.png")
    return root


BAD_GENERATE = [
    (["--width", "500"], "--width 500 must be a positive multiple of the model's VAE factor 8"),
    (["--height", "0"], "--height 0"),
    (["--rule", "nfsd", "vsd"], "--rule: unknown guidance rule 'vsd'"),
    (["--rule", "nfsd", "dds"], "--rule dds edits an image: give --source-image (the image to edit) and "
                                "--source-prompt"),
    (["--rule", "nfsd_edit", "--source-image", "x.png"], "--rule nfsd_edit edits an image"),
    (["--mask", "x.png"], "--mask confines the change to a region of --source-image: give --source-image too"),
    (["--rule", "dds", "--source-image", "missing.png", "--source-prompt", "a dog"],
     "--source-image: 'missing.png' is not a file"),
    (["--rule", "nfsd", "NFSD"], "--rule: each rule may appear once"),
    (["--t-min", "0.6", "--t-max", "0.5"], "--t-min/--t-max: need 0 <= t_min < t_max"),
    (["--steps", "0"], "--steps must be positive"),
    (["--batch", "-1"], "--batch must be positive"),
    (["--lr", "0"], "--lr: learning rate must be positive"),
    (["--grad-clip", "0"], "--grad-clip must be positive"),
]


@pytest.mark.parametrize("extra, message", BAD_GENERATE, ids=[" ".join(e[0]) for e in BAD_GENERATE])
def test_generate_refuses_bad_input_before_loading(configs_only, tmp_path, monkeypatch, capsys, extra, message):
    monkeypatch.setattr(cli, "load_diffusers", lambda *a: pytest.fail("the model loaded before the check"))
    assert cli.main(generate_args(configs_only / "model", tmp_path) + extra) == 2
    assert message in capsys.readouterr().err


def test_generate_refuses_a_mask_of_another_aspect_before_loading(configs_only, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "load_diffusers", lambda *a: pytest.fail("the model loaded before the check"))
    image = str(configs_only / "square.png")
    extra = ["--rule", "dds", "--source-image", image, "--source-prompt", "a dog", "--mask", image]
    assert cli.main(generate_args(configs_only / "model", tmp_path) + extra) == 2  # a 64x48 canvas
    assert "--mask: the mask is 64x64 pixels but the latents are 8x6, another aspect ratio" in capsys.readouterr().err


@pytest.mark.parametrize("model, message", [("missing", "--model: model directory"),
                                            ("no-unet", "--model: .* unet/config.json is missing"),
                                            ("odd.png", "--model: model .* is a file")])
def test_commands_refuse_a_bad_model_directory(configs_only, tmp_path, monkeypatch, capsys, model, message):
    monkeypatch.setattr(cli, "load_diffusers", lambda *a: pytest.fail("the model loaded before the check"))
    for command in (generate_args(configs_only / model, tmp_path),
                    ["decompose", "--model", str(configs_only / model), "--prompt", "x",
                     "--image", str(configs_only / "odd.png"), "--width", "64"]):
        assert cli.main(command) == 2
        assert re.search(message, capsys.readouterr().err)


def test_decompose_refuses_a_missing_image_and_odd_sizes(configs_only, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "load_diffusers", lambda *a: pytest.fail("the model loaded before the check"))
    base = ["decompose", "--model", str(configs_only / "model"), "--prompt", "x", "--output", str(tmp_path)]
    assert cli.main(base + ["--image", str(tmp_path / "none.png")]) == 2
    assert "--image" in capsys.readouterr().err
    assert cli.main(base + ["--image", str(configs_only / "odd.png")]) == 2
    assert "--width (or the image width) 60 must be a positive multiple" in capsys.readouterr().err


def test_argparse_refuses_unknown_choices(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["generate", "--model", "m", "--prompt", "p", "--dtype", "fp8"])
    assert exit_info.value.code == 2 and "--dtype" in capsys.readouterr().err


@pytest.mark.parametrize("render", ["vae", "linear"])
def test_decompose_writes_the_component_grid(tiny_sd_dir, tmp_path, render):
    Image.new("RGB", (64, 64), (200, 80, 40)).save(tmp_path / "input.png")
    command = ["decompose", "--model", str(tiny_sd_dir), "--prompt", "a cat", "--image", str(tmp_path / "input.png"),
               "--t", "100", "600", "--render", render, "--output", str(tmp_path / "out")]
    assert cli.main(command) == 0
    width, height = Image.open(tmp_path / "out" / "decomposition.png").size
    assert height == 14 + 4 * 64 + 3 * 2 and width > 2 * 64 + 2
    report = json.loads((tmp_path / "out" / "decomposition.json").read_text())
    assert report["rows"] == ["delta_C", "delta_D", "noise_residual", "delta_N"] and report["t"] == [100, 600]
    assert all(len(norms) == 2 and all(n > 0 for n in norms) for norms in report["norms"].values())


def test_generate_edits_a_source_image_with_each_rule_and_a_mask(tiny_sd_dir, tmp_path):
    """DDS and NFSD-edit start from the source and read it every step (two branches in one call); SDS
    starts from it too. The mask (its right half black) is read and sized to the latents."""
    Image.new("RGB", (64, 48), (200, 80, 40)).save(tmp_path / "source.png")
    mask = Image.new("RGB", (64, 48), "white")
    mask.paste((0, 0, 0), (32, 0, 64, 48))
    mask.save(tmp_path / "mask.png")
    output = tmp_path / "out"
    command = generate_args(tiny_sd_dir, output, "--rule", "dds", "nfsd_edit", "sds", "--steps", "3",
                            "--source-image", str(tmp_path / "source.png"), "--source-prompt", "a dog",
                            "--mask", str(tmp_path / "mask.png"), "--lr", "0.1")
    assert cli.main(command) == 0
    report = json.loads((output / "run.json").read_text())
    assert report["runs"]["dds"]["scale"] == report["runs"]["nfsd_edit"]["scale"] == 7.5
    for rule, per_row in (("dds", 4), ("nfsd_edit", 4), ("sds", 2)):
        history = report["runs"][rule]["history"]
        for (t,), evaluations in zip(history["t"], history["evaluations"]):
            assert evaluations == per_row + (rule == "nfsd_edit") * 2 * (t >= 200)
    assert {"delta_C", "delta_C_source", "unconditional_difference"} <= set(report["runs"]["dds"]["history"])
    assert Image.open(output / "comparison.png").size == (3 * 64 + 2 * 2, 14 + 48)
    images = {rule: load_image(output / f"{rule}.png") for rule in ("dds", "nfsd_edit", "sds")}
    assert all(not torch.equal(images[rule], images["sds"]) for rule in ("dds", "nfsd_edit"))
