"""Hostile paths and checkpoints through real ComfyUI: every path a graph sets stays inside the output
folder, NFSD writes only folders it owns, and damaged, foreign or other runs' states are refused by name."""

import json
import os
from pathlib import Path

import pytest
from nfsd_core.checkpoint import STATE_FILE

from comfyui_helpers import comfyui, progress_hook, requires_comfyui  # noqa: F401 (comfyui: a fixture)
from comfyui_helpers import text_to_image_prompt, text_to_nerf_prompt
from permissions import unwritable

pytestmark = requires_comfyui
OPTIMIZER, SAVE_MESH = "6", "9"
MUST_BE_INSIDE = "it must be a relative path inside ComfyUI's output folder"

# Each path escape, as a function of a folder outside ComfyUI's folders that the test watches.
ESCAPES = {
    "absolute": lambda outside: str(outside / "absolute"),
    "absolute with a trailing slash": lambda outside: str(outside) + "/",
    "parent": lambda outside: "../../nfsd_escape_parent",
    "parent after a folder": lambda outside: "NFSD/../../nfsd_escape",
    "parent at the end": lambda outside: "NFSD/..",
    "backslash parent": lambda outside: "NFSD\\..\\..\\nfsd_escape",
    "home": lambda outside: "~/nfsd_escape",
    "tilde": lambda outside: "~",
    "NUL": lambda outside: "NFSD/run\x00/etc",
    "newline": lambda outside: "NFSD/ru\nn",
    "backslash root": lambda outside: "\\nfsd_escape",
    "drive": lambda outside: "C:/nfsd_escape",
    "symlink": lambda outside: "NFSD/tests/link_out/run",  # output/NFSD/tests/link_out -> outside
}
REASONS = {"absolute": "is an absolute path", "parent": "climbs out with '..'", "home": "starts with '~'",
           "NUL": "control character", "newline": "control character", "symlink": "through a symbolic link"}


def files_under(root: Path, skip=()) -> set[Path]:
    found = set()
    for folder, folders, files in os.walk(root):
        folders[:] = [name for name in folders if Path(folder, name) not in skip]
        found.update(Path(folder, name) for name in files + folders)
    return found


def naive_targets(comfyui, values) -> set[Path]:
    """Where each value would land outside the output folder if taken as a path (joined, '~' expanded)."""
    output = comfyui.base / "output"
    targets = set()
    for value in values:
        value = value.split("\x00")[0]
        for candidate in (value, os.path.expanduser(value), value.replace("\\", "/")):
            path = Path(os.path.normpath(os.path.join(output, candidate)))
            if path != output and output not in path.parents:
                targets.add(path)
    return targets


def watched(comfyui, outside: Path, values) -> set[Path]:
    """Every file and folder that a write outside ComfyUI's output and temp folders could have created."""
    base = comfyui.base
    landed = {path for path in naive_targets(comfyui, values) if path.exists()}
    return files_under(base, skip={base / "output", base / "temp"}) | files_under(outside) | landed


@pytest.fixture
def outside(comfyui, tmp_path):
    """A folder outside ComfyUI's, with a symbolic link to it from inside the output folder."""
    folder = tmp_path / "outside"
    folder.mkdir()
    link = comfyui.base / "output" / "NFSD" / "tests" / "link_out"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        os.symlink(folder, link)
    yield folder
    link.unlink()


def run_refused(comfyui, prompt):
    steps = []
    with progress_hook(lambda value, total, preview, node_id: steps.append(value) if node_id == OPTIMIZER else 0):
        result = comfyui.execute(prompt)
    assert not (result.valid and result.success)
    return result.error_message, steps


def test_every_checkpoint_dir_escape_is_refused_before_work_and_writes_nothing_outside(comfyui, outside, capsys):
    values = [escape(outside) for escape in ESCAPES.values()]
    before = watched(comfyui, outside, values)
    refused_before_work = 0
    for name, escape in ESCAPES.items():
        value = escape(outside)
        message, steps = run_refused(comfyui, text_to_image_prompt(steps=2, checkpoint_dir=value))
        assert f"checkpoint_dir {value.strip()!r}" in message and MUST_BE_INSIDE in message, name
        assert "NFSD/checkpoints/my_run" in message  # an example that works
        reason = next((text for key, text in REASONS.items() if name.startswith(key)), None)
        assert reason is None or reason in message, (name, message)
        assert str(comfyui.base) not in message  # the server's own folders are not revealed
        refused_before_work += not steps
    created = watched(comfyui, outside, values) - before
    with capsys.disabled():
        print(f"\ncheckpoint_dir escapes: {len(ESCAPES)} tried, {refused_before_work} refused before the first step, "
              f"{len(created)} files written outside output/temp")
    assert refused_before_work == len(ESCAPES)
    assert created == set()


def test_every_filename_prefix_escape_is_refused_when_the_graph_is_queued(comfyui, outside):
    values = [escape(outside) for escape in ESCAPES.values()]
    before = watched(comfyui, outside, values)
    for name, value in zip(ESCAPES, values):
        prompt = text_to_nerf_prompt(steps=1)
        for other_output in ("7", "10", "11", "12"):  # Save Mesh is the only output: its refusal refuses the graph
            del prompt[other_output]
        prompt[SAVE_MESH]["inputs"]["filename_prefix"] = value
        result = comfyui.execute(prompt)
        assert not result.valid, name  # refused by validation: nothing ran
        assert "filename_prefix" in result.error_message and "inside ComfyUI's output folder" in result.error_message
    assert watched(comfyui, outside, values) - before == set()


