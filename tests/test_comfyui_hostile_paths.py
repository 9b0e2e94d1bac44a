"""Hostile paths and checkpoints through real ComfyUI: every path a graph sets stays inside the output
folder and is a name every file system takes, NFSD writes only folders it owns, one run at a time,
and damaged, foreign, forged (uploaded) or other runs' states are refused by name, before any work."""

import json
import os
from pathlib import Path

import pytest
from nfsd_core.bounded_text import excerpt
from nfsd_core.checkpoint import STATE_FILE

from comfyui_helpers import comfyui, counting_work, requires_comfyui  # noqa: F401 (comfyui: a fixture)
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
    """The refusal's message, and whether any work (an optimiser step, a model call) ran before it."""
    with counting_work() as work:
        result = comfyui.execute(prompt)
    assert not (result.valid and result.success)
    return result.error_message, work["optimizer_steps"] + work["model_calls"] > 0


def test_every_checkpoint_dir_escape_is_refused_before_work_and_writes_nothing_outside(comfyui, outside, capsys):
    values = [escape(outside) for escape in ESCAPES.values()]
    before = watched(comfyui, outside, values)
    refused_before_work = 0
    for name, escape in ESCAPES.items():
        value = escape(outside)
        message, worked = run_refused(comfyui, text_to_image_prompt(steps=2, checkpoint_dir=value))
        assert f"checkpoint_dir {excerpt(value.strip())}" in message and MUST_BE_INSIDE in message, name
        assert "NFSD/checkpoints/my_run" in message  # an example that works
        reason = next((text for key, text in REASONS.items() if name.startswith(key)), None)
        assert reason is None or reason in message, (name, message)
        assert str(comfyui.base) not in message  # the server's own folders are not revealed
        refused_before_work += not worked
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
    (outside / "present").mkdir()
    (outside / "present" / STATE_FILE).write_bytes(b"x")
    messages = []
    for folder in ("present", "missing"):  # names of one length: the message quotes only an excerpt
        value = str(outside / folder)
        message, _ = run_refused(comfyui, text_to_image_prompt(steps=2, checkpoint_dir=value))
        messages.append(message.replace(value, "<path>"))
    assert messages[0] == messages[1]


def test_a_folder_of_another_programs_files_is_refused_and_left_as_it_was(comfyui, tmp_path):
    folder = comfyui.base / "output" / "NFSD" / "tests" / tmp_path.name
    folder.mkdir(parents=True)
    (folder / "state.json").write_text('{"another": "tool"}')
    message, worked = run_refused(comfyui, text_to_image_prompt(steps=2, checkpoint_dir=f"NFSD/tests/{tmp_path.name}"))
    assert "holds files NFSD did not write (state.json)" in message and "choose a new or empty folder" in message
    assert not worked and sorted(os.listdir(folder)) == ["state.json"]
    assert (folder / "state.json").read_text() == '{"another": "tool"}'


def test_a_file_in_place_of_the_checkpoint_folder_is_refused_before_work(comfyui, tmp_path):
    file = comfyui.base / "output" / "NFSD" / "tests" / f"{tmp_path.name}.txt"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text("mine")
    message, worked = run_refused(comfyui, text_to_image_prompt(steps=2, checkpoint_dir=f"NFSD/tests/{file.name}"))
    assert "is a file" in message and not worked and file.read_text() == "mine"


def test_an_unwritable_checkpoint_folder_is_refused_before_work(comfyui, tmp_path):
    folder = comfyui.base / "output" / "NFSD" / "tests" / tmp_path.name
    folder.mkdir(parents=True)
    with unwritable(folder):
        message, worked = run_refused(comfyui, text_to_image_prompt(steps=2,
                                                                    checkpoint_dir=f"NFSD/tests/{tmp_path.name}"))
    assert "cannot write to the checkpoint folder" in message and not worked


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
    message, worked = run_refused(comfyui, prompt)
    assert f"the checkpoint output/{directory}/{STATE_FILE} cannot be resumed" in message and cause in message
    assert "Delete it (or its folder) to start the run over" in message and not worked
    assert str(comfyui.base) not in message  # the server's own folders are not revealed


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
    message, worked = run_refused(comfyui, other)
    assert "belongs to another run" in message and named in message and not worked
    assert f"the checkpoint output/{directory}/{STATE_FILE}" in message and str(comfyui.base) not in message


