"""A resumable benchmark's record of finished runs."""

from __future__ import annotations

import json
from pathlib import Path


class Journal:
    """Finished runs, one JSON line each, so an interrupted benchmark resumes where it stopped.

    The first line holds the settings; a journal of other settings is refused.
    """

    def __init__(self, path: Path, settings: dict):
        self.path, self.done = path, {}
        if path.is_file():
            lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            if lines[0] != settings:
                raise SystemExit(f"{path} belongs to a run with other settings ({lines[0]}); "
                                 "delete it or choose another --output")
            self.done = {entry["key"]: entry["records"] for entry in lines[1:]}
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(settings) + "\n")

    def add(self, key: str, records: list[dict]) -> None:
        self.done[key] = records
        with self.path.open("a") as file:
            file.write(json.dumps({"key": key, "records": records}) + "\n")
