"""Paths that a graph sets, confined to a ComfyUI folder (output or temp) and to names any file system takes.

A graph is untrusted input (servers run shared with --listen), so a path from a widget is refused,
before any work, when it
- leads outside the folder: empty, absolute, climbing out with '..', starting with '~', holding
  NUL or another control character, or resolving outside through a symbolic link;
- names what the file system would refuse only later, after the work: a folder or file name over
  255 bytes, a path too long for the platform, more than MAX_DEPTH folders, an existing file where
  a folder must be, or a name Windows forbids (the characters <>:"|?*, a trailing dot or space,
  the reserved device names CON, PRN, AUX, NUL, COM1-9, LPT1-9, with or without an extension), so
  that a graph made on one system works on the others.
The message names the input, the limit and an example that works, never the folder's path on the server.
nfsd_core accepts any path (a library user owns the machine): confinement is the node layer's.
"""

from __future__ import annotations

import os
import re

from ...nfsd_core import excerpt, first_lone_surrogate

ABSOLUTE = re.compile(r"^([\\/]|[A-Za-z]:)")  # POSIX root, Windows root or drive, on any platform
SEPARATORS = re.compile(r"[\\/]")
MAX_NAME_BYTES = 255  # one file or folder name, in UTF-8 (ext4, APFS; NTFS counts UTF-16 units, never more)
MAX_DEPTH = 32  # folders in one path a graph gives
WINDOWS_FORBIDDEN = '<>:"|?*'
WINDOWS_RESERVED = frozenset({"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                              *(f"LPT{i}" for i in range(1, 10))})
WINDOWS_MAX_PATH = 259  # characters of a whole path without long-path support (MAX_PATH, less its NUL)


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
    if first_lone_surrogate(value) is not None:
        return None  # not a path any file system call takes (`name_fault` refuses it): nothing to resolve
    real_root = os.path.realpath(root)
    resolved = os.path.realpath(os.path.join(real_root, value))
    if os.path.commonpath([resolved, real_root]) != real_root:
        return "leads outside it through a symbolic link"
    return None


def max_path_bytes(root: str) -> int:
    """The longest whole path (bytes) the platform takes under `root`."""
    if os.name == "nt":
        return WINDOWS_MAX_PATH
    try:
        return os.pathconf(root, "PC_PATH_MAX") - 1
    except (OSError, ValueError, AttributeError):
        return 4095


def name_fault(value: str, root: str, file_suffix: int | None = None) -> str | None:
    """Why the file system would refuse the relative path `value` under `root`, which `escape` let
pass (None: it would not).

    `value` names a folder, or with `file_suffix` the prefix of files whose names get that many more
    bytes (a saver's counter and extension). Checked before anything is created: each name and its
    length, the depth, the whole path's length, and existing files where the path needs folders.
    """
    if first_lone_surrogate(value) is not None:
        return "holds a lone surrogate, which is not valid Unicode and no file system takes"
    names = [name for name in SEPARATORS.split(value) if name not in ("", ".")]
    if not names:
        return "names the folder itself, not a folder or file inside it"
    if len(names) > MAX_DEPTH:
        return f"nests {len(names)} folders deep; give at most {MAX_DEPTH}"
    for name in names:
        fault = windows_fault(name)
        if fault is not None:
            return fault
    suffix = file_suffix or 0
    longest = max(names[:-1], key=lambda name: len(name.encode()), default="")
    if len(longest.encode()) > MAX_NAME_BYTES:
        return f"has a folder name of {len(longest.encode())} bytes; a name can be at most {MAX_NAME_BYTES} bytes"
    if len(names[-1].encode()) + suffix > MAX_NAME_BYTES:
        return (f"ends in a name of {len(names[-1].encode())} bytes; it can be at most {MAX_NAME_BYTES - suffix} bytes"
                + (f" (the counter and extension take {suffix} more)" if suffix else ""))
    real_root = os.path.realpath(root)
    room = max_path_bytes(real_root) - len(real_root.encode()) - 1
    length = len("/".join(names).encode()) + suffix
    if length > room:
        return f"makes a path of {length} bytes in that folder; this server's file system leaves room for {room}"
    folders = names if file_suffix is None else names[:-1]
    for depth in range(1, len(folders) + 1):
        if os.path.lexists(os.path.join(real_root, *folders[:depth])) \
                and not os.path.isdir(os.path.join(real_root, *folders[:depth])):
            return f"needs {'/'.join(folders[:depth])!r} to be a folder, but it is a file"
    return None


def windows_fault(name: str) -> str | None:
    """Why Windows would refuse the file or folder name `name` (None: it would not)."""
    forbidden = next((character for character in name if character in WINDOWS_FORBIDDEN), None)
    if forbidden is not None:
        return f"holds {forbidden!r}, which Windows does not allow in file names (none of {WINDOWS_FORBIDDEN})"
    if name[-1] in ". ":
        return f"has a name ending in a {'dot' if name[-1] == '.' else 'space'}, which Windows does not allow"
    if name.split(".")[0].strip().upper() in WINDOWS_RESERVED:
        return (f"uses the name {name!r}, which Windows reserves for a device (CON, PRN, AUX, NUL, COM1-9, LPT1-9, "
                "also with an extension)")
    return None


def refusal(input_name: str, value: str, root: str, folder_name: str, example: str,
            file_suffix: int | None = None) -> str | None:
    """The message refusing `value` for `input_name` if it leads outside the folder `root`
    (ComfyUI's `folder_name` folder) or names what the file system would refuse, naming the folder
    and an `example` that works; else None."""
    reason = escape(value, root)
    if reason is not None:
        return (f"{input_name} {excerpt(value)} {reason}: it must be a relative path inside ComfyUI's {folder_name} "
                f"folder, e.g. {example!r}")
    fault = name_fault(value, root, file_suffix)
    if fault is not None:
        return f"{input_name} {excerpt(value)} {fault}: choose another name, e.g. {example!r}"
    return None


def confined(input_name: str, value: str, root: str, folder_name: str, example: str,
             file_suffix: int | None = None) -> str:
    """The real path of `value` inside the folder `root`, or a ValueError with its `refusal`."""
    message = refusal(input_name, value, root, folder_name, example, file_suffix)
    if message is not None:
        raise ValueError(message)
    return os.path.realpath(os.path.join(os.path.realpath(root), value))