# --- names the file system would refuse after the work -------------------------------------------------------------

def name_cases(comfyui, tmp_path) -> dict:
    """A name a file system refuses -> what the refusal must say (the limit, or the rule)."""
    in_the_way = comfyui.base / "output" / "NFSD" / "tests" / f"{tmp_path.name}.file"
    in_the_way.parent.mkdir(parents=True, exist_ok=True)
    in_the_way.write_text("mine")
    return {
        "a name of 300 characters": (f"NFSD/{'a' * 300}", "can be at most"),
        "a file where a folder must be": (f"NFSD/tests/{in_the_way.name}/run", "to be a folder, but it is a file"),
        "2000 nested folders": ("/".join(["d"] * 2000), "nests 2000 folders deep; give at most 32"),
        "a reserved name": ("NFSD/CON/run", "which Windows reserves for a device"),
        "a reserved name with an extension": ("NFSD/nul.txt", "which Windows reserves for a device"),
        "a colon": ("NFSD/a:b", "which Windows does not allow in file names"),
        "a question mark": ("NFSD/why?", "which Windows does not allow in file names"),
        "a trailing dot": ("NFSD/run.", "ending in a dot"),
        "a trailing space inside": ("NFSD/run /x", "ending in a space"),
        "a lone surrogate": ("NFSD/\ud800", "lone surrogate"),
    }


@pytest.mark.parametrize("input_name", ["filename_prefix", "checkpoint_dir"])
def test_every_name_a_file_system_refuses_is_refused_when_the_graph_is_queued(comfyui, tmp_path, input_name, capsys):
    output = comfyui.base / "output"
    before = files_under(output)
    cases = name_cases(comfyui, tmp_path)
    for name, (value, cause) in cases.items():
        if input_name == "filename_prefix":
            prompt = text_to_nerf_prompt(steps=1)
            for other_output in ("7", "10", "11", "12"):
                del prompt[other_output]
            prompt[SAVE_MESH]["inputs"]["filename_prefix"] = value
        else:
            prompt = text_to_image_prompt(steps=1, checkpoint_dir=value)
        result = comfyui.execute(prompt)
        message = result.error_message
        assert not result.valid, name  # refused at validation: nothing ran
        assert f"{input_name} {excerpt(value)}" in message and cause in message, (name, message)
        assert "choose another name, e.g. 'NFSD/" in message and str(comfyui.base) not in message, name
        assert len(message) < 1000, name
    created = files_under(output) - before - {output / "NFSD" / "tests" / f"{tmp_path.name}.file"}
    with capsys.disabled():
        print(f"\n{input_name}: {len(cases)} names a file system refuses, all refused at validation, "
              f"{len(created)} files written")
    assert created == set()


def test_save_mesh_refuses_at_validation_what_only_the_save_would_have_found(comfyui):
    """The issue's late failures, after a whole NeRF run: now refused before it starts."""
    prompt = text_to_nerf_prompt(steps=1)
    for other_output in ("7", "10", "11", "12"):
        del prompt[other_output]
    prompt[SAVE_MESH]["inputs"]["filename_prefix"] = "NFSD/" + "m" * 250  # 250 fits a name, not with "_00001_.glb"
    result = comfyui.execute(prompt)
    assert not result.valid
    assert "ends in a name of 250 bytes; it can be at most 242 bytes (the counter and extension take 13 more)" \
        in result.error_message


# --- one run per checkpoint folder ----------------------------------------------------------------------------------

HOLDER = """
import sys, torch
sys.path.insert(0, sys.argv[2])
from nfsd_core import LatentCanvas, Prompts, ScoreDistillation, optimize
from core_helpers import gaussian_model
torch.set_num_threads(1)
model = gaussian_model({"cat": 1.5, "": 0.0}, std=0.5)
guidance = ScoreDistillation(model, Prompts.from_text(model, "cat"), "sds", seed=3)

def on_step(record):
    if record.step == 0:
        print("holding", flush=True)
        sys.stdin.readline()

optimize(LatentCanvas.random(1, 4, 8, 8, seed=2), guidance, 4, checkpoint_dir=sys.argv[1], checkpoint_every=1,
         on_step=on_step)
print("finished", flush=True)
"""


