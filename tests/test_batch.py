"""`python -m nfsd_core batch JOBS` and the benchmarks' path (nfsd_core.batch): the same outputs on
a local Ray as one by one in this process, a killed worker's run retried, a resumed batch that
skips finished runs, and a malformed JOBS file refused before any work."""

import json
import os
import signal
import sys

import pytest

from benchmark_scripts import benchmark_script
from diffusers_helpers import tiny_sd_dir  # noqa: F401
from nfsd_core import cli
from nfsd_core.batch.jobs import RECORDS_SETTINGS, read_jobs
from nfsd_core.batch.journal import Journal
from nfsd_core.batch.runner import BatchOptions, run_tasks
from torchvision_stub import stub_hiding_folder

NEEDS_RAY = "Ray is not installed (the pack's [cluster] extra): the batch runs in this process only"


@pytest.fixture
def workers_see_no_torchvision_stub(tmp_path_factory, monkeypatch):
    """Ray's workers import through this process's path: where torchvision is an import-only
    stand-in (ComfyUI's CPU test environment), a folder on it hides the stand-in from them too."""
    pytest.importorskip("ray", reason=NEEDS_RAY)
    folder = stub_hiding_folder(tmp_path_factory.mktemp("workers"))
    if folder is not None:
        monkeypatch.syspath_prepend(folder)


def demo3d_job(output, **fields) -> dict:
    return {"command": "demo3d", "prompt": "a red mug", "steps": 3, "frames": 2, "output": str(output), **fields}


def generate_job(model, output, **fields) -> dict:
    return {"command": "generate", "model": str(model), "prompt": "a cat", "width": 64, "height": 48, "steps": 3,
            "rule": ["nfsd", "sds"], "output": str(output), **fields}


def write_jsonl(path, jobs: list[dict]):
    path.write_text("".join(json.dumps(job) + "\n" for job in jobs))
    return path


def records(path) -> dict:
    """The finished runs of a records file: output -> what the run returned."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return {entry["key"]: entry["records"] for entry in lines[1:]}


def written(output) -> dict[str, bytes]:
    """A run's output files (not its checkpoint), by name: what must not depend on where it ran."""
    return {path.name: path.read_bytes() for path in sorted(output.iterdir()) if path.is_file()}


def canvas_outputs(output) -> dict:
    """A generate run's images and per-step history (run.json's timings aside)."""
    report = json.loads((output / "run.json").read_text())
    return {"images": {name: (output / name).read_bytes() for name in ("nfsd.png", "sds.png", "comparison.png")},
            "history": {rule: run["history"] for rule, run in report["runs"].items()}}


def in_process_reference(tmp_path, jobs: list[dict]) -> dict:
    """Outputs of `jobs` run one by one in this process, under tmp_path/reference."""
    folder = tmp_path / "reference"
    folder.mkdir()
    moved = [{**job, "output": str(folder / os.path.basename(job["output"]))} for job in jobs]
    path = write_jsonl(folder / "jobs.jsonl", moved)
    assert cli.main(["batch", str(path), "--in-process"]) == 0
    return {"records": {os.path.basename(key): value for key, value in records(folder / "jobs.records.jsonl").items()},
            "outputs": folder}


def test_a_batch_on_a_local_ray_writes_what_the_in_process_batch_writes(workers_see_no_torchvision_stub, tiny_sd_dir,
                                                                         tmp_path, capsys):
    jobs = [demo3d_job(tmp_path / "mug"), demo3d_job(tmp_path / "cube", prompt="a green cube", rule="sds"),
            generate_job(tiny_sd_dir, tmp_path / "cat")]
    reference = in_process_reference(tmp_path, jobs)
    capsys.readouterr()
    path = write_jsonl(tmp_path / "jobs.jsonl", jobs)
    assert cli.main(["batch", str(path), "--workers", "2"]) == 0
    printed = capsys.readouterr()
    assert {os.path.basename(key): value for key, value in records(tmp_path / "jobs.records.jsonl").items()} == \
        reference["records"]
    for name in ("mug", "cube"):
        assert written(tmp_path / name) == written(reference["outputs"] / name)
        assert {"turntable.png", "turntable.webp", "mesh.glb", "run.json"} <= set(written(tmp_path / name))
    assert canvas_outputs(tmp_path / "cat") == canvas_outputs(reference["outputs"] / "cat")
    table = printed.out[printed.out.index("| run |"):]
    assert table.count("| done | 1 | 3 |") == 2 and "| done | 1 | 6 |" in table  # generate: 3 steps x 2 rules
    assert len({row.split("| pid ")[1].split()[0] for row in table.splitlines() if "| pid " in row}) == 2  # 2 workers
    assert "batch: 100%" in printed.err and "12/12" in printed.err  # one progress bar over all steps


