"""A folder of runs' checkpoints stays small, nothing but the library's own files is ever deleted, and no
folder a run holds (its lock) is touched."""

import multiprocessing
import os
import threading

import pytest
import torch
from nfsd_core import LatentCanvas, keep_newest_checkpoints, remove_checkpoint, save_checkpoint
from nfsd_core.checkpoint import MARKER_FILE, STATE_FILE, hold_checkpoint_dir


def saved_run(parent, name: str, when: float):
    """A checkpoint folder `parent/name` holding a real saved state, last written at time `when`."""
    folder = parent / name
    save_checkpoint(folder, LatentCanvas(torch.zeros(1, 4, 2, 2)), None, 0, {"run": name}, [])
    for entry in folder.iterdir():
        os.utime(entry, (when, when))
    return folder


def test_remove_checkpoint_deletes_the_folder_it_made(tmp_path):
    folder = saved_run(tmp_path, "run", 1.0)
    assert remove_checkpoint(folder) and not folder.exists()
    assert remove_checkpoint(folder)  # already gone


def test_remove_checkpoint_never_deletes_other_files(tmp_path):
    folder = saved_run(tmp_path, "run", 1.0)
    (folder / "notes.txt").write_text("mine")
    assert not remove_checkpoint(folder)
    assert sorted(entry.name for entry in folder.iterdir()) == [MARKER_FILE, "notes.txt"]  # its state went
    stranger = tmp_path / "not_a_checkpoint"
    stranger.mkdir()
    (stranger / "state.safetensors").write_bytes(b"someone else's")
    assert not remove_checkpoint(stranger) and (stranger / "state.safetensors").read_bytes() == b"someone else's"


def test_keep_newest_checkpoints_keeps_the_most_recently_saved(tmp_path):
    runs = [saved_run(tmp_path, f"run{index}", float(index)) for index in range(6)]
    other = tmp_path / "other"
    other.mkdir()
    (other / "file").write_text("not a checkpoint")
    current = tmp_path / "run0"  # the oldest, but the run about to start: never removed, not counted
    removed = keep_newest_checkpoints(tmp_path, 2, current)
    assert sorted(path.name for path in removed) == ["run1", "run2", "run3"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["other", "run0", "run4", "run5"]
    assert keep_newest_checkpoints(tmp_path / "missing", 2, current) == []
    assert runs[5].exists() and (other / "file").exists()


def hold_in_child(folder, holding, release):
    """A child process that holds `folder` as a run does (its lock), until `release`."""
    with hold_checkpoint_dir(folder):
        holding.set()
        release.wait(60)
    os._exit(0)


@pytest.mark.skipif(os.name != "posix" or "fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_a_folder_another_process_holds_is_neither_removed_nor_pruned(tmp_path):
    runs = [saved_run(tmp_path, f"run{index}", float(index)) for index in range(3)]
    context = multiprocessing.get_context("fork")
    holding, release = context.Event(), context.Event()
    child = context.Process(target=hold_in_child, args=(str(runs[0]), holding, release))
    child.start()
    try:
        assert holding.wait(60)
        state = (runs[0] / STATE_FILE).read_bytes()
        assert not remove_checkpoint(runs[0])
        assert sorted(keep_newest_checkpoints(tmp_path, 0, tmp_path / "new")) == [runs[1], runs[2]]
        assert (runs[0] / STATE_FILE).read_bytes() == state  # the oldest, but in use: whole
    finally:
        release.set()
        child.join(60)
    assert child.exitcode == 0
    assert keep_newest_checkpoints(tmp_path, 0, tmp_path / "new") == [runs[0]]  # released: pruned as any other
    assert not runs[0].exists()


def test_a_folder_another_thread_holds_is_not_removed_and_a_removed_folder_can_be_claimed_again(tmp_path):
    folder = saved_run(tmp_path, "run", 1.0)
    outcome = []
    with hold_checkpoint_dir(folder):
        thread = threading.Thread(target=lambda: outcome.append(remove_checkpoint(folder)))
        thread.start()
        thread.join()
        assert (folder / STATE_FILE).is_file()
    assert outcome == [False]
    assert remove_checkpoint(folder) and not folder.exists()
    with hold_checkpoint_dir(folder):  # its lock went with it: a new run takes the name
        thread = threading.Thread(target=lambda: outcome.append(remove_checkpoint(folder)))
        thread.start()
        thread.join()
    assert outcome == [False, False] and (folder / MARKER_FILE).is_file()
