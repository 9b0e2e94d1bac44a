"""`python -m nfsd_core batch JOBS`: many command-line runs from one file, checked whole before any run.

JOBS is JSONL (one JSON object per line) or CSV (a header row, then a row per run). Each run is a
`generate` (2D: a latent canvas on a diffusers model) or `demo3d` (3D: text to NeRF on the 3D
prior) command, named by the field `command` (or --command for every run), with the command's
own flags as fields, without their dashes (`steps`, `checkpoint-every` or `checkpoint_every`). A
flag of several values (`rule`) takes a JSON list or, in CSV, values separated by spaces; an empty
cell or a JSON null leaves a flag at its default. Every run names its own `output` folder.

Each line is parsed by its command's own parser and checked by its own checks, so a job is
exactly a command-line run; one bad line refuses the whole file, naming the line and the field,
before any model loads. Every run keeps a checkpoint (default: `checkpoint/` in its output), so
an interrupted batch resumes each unfinished run where it stopped, and the records file (default:
JOBS's name + `.records.jsonl`) holds each finished run, which is never run again.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..usage import UsageError
from .journal import Journal, JournalError
from .runner import CLUSTER_EXTRA, add_batch_arguments, batch_options, ray_installed, run_tasks, summary_table
from .tasks import Task

BATCH_COMMANDS = ("generate", "demo3d")  # the commands whose parsers set a `job` (see nfsd_core.cli)
RECORDS_SETTINGS = {"records": "nfsd batch", "version": 1}
TRUE, FALSE = ("true", "yes", "1"), ("false", "no", "0")


@dataclass(frozen=True)
class Job:
    """One checked run of a JOBS file: where it was written (`jobs.csv line 3`) and its task."""

    where: str
    task: Task


def add_batch(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("batch", help="many generate / demo3d runs from a JSONL or CSV file, on Ray",
                                   description=__doc__.split("\n\n", 1)[1],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("jobs", type=Path, metavar="JOBS", help="a .jsonl or .csv file, one run per line or row")
    parser.add_argument("--command", choices=BATCH_COMMANDS, default=None,
                        help="the command of the runs that name none")
    parser.add_argument("--records", type=Path, default=None,
                        help="the finished runs' records (default: JOBS's name + .records.jsonl, beside it)")
    add_batch_arguments(parser)
    parser.set_defaults(handler=run_batch)


def run_batch(args: argparse.Namespace) -> int:
    if args.address and not args.in_process and not ray_installed():
        raise UsageError(f"--address {args.address} needs Ray, which is not installed here: {CLUSTER_EXTRA}")
    jobs = read_jobs(args.jobs, args.command)
    records = args.records or args.jobs.with_name(args.jobs.stem + ".records.jsonl")
    try:
        journal = Journal(records, RECORDS_SETTINGS)
    except JournalError as error:
        raise UsageError(f"--records: {error}") from error
    for job in jobs:
        try:
            journal.check(job.task.name, job.task.identity)
        except JournalError as error:
            raise UsageError(f"{job.where}: {error}") from error
    tasks = [job.task for job in jobs]
    outcomes = run_tasks(tasks, batch_options(args), journal, description="batch")
    print(summary_table(tasks, outcomes))
    print(f"records: {records}")
    return 0 if all(outcome.status != "failed" for outcome in outcomes.values()) else 1


def read_jobs(path: Path, default_command: str | None = None) -> list[Job]:
    """Every run of a JOBS file, parsed and checked; a UsageError names the first bad line and field."""
    jobs = [read_job(f"{path} line {line}", fields, default_command) for line, fields in read_rows(path)]
    if not jobs:
        raise UsageError(f"JOBS: {path} holds no runs")
    first: dict[str, str] = {}
    for job in jobs:
        if job.task.name in first:
            raise UsageError(f"{job.where}, field 'output': {job.task.name} is also the output of "
                             f"{first[job.task.name]}; every run needs its own output folder")
        first[job.task.name] = job.where
    return jobs


def read_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, fields) of each run in a .jsonl or .csv file."""
    if not path.is_file():
        raise UsageError(f"JOBS: {path} is not a file")
    text = path.read_text(encoding="utf-8-sig")  # a spreadsheet's CSV may start with a byte-order mark
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        rows = []
        for fields in reader:
            if None in fields:
                raise UsageError(f"{path} line {reader.line_num}: more cells than the header has names")
            rows.append((reader.line_num, fields))
        return rows
    if path.suffix.lower() not in (".jsonl", ".ndjson"):
        raise UsageError(f"JOBS: {path} must be a .jsonl or .csv file")
    rows = []
    for line, content in enumerate(text.splitlines(), 1):
        if not content.strip():
            continue
        try:
            fields = json.loads(content)
        except json.JSONDecodeError as error:
            raise UsageError(f"{path} line {line}: not JSON ({error})") from None
        if not isinstance(fields, dict):
            raise UsageError(f"{path} line {line}: not a JSON object of fields")
        rows.append((line, fields))
    return rows


