"""A batch's record of finished runs, one JSON line each, so an interrupted batch resumes where it stopped."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..identity import describe_differences


class JournalError(ValueError):
    """A journal that cannot be used for this batch; the message names the file and what to do."""


class Journal:
    """Finished runs by name: `done[name]` is what the run returned, `identities[name]` the settings
    it ran with (when its task gave them).

    The first line holds the batch's settings; a journal of other settings is refused. Only the
    batch's own process writes it, a whole line at a time, flushed to disk; a last line cut short
    (the process killed while writing) is ignored, so that run counts as not finished.
    """

    def __init__(self, path: Path, settings: dict):
        self.path, self.done, self.identities = Path(path), {}, {}
        if not self.path.is_file():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._append(settings)
            return
        whole, newline, cut = self.path.read_bytes().rpartition(b"\n")
        if cut:  # a last line without its newline was cut short
            with self.path.open("r+b") as file:
                file.truncate(len(whole + newline))
        entries = []
        for number, line in enumerate(whole.decode().splitlines(), 1):
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                raise JournalError(f"{self.path} line {number} is not JSON: delete the file to start over, "
                                   "or choose another one") from None
        if not entries:
            self._append(settings)
        elif entries[0] != settings:
            raise JournalError(f"{self.path} belongs to a run with other settings ({entries[0]}); delete it or "
                               "choose another output")
        for entry in entries[1:]:
            self.done[entry["key"]] = entry["records"]
            if "identity" in entry:
                self.identities[entry["key"]] = entry["identity"]

    def check(self, key: str, identity: dict | None) -> None:
        """Refuse `key` if the journal holds it as finished with other settings than `identity`."""
        if key in self.done and self.identities.get(key) != identity:
            raise JournalError(f"{self.path} records {key!r} as finished with other settings "
                               f"({describe_differences(self.identities.get(key), identity)}); delete its line "
                               "there to run it again with these settings")

    def add(self, key: str, records: Any, identity: dict | None = None) -> None:
        self.done[key] = records
        entry = {"key": key, "records": records}
        if identity is not None:
            self.identities[key] = entry["identity"] = identity
        self._append(entry)

    def _append(self, entry: dict) -> None:
        with self.path.open("a") as file:
            file.write(json.dumps(entry) + "\n")
            file.flush()
            os.fsync(file.fileno())
