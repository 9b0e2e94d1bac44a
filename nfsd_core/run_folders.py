"""A folder of many runs' checkpoint folders that stays small: finished runs removed, the newest few kept.

A caller that checkpoints every run without being asked (NFSD Optimizer, into ComfyUI's temp
folder, so a cancelled run resumes when queued again) would otherwise leave one state per run,
tens to hundreds of MB each. `remove_checkpoint` deletes a run's folder once its result is safe
elsewhere; `keep_newest_checkpoints` bounds how many runs' folders a parent folder holds.

Both only ever delete what `checkpoint` writes, in folders holding its marker: a folder that also
holds other files keeps them, and so keeps its marker and itself. Neither touches a folder whose
lock a run holds (another queue, server or process optimising into it): it stays whole.
"""

from __future__ import annotations

import os
from pathlib import Path

from .checkpoint import LOCK_FILE, MARKER_FILE, OWN_FILES, PARTIAL_FILE, STATE_FILE
from .folder_lock import LockHeld, exclusive_lock


def remove_checkpoint(directory: str | os.PathLike) -> bool:
    """Delete the checkpoint folder `directory` (its state first, its marker last); True if it is gone.

    A folder without the marker is not this library's and is left alone, as is one holding other
    files, and one a run holds: its lock is taken (without waiting) for the deletion, so no run can
    claim the folder meanwhile.
    """
    directory = Path(directory)
    if not (directory / MARKER_FILE).is_file():
        return not directory.exists()
    lock = directory / LOCK_FILE
    try:
        with exclusive_lock(lock):
            for name in (STATE_FILE, PARTIAL_FILE):
                (directory / name).unlink(missing_ok=True)
            if os.name != "nt":  # while held: a run that opened the lock file before is refused, not let in
                lock.unlink()
        if os.name == "nt":  # Windows deletes no open file
            lock.unlink(missing_ok=True)
        if any(entry.name != MARKER_FILE for entry in directory.iterdir()):
            return False
        (directory / MARKER_FILE).unlink()
        directory.rmdir()
    except LockHeld:
        return False  # a run is optimising into it
    except OSError:  # a run claimed it meanwhile (its files are back), or it went
        return not directory.exists()
    return True


def last_saved(directory: Path) -> float:
    """When the checkpoint folder `directory` was last written: the newest modification time of its own files."""
    times = [(directory / name).stat().st_mtime for name in OWN_FILES if (directory / name).is_file()]
    return max(times, default=0.0)


def keep_newest_checkpoints(parent: str | os.PathLike, keep: int, current: str | os.PathLike) -> list[Path]:
    """Remove the checkpoint folders in `parent` beyond the `keep` most recently saved ones, leaving the
    folder `current` (the run about to start) out of the count; returns the folders removed."""
    parent, current = Path(parent), Path(current)
    if not parent.is_dir():
        return []
    folders = [entry for entry in parent.iterdir()
               if entry.is_dir() and not entry.is_symlink() and entry != current and (entry / MARKER_FILE).is_file()]
    folders.sort(key=last_saved, reverse=True)
    return [folder for folder in folders[keep:] if remove_checkpoint(folder)]
