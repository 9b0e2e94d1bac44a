"""A folder nobody can write to, root included: CI runs the suite as root, whom file modes do not bind."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest


@contextlib.contextmanager
def unwritable(folder: Path):
    """`folder` unwritable for the block: mode 0o500 for a normal user; for root the immutable
    attribute (chattr +i), where the file system has one; elsewhere the test skips with the reason."""
    if os.name != "posix":
        pytest.skip("needs POSIX file permissions")
    if os.geteuid() != 0:
        folder.chmod(0o500)
        try:
            yield
        finally:
            folder.chmod(0o700)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("root ignores file modes, and this file system has no immutable attribute (chattr +i)")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(folder)], check=True)