def test_a_killed_workers_run_runs_again_from_its_checkpoint_and_the_batch_completes(
        workers_see_no_torchvision_stub, tmp_path):
    jobs = [demo3d_job(tmp_path / "mug", steps=8, checkpoint_every=1), demo3d_job(tmp_path / "cube", steps=8,
                                                                                  prompt="a green cube")]
    reference = in_process_reference(tmp_path, jobs)
    tasks = [job.task for job in read_jobs(write_jsonl(tmp_path / "jobs.jsonl", jobs))]
    mug = tasks[0].name
    seen: list[tuple[int, int]] = []  # (steps done, worker pid) of the mug's run

    def kill_the_mugs_worker_at_step_two(name: str, done: int, pid: int) -> None:
        if name == mug:
            seen.append((done, pid))
            if done >= 2 and len({pid for _, pid in seen}) == 1 and pid != os.getpid():
                os.kill(pid, signal.SIGKILL)

    journal = Journal(tmp_path / "jobs.records.jsonl", RECORDS_SETTINGS)
    outcomes = run_tasks(tasks, BatchOptions(workers=2), journal, on_progress=kill_the_mugs_worker_at_step_two)
    assert [(outcome.status, outcome.attempts) for outcome in outcomes.values()] == [("done", 2), ("done", 1)]
    pids = list(dict.fromkeys(pid for _, pid in seen))
    assert len(pids) == 2  # the mug ran again on a new worker ...
    resumed_at = next(done for done, pid in seen if pid == pids[1])
    assert resumed_at >= 2  # ... from its checkpoint, not from step 1
    for name in ("mug", "cube"):
        assert written(tmp_path / name) == written(reference["outputs"] / name)


def test_a_resumed_batch_skips_finished_runs_and_resumes_the_interrupted_one(tmp_path):
    jobs = [demo3d_job(tmp_path / "mug"), demo3d_job(tmp_path / "cube", prompt="a green cube", steps=6,
                                                      checkpoint_every=1)]
    reference = in_process_reference(tmp_path, jobs)
    path = write_jsonl(tmp_path / "jobs.jsonl", jobs)
    tasks = [job.task for job in read_jobs(path)]
    journal_path = tmp_path / "jobs.records.jsonl"

    def interrupt_the_cube_at_step_three(name: str, done: int, pid: int) -> None:
        if name == tasks[1].name and done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_tasks(tasks, BatchOptions(in_process=True), Journal(journal_path, RECORDS_SETTINGS),
                  on_progress=interrupt_the_cube_at_step_three)
    assert list(records(journal_path)) == [tasks[0].name]
    finished = written(tmp_path / "mug")
    progress: list[tuple[str, int]] = []
    outcomes = run_tasks([job.task for job in read_jobs(path)], BatchOptions(in_process=True),
                         Journal(journal_path, RECORDS_SETTINGS), on_progress=lambda name, done, pid:
                         progress.append((name, done)))
    assert [outcome.status for outcome in outcomes.values()] == ["done earlier", "done"]
    assert progress[0] == (tasks[1].name, 4)  # the cube resumed after its third step; the mug did not run
    assert written(tmp_path / "mug") == finished
    for name in ("mug", "cube"):
        assert written(tmp_path / name) == written(reference["outputs"] / name)
    assert cli.main(["batch", str(path), "--in-process"]) == 0  # all finished: nothing runs
    assert written(tmp_path / "cube") == written(reference["outputs"] / "cube")


def test_a_finished_run_asked_again_with_other_settings_is_refused(tmp_path, capsys):
    path = write_jsonl(tmp_path / "jobs.jsonl", [demo3d_job(tmp_path / "mug", steps=1)])
    assert cli.main(["batch", str(path), "--in-process"]) == 0
    write_jsonl(path, [demo3d_job(tmp_path / "mug", steps=2)])
    assert cli.main(["batch", str(path), "--in-process"]) == 2
    error = capsys.readouterr().err
    assert "line 1" in error and "other settings" in error and "steps" in error