def test_a_run_on_a_checkpoint_folder_another_process_holds_is_refused_before_work(comfyui, tmp_path):
    """Two servers on one base folder: the second run is refused by name; the first's state stays its own."""
    import subprocess
    import sys

    from nfsd_core.checkpoint import read_checkpoint

    directory = f"NFSD/tests/{tmp_path.name}"
    folder = comfyui.base / "output" / directory
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), str(Path(__file__).parent)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        saved = (folder / STATE_FILE).read_bytes()
        message, worked = run_refused(comfyui, text_to_image_prompt(steps=2, checkpoint_dir=directory))
        assert f"checkpoint_dir '{directory}': the checkpoint folder output/{directory} is in use" in message
        assert str(comfyui.base) not in message
        assert "is in use by another run (another queue, server or process is optimising into it)" in message
        assert not worked and (folder / STATE_FILE).read_bytes() == saved
    finally:
        holder.communicate("\n", timeout=120)
    assert holder.returncode == 0
    assert read_checkpoint(folder).step == 4  # the holder finished its own run (its key: NFSD_CONFIG_DIR's)


def test_a_checkpoint_folder_inside_or_around_another_runs_is_refused_before_work(comfyui, tmp_path):
    outer = f"NFSD/tests/{tmp_path.name}"
    assert comfyui.execute(text_to_image_prompt(steps=2, checkpoint_dir=outer)).success
    message, worked = run_refused(comfyui, text_to_image_prompt(steps=2, checkpoint_dir=f"{outer}/inner"))
    assert "the checkpoint folder of another run, which would then refuse to resume" in message and not worked
    assert not (comfyui.base / "output" / outer / "inner").exists()
    assert comfyui.execute(text_to_image_prompt(steps=2, checkpoint_dir=outer)).success  # the outer run resumes

    around = f"NFSD/tests/{tmp_path.name}_around"
    assert comfyui.execute(text_to_image_prompt(steps=2, checkpoint_dir=f"{around}/inner")).success
    message, worked = run_refused(comfyui, text_to_image_prompt(steps=2, checkpoint_dir=around))
    assert "holds the checkpoint folder of another run (inner)" in message and not worked


def chained(first_dir: str, second_dir: str) -> dict:
    """The canvas optimised by node 6 into `first_dir`, then on by a second Optimizer "20" into `second_dir`."""
    prompt = text_to_image_prompt(steps=2, checkpoint_dir=first_dir)
    prompt["20"] = {"class_type": "NFSD_Optimizer", "inputs": {**prompt["6"]["inputs"], "representation": ["6", 0],
                                                               "checkpoint_dir": second_dir}}
    prompt["21"] = {"class_type": "PreviewAny", "inputs": {"source": ["20", 2]}}
    return prompt


def test_a_second_optimizer_on_the_first_ones_checkpoint_folder_is_refused_before_work(comfyui, tmp_path):
    """Chained Optimizers on one folder: the second would find the first's finished run, after all its work."""
    directory = f"NFSD/tests/{tmp_path.name}"
    message, worked = run_refused(comfyui, chained(directory, f"./{directory}/"))
    assert "NFSD Optimizer (node 20), checked by NFSD Optimizer (node 6) before its first step" in message
    assert "is the checkpoint folder of NFSD Optimizer (node 6) too" in message and not worked
    assert comfyui.execute(chained(directory, f"{directory}_2")).success  # a folder each: both run


# --- forged states, uploaded through ComfyUI's own endpoint -----------------------------------------------------------