def read_job(where: str, fields: dict[str, Any], default_command: str | None) -> Job:
    """One run: its fields as the command's flags, parsed and checked as the command line would."""
    from ..cli import build_parser, command_parsers, parse_command

    named = {str(name).strip().lower().replace("_", "-"): (str(name).strip(), value) for name, value in fields.items()}
    command = named.pop("command", (None, None))[1] or default_command
    if command not in BATCH_COMMANDS:
        problem = "missing (or pass --command)" if command is None else f"{command!r} cannot run in a batch"
        raise UsageError(f"{where}, field 'command': {problem}; one of {', '.join(BATCH_COMMANDS)}")
    parser = command_parsers(build_parser())[command]
    argv, given = command_line(parser, named, where)
    try:
        args = parse_command(command, argv)
        if args.checkpoint_dir is None:  # every run of a batch can resume
            args.checkpoint_dir = str(Path(args.output) / "checkpoint")
        task = args.job(args)
    except UsageError as error:
        raise UsageError(located(where, str(error), named)) from error
    identity = json.loads(json.dumps({"command": command, **{dest: getattr(args, dest) for dest in given}},
                                     default=str))
    return Job(where, replace(task, identity=identity))


def command_line(parser: argparse.ArgumentParser, named: dict[str, tuple[str, Any]],
                 where: str) -> tuple[list[str], list[str]]:
    """The command-line arguments of a run's fields, and the names (dests) of the flags given."""
    flags = {option[2:]: action for action in parser._actions for option in action.option_strings
             if option.startswith("--") and action.dest != "help"}
    argv, given = [], []
    for flag, (field, value) in named.items():
        if value is None or value == "":
            continue
        action = flags.get(flag)
        if action is None:
            raise UsageError(f"{where}: unknown field {field!r}; {parser.prog.split()[-1]} takes command, "
                             + ", ".join(sorted(flags)))
        given.append(action.dest)
        if action.nargs == 0:  # a switch
            text = str(value).strip().lower()
            if text not in TRUE + FALSE:
                raise UsageError(f"{where}, field {field!r}: true or false, got {value!r}")
            argv += [f"--{flag}"] * (text in TRUE)
        elif action.nargs in ("+", "*"):
            argv += [f"--{flag}", *(map(str, value) if isinstance(value, list) else str(value).split())]
        elif isinstance(value, (list, dict)):
            raise UsageError(f"{where}, field {field!r}: takes one value, got {value!r}")
        else:
            argv.append(f"--{flag}={value}")
    missing = [f"{flag!r}" for flag, action in flags.items()
               if (action.required or flag == "output") and action.dest not in given]
    if missing:
        raise UsageError(f"{where}: missing field {', '.join(missing)}; every run of a batch names its own "
                         "output, and its command's required flags")
    return argv, given


def located(where: str, message: str, named: dict[str, tuple[str, Any]]) -> str:
    """A command's error, said of the field it is about (the first flag it names)."""
    flag = re.search(r"--([a-z0-9-]+)", message)
    text = re.sub(r"^(argument )?--[a-z0-9-]+: ", "", message)
    if flag is None:
        return f"{where}: {text}"
    return f"{where}, field {named.get(flag.group(1), (flag.group(1),))[0]!r}: {text}"
