"""A folder of runs' checkpoints stays small, and nothing but the library's own files is ever deleted."""

import os

import torch
from nfsd_core import LatentCanvas, keep_newest_checkpoints, remove_checkpoint, save_checkpoint
from nfsd_core.checkpoint import MARKER_FILE


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
