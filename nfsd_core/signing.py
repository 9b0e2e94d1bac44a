"""The secret key that signs checkpoints (HMAC-SHA256), so that only states this server or user wrote resume.

A checkpoint folder may lie where strangers can write: ComfyUI's own `POST /upload/image` puts any
file into any subfolder of its output and temp folders. A plain digest anyone can recompute; a
signature needs the key. The key is 32 bytes from the operating system's secure randomness
(`secrets`), made on first use, in a file only its owner may read (mode 0600, its folder 0700),
kept outside every folder those strangers reach: for the library and the command line in the
user's configuration folder (`user_config_folder`), for ComfyUI in its user folder's system area
(see the Optimizer node). A checkpoint signed with another key (another server or user, or a key
deleted since) cannot be resumed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sys
from pathlib import Path

KEY_FILE = "checkpoint_signing.key"
KEY_BYTES = 32
CONFIG_ENV = "NFSD_CONFIG_DIR"  # overrides the configuration folder (tests, several installs under one user)


def user_config_folder() -> Path:
    """NFSD's folder in the user's configuration folder: $NFSD_CONFIG_DIR if set, else
    %APPDATA%\\nfsd (Windows), ~/Library/Application Support/nfsd (macOS) or
    $XDG_CONFIG_HOME/nfsd, by default ~/.config/nfsd (Linux and others)."""
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    home = Path.home()
    if os.name == "nt":
        base = Path(os.environ.get("APPDATA") or home / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    return base / "nfsd"


def load_key(folder: str | os.PathLike) -> bytes:
    """The signing key kept in `folder`, made there first if it has none (ValueError: a damaged key file)."""
    path = Path(folder) / KEY_FILE
    try:
        return read_key(path)
    except FileNotFoundError:
        pass
    Path(folder).mkdir(mode=0o700, parents=True, exist_ok=True)
    staged = path.with_name(f"{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(secrets.token_bytes(KEY_BYTES))
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(staged, path)  # appears whole, and never replaces a key another process made first
        except FileExistsError:
            pass
    finally:
        staged.unlink(missing_ok=True)
    return read_key(path)


def read_key(path: Path) -> bytes:
    """The key in the file `path` (FileNotFoundError if there is none; ValueError if it is not a key)."""
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
    with os.fdopen(descriptor, "rb") as file:
        key = file.read(KEY_BYTES + 1)
    if len(key) != KEY_BYTES:
        raise ValueError(f"the checkpoint signing key {path} is damaged ({len(key)} bytes, not {KEY_BYTES}): delete "
                         "it and a new one is made, but checkpoints signed with the old key can then not be resumed")
    return key


def sign(key: bytes, message: bytes) -> str:
    """The HMAC-SHA256 of `message` under `key`, as hex."""
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def is_signed(key: bytes, message: bytes, signature: object) -> bool:
    """Whether `signature` is `message`'s under `key` (compared in constant time)."""
    return isinstance(signature, str) and hmac.compare_digest(sign(key, message), signature)