@pytest.mark.parametrize("content, problem", [
    ('{"prompt": "a red mug", "steps": 3, "output": "OUT"}\n{"prompt": "a mug", "stepz": 3, "output": "OUT2"}',
     "line 2: unknown field 'stepz'"),
    ('{"prompt": "a red mug", "output": "OUT"}\n\n{"prompt": "a mug", "steps": 0, "output": "OUT2"}',
     "line 3, field 'steps': must be at least 1, got 0"),
    ('{"prompt": "a red mug", "output": "OUT"}\n{"prompt": "a mug", "frames": [1, 2], "output": "OUT2"}',
     "line 2, field 'frames': takes one value"),
    ('{"prompt": "a red mug", "output": "OUT"}\n{"prompt": "a mug"}', "line 2: missing field 'output'"),
    ('{"prompt": "a red mug", "output": "OUT"}\n{"prompt": "a mug", "output": "OUT"}', "line 2, field 'output'"),
    ('{"prompt": "a red mug", "output": "OUT"}\n{"prompt": "a mug", "rule": "nfsdd", "output": "OUT2"}',
     "line 2, field 'rule': invalid choice"),
    ('{"prompt": "a red mug", "output": "OUT"}\n{"prompt": "a mug", "prior": "NOWHERE", "output": "OUT2"}',
     "line 2, field 'prior': no 3D prior"),
    ('{"prompt": "a red mug", "output": "OUT"}\n{"command": "decompose", "output": "OUT2"}',
     "line 2, field 'command': 'decompose' cannot run in a batch"),
    ('{"prompt": "a red mug", "output": "OUT"}\n{"prompt": "a mug", "output": "OUT2"', "line 2: not JSON"),
])
def test_a_malformed_jsonl_file_is_refused_naming_the_line_and_field_before_any_run(tmp_path, capsys, content,
                                                                                  problem):
    path = tmp_path / "jobs.jsonl"
    path.write_text(content.replace("OUT", str(tmp_path / "out")).replace("NOWHERE", str(tmp_path / "nowhere")))
    assert cli.main(["batch", str(path), "--command", "demo3d", "--in-process"]) == 2
    assert problem in capsys.readouterr().err
    assert not (tmp_path / "jobs.records.jsonl").exists() and not list(tmp_path.glob("out*/run.json"))


def test_a_csv_file_takes_the_flags_as_columns_and_is_refused_at_a_bad_row(tmp_path, capsys):
    path = tmp_path / "jobs.csv"
    path.write_text(f"command,prompt,rule,steps,checkpoint_every,output\n"
                    f"demo3d,a red mug,nfsd,2,,{tmp_path / 'a'}\n"
                    f"demo3d,a blue house,sds,two,1,{tmp_path / 'b'}\n")
    assert cli.main(["batch", str(path), "--in-process"]) == 2
    assert f"{path} line 3, field 'steps': invalid at_least_one value: 'two'" in capsys.readouterr().err
    path.write_text(path.read_text().replace("two", "2"))
    jobs = read_jobs(path)
    assert [job.where for job in jobs] == [f"{path} line 2", f"{path} line 3"]
    assert [job.task.identity for job in jobs] == [
        {"command": "demo3d", "prompt": "a red mug", "rule": "nfsd", "steps": 2, "output": str(tmp_path / "a")},
        {"command": "demo3d", "prompt": "a blue house", "rule": "sds", "steps": 2, "checkpoint_every": 1,
         "output": str(tmp_path / "b")}]


def test_without_ray_the_batch_runs_in_this_process_and_says_how_to_go_parallel(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    path = write_jsonl(tmp_path / "jobs.jsonl", [demo3d_job(tmp_path / "mug", steps=1)])
    assert cli.main(["batch", str(path), "--address", "auto"]) == 2
    assert "needs Ray, which is not installed here: pip install -e \".[cluster]\"" in capsys.readouterr().err
    assert cli.main(["batch", str(path)]) == 0
    printed = capsys.readouterr()
    assert "running the 1 runs one by one in this process" in printed.err and ".[cluster]" in printed.err
    assert f"| {tmp_path / 'mug'} | done | 1 | 1 |" in printed.out and (tmp_path / "mug" / "run.json").is_file()


def shapes_arguments(output) -> list[str]:
    return ["--steps", "2", "--prompts", "2", "--methods", "SDS 100", "NFSD 7.5", "--seeds", "0", "--output", str(output)]


def digits_arguments(output) -> list[str]:
    return ["--steps", "2", "--per-fine", "1", "--per-coarse", "1", "--output", str(output)]


def canvas_arguments(output) -> list[str]:
    return ["--steps", "2", "--output", str(output)]


def without_timings(value):
    """A benchmark's results.json without what measures time (seconds, minutes)."""
    if isinstance(value, dict):
        return {key: without_timings(item) for key, item in value.items()
                if not any(word in key for word in ("seconds", "minutes"))}
    if isinstance(value, list):
        return [without_timings(item) for item in value]
    return value


@pytest.mark.parametrize("script, arguments", [("shapes_benchmark", shapes_arguments),
                                               ("digits_benchmark", digits_arguments),
                                               ("shapes_canvas_benchmark", canvas_arguments)])
def test_a_benchmark_on_two_ray_workers_measures_what_one_process_measures(workers_see_no_torchvision_stub, tmp_path,
                                                                           script, arguments):
    benchmark = benchmark_script(script)
    assert benchmark.main([*arguments(tmp_path / "alone"), "--in-process"]) == 0
    assert benchmark.main([*arguments(tmp_path / "ray"), "--workers", "2"]) == 0
    alone, on_ray = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("alone", "ray"))
    assert without_timings(on_ray) == without_timings(alone)
    assert (tmp_path / "ray" / "grid.png").read_bytes() == (tmp_path / "alone" / "grid.png").read_bytes()
