"""An exclusive lock that one thread of one process holds at a time, and the OS drops when that process dies.

The lock is the operating system's on an open lock file (`fcntl.flock`; `msvcrt.locking` on
Windows), taken without waiting: a second holder is refused at once, and a crash (kill -9, power
loss) can never leave it held. Inside one process a thread may take a lock it holds again (the
loop holds its checkpoint folder for the whole run and each save takes it once more); another
thread is refused as another process would be. (filelock, which torch installs, would do, but its
4.x versions create and delete probe files beside the lock file, and a checkpoint folder refuses
files it did not write.)
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator


class LockHeld(Exception):
    """The lock is held by another process, or by another thread of this one."""


@dataclass
class _Hold:
    descriptor: int
    thread: int
    count: int


_held: dict[str, _Hold] = {}  # real path of the lock file -> this process's hold on it
_registry = threading.Lock()


@contextmanager
def exclusive_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold the lock on the file `path` (created if missing) while the block runs; LockHeld at once
    if another process, or another thread of this one, holds it."""
    key = os.path.realpath(path)
    with _registry:
        hold = _held.get(key)
        if hold is not None and hold.thread != threading.get_ident():
            raise LockHeld(key)
        if hold is None:
            hold = _held[key] = _Hold(_acquire(key), threading.get_ident(), 0)
        hold.count += 1
    try:
        yield
    finally:
        with _registry:
            hold.count -= 1
            if hold.count == 0:
                del _held[key]
                _release(hold.descriptor)


def _acquire(path: str) -> int:
    """A descriptor of `path` holding its lock, or LockHeld."""
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    descriptor = os.open(path, flags, 0o644)
    try:
        if os.name == "nt":
            import msvcrt

            msvcrt.locking(descriptor, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if not _still_at(descriptor, path):  # its holder deleted it (removing the folder) before letting go
                raise BlockingIOError
    except OSError:  # BlockingIOError (POSIX), PermissionError (Windows): held elsewhere
        os.close(descriptor)
        raise LockHeld(path) from None
    return descriptor


def _still_at(descriptor: int, path: str) -> bool:
    """Whether the file open as `descriptor` is still the one named `path`."""
    try:
        named = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    opened = os.fstat(descriptor)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _release(descriptor: int) -> None:
    try:
        if os.name == "nt":
            import msvcrt

            os.lseek(descriptor, 0, os.SEEK_SET)
            msvcrt.locking(descriptor, msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


def _forget_after_fork() -> None:
    """A forked child holds none of its parent's locks: closing its copies leaves the parent's in place."""
    for hold in _held.values():
        os.close(hold.descriptor)
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
