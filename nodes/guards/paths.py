"""Paths that a graph sets, confined to a ComfyUI folder (output or temp).

A graph is untrusted input (servers run shared with --listen), so a path from a widget is refused,
before any work, when it is empty, absolute, climbs out with '..', starts with '~', holds NUL or
another control character, or resolves outside the folder through a symbolic link. The message
names the input, the folder it must stay inside and an example (not the folder's path on the server).
nfsd_core accepts any path (a library user owns the machine): confinement is the node layer's.
"""

from __future__ import annotations

import os
import re

ABSOLUTE = re.compile(r"^([\\/]|[A-Za-z]:)")  # POSIX root, Windows root or drive, on any platform
SEPARATORS = re.compile(r"[\\/]")


def escape(value: str, root: str) -> str | None:
    """Why the relative path `value` does not stay inside the folder `root` (None: it does)."""
    if not value.strip():
        return "is empty"
    if any(ord(character) < 32 for character in value):
        return "holds a NUL or another control character"
    if value.startswith("~"):
        return "starts with '~' (a home folder)"
    if ABSOLUTE.match(value) or os.path.isabs(value):
        return "is an absolute path"
    if ".." in SEPARATORS.split(value):
        return "climbs out with '..'"
    real_root = os.path.realpath(root)
    resolved = os.path.realpath(os.path.join(real_root, value))
    if os.path.commonpath([resolved, real_root]) != real_root:
        return "leads outside it through a symbolic link"
    return None


def refusal(input_name: str, value: str, root: str, folder_name: str, example: str) -> str | None:
    """The message refusing `value` for `input_name` if it leads outside the folder `root`
    (ComfyUI's `folder_name` folder), naming the folder and an `example` that works; else None."""
    reason = escape(value, root)
    if reason is None:
        return None
    return (f"{input_name} {value!r} {reason}: it must be a relative path inside ComfyUI's {folder_name} folder, "
            f"e.g. {example!r}")


def confined(input_name: str, value: str, root: str, folder_name: str, example: str) -> str:
    """The real path of `value` inside the folder `root`, or a ValueError with its `refusal`."""
    message = refusal(input_name, value, root, folder_name, example)
    if message is not None:
        raise ValueError(message)
    return os.path.realpath(os.path.join(os.path.realpath(root), value))