def test_loading_errors_do_not_tell_whether_a_file_exists_outside(comfyui, outside):
    (outside / "exists").mkdir()
    (outside / "exists" / STATE_FILE).write_bytes(b"x")
    messages = []
    for folder in ("exists", "missing"):
        value = str(outside / folder)
        message, _ = run_refused(comfyui, text_to_image_prompt(steps=2, checkpoint_dir=value))
        messages.append(message.replace(value, "<path>"))
    assert messages[0] == messages[1]


def test_a_folder_of_another_programs_files_is_refused_and_left_as_it_was(comfyui, tmp_path):
    folder = comfyui.base / "output" / "NFSD" / "tests" / tmp_path.name
    folder.mkdir(parents=True)
    (folder / "state.json").write_text('{"another": "tool"}')
    message, steps = run_refused(comfyui, text_to_image_prompt(steps=2, checkpoint_dir=f"NFSD/tests/{tmp_path.name}"))
    assert "holds files NFSD did not write (state.json)" in message and "choose a new or empty folder" in message
    assert steps == [] and sorted(os.listdir(folder)) == ["state.json"]
    assert (folder / "state.json").read_text() == '{"another": "tool"}'


def test_a_file_in_place_of_the_checkpoint_folder_is_refused_before_work(comfyui, tmp_path):
    file = comfyui.base / "output" / "NFSD" / "tests" / f"{tmp_path.name}.txt"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text("mine")
    message, steps = run_refused(comfyui, text_to_image_prompt(steps=2, checkpoint_dir=f"NFSD/tests/{file.name}"))
    assert "is a file" in message and steps == [] and file.read_text() == "mine"


def test_an_unwritable_checkpoint_folder_is_refused_before_work(comfyui, tmp_path):
    folder = comfyui.base / "output" / "NFSD" / "tests" / tmp_path.name
    folder.mkdir(parents=True)
    with unwritable(folder):
        message, steps = run_refused(comfyui, text_to_image_prompt(steps=2, checkpoint_dir=f"NFSD/tests/{tmp_path.name}"))
    assert "cannot write to the checkpoint folder" in message and steps == []


def damage_truncate(path: Path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def damage_flip(path: Path):
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))


def damage_foreign(path: Path):
    from safetensors.torch import save_file
    import torch

    save_file({"weight": torch.zeros(2)}, str(path))


DAMAGE = {"truncated": (damage_truncate, "not a readable safetensors file"),
          "a flipped byte": (damage_flip, "do not match the digest"),
          "another program's safetensors": (damage_foreign, "it holds no NFSD record")}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_checkpoint_is_refused_naming_the_file_and_the_fix(comfyui, tmp_path, damage):
    change, cause = DAMAGE[damage]
    directory = f"NFSD/tests/{tmp_path.name}"
    prompt = text_to_image_prompt(steps=3, checkpoint_dir=directory)
    assert comfyui.execute(prompt).success  # a finished run, which the same prompt would restore
    change(comfyui.base / "output" / directory / STATE_FILE)
    message, steps = run_refused(comfyui, prompt)
    assert f"{directory}/{STATE_FILE} cannot be resumed" in message and cause in message
    assert "Delete it (or its folder) to start the run over" in message and steps == []


CHANGED_RUNS = {  # a setting changed between the run that saved and the one that resumes -> what the refusal names
    "learning rate": (lambda p: p[OPTIMIZER]["inputs"].update(learning_rate=5.0), "optimizer.lr: saved 0.01, now 5.0"),
    "steps": (lambda p: p[OPTIMIZER]["inputs"].update(steps=3), "steps: saved 2, now 3"),
    "seed": (lambda p: p[OPTIMIZER]["inputs"].update(seed=9), "guidance.seed: saved 0, now 9"),
    "rule": (lambda p: p["4"]["inputs"].update(rule="SDS"), "guidance.rule: saved 'nfsd', now 'sds'"),
    "NeRF samples per ray": (lambda p: p["5"]["inputs"].update(samples_per_ray=8),
                             "representation.settings.samples_per_ray: saved 16, now 8"),
    "NeRF seed": (lambda p: p["5"]["inputs"].update(seed=3), "representation.settings.seed: saved 0, now 3"),
}


@pytest.mark.parametrize("change", CHANGED_RUNS)
def test_a_nerf_checkpoint_resumes_only_its_own_run_and_names_what_differs(comfyui, tmp_path, change):
    edit, named = CHANGED_RUNS[change]
    directory = f"NFSD/tests/{tmp_path.name}"
    saved = text_to_nerf_prompt(steps=2, checkpoint_dir=directory)
    saved[OPTIMIZER]["inputs"]["learning_rate"] = 0.01
    assert comfyui.execute(saved).success
    other = json.loads(json.dumps(saved))
    edit(other)
    message, steps = run_refused(comfyui, other)
    assert "belongs to another run" in message and named in message and steps == []