def upload(comfyui, name: str, data: bytes, subfolder: str, kind: str = "output") -> int:
    """POST /upload/image through ComfyUI's own route, over HTTP on the loopback: the HTTP status."""
    import asyncio

    import aiohttp
    import server
    from aiohttp import test_utils, web

    async def post() -> int:
        instance = getattr(server.PromptServer, "instance", None) or server.PromptServer(asyncio.get_running_loop())
        app = web.Application()
        app.add_routes(instance.routes)
        async with test_utils.TestClient(test_utils.TestServer(app)) as client:
            form = aiohttp.FormData()
            form.add_field("image", data, filename=name, content_type="application/octet-stream")
            form.add_field("type", kind)
            form.add_field("subfolder", subfolder)
            form.add_field("overwrite", "true")
            return (await client.post("/upload/image", data=form)).status

    return asyncio.run(post())


def forged_state(real, tensors: dict, **record) -> bytes:
    """A state file as anyone can make one: the real run's record, edited, its digests recomputed, unsigned."""
    import torch
    from nfsd_core.identity import tensors_digest
    from safetensors.torch import save

    tensors = {name: torch.as_tensor(value) for name, value in tensors.items()}
    fields = {"format": 3, "step": real.step, "identity": real.identity, "history": real.history,
              "tensors_sha256": tensors_digest(tensors), "signature": "f" * 64, **record}
    return save(tensors, metadata={"nfsd_checkpoint": json.dumps(fields)})


def test_a_forged_state_uploaded_through_upload_image_is_refused_and_nothing_is_overwritten(comfyui, tmp_path):
    """The issue's attack: a marker and a state with finite but insane moments, uploaded with type=output."""
    import torch

    real_dir, forged_dir = f"NFSD/tests/{tmp_path.name}_real", f"NFSD/tests/{tmp_path.name}_forged"
    prompt = text_to_image_prompt(steps=4, checkpoint_dir=real_dir)

    def stop_after_two(value, total, preview, node_id):
        if node_id == OPTIMIZER and value == 2:
            import nodes
            nodes.interrupt_processing()

    from comfyui_helpers import progress_hook
    with progress_hook(stop_after_two):
        assert not comfyui.execute(prompt).success  # an unfinished run, as an attacker would copy
    real = comfyui.read_checkpoint(comfyui.base / "output" / real_dir)
    moments = real.tensors["optimizer.0.exp_avg"]
    insane = dict(real.tensors, **{"optimizer.0.step": torch.tensor(1e30),
                                   "optimizer.0.exp_avg": torch.full_like(moments, 3e38),
                                   "optimizer.0.exp_avg_sq": torch.full_like(moments, -1.0)})
    forgeries = {"unsigned, digest recomputed": forged_state(real, insane),
                 "the earlier format, its plain SHA-256": forged_state(real, insane, format=2, signature=None)}
    folder = comfyui.base / "output" / forged_dir
    for name, data in forgeries.items():
        assert upload(comfyui, "nfsd_checkpoint.txt", b"marker", forged_dir) == 200
        assert upload(comfyui, STATE_FILE, data, forged_dir) == 200
        assert (folder / STATE_FILE).read_bytes() == data  # the upload landed where the checkpoint lives
        message, worked = run_refused(comfyui, {**prompt, OPTIMIZER: {**prompt[OPTIMIZER], "inputs": {
            **prompt[OPTIMIZER]["inputs"], "checkpoint_dir": forged_dir}}})
        assert "cannot be resumed" in message and ("does not carry this server's signature" in message
                                                   or "carry no signature" in message), (name, message)
        assert not worked and (folder / STATE_FILE).read_bytes() == data, name  # refused, nothing overwritten


def test_the_signing_key_lies_where_no_upload_reaches_and_only_the_server_reads_it(comfyui):
    import stat

    optimizer_module = comfyui.module("nodes.optimizer")
    key = optimizer_module.signing_key()
    path = comfyui.base / "user" / "__nfsd" / "checkpoint_signing.key"
    assert path.read_bytes() == key and optimizer_module.signing_key() == key  # made once, then kept
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for kind, subfolder in (("output", "../user/__nfsd"), ("temp", "../user/__nfsd"), ("input", "../user/__nfsd"),
                            ("output", "/" + str(path.parent).lstrip("/"))):
        assert upload(comfyui, "checkpoint_signing.key", b"k" * 32, subfolder, kind) >= 400, (kind, subfolder)
    assert path.read_bytes() == key
