"""What every subcommand's module shares: the command line's error type, and argparse's check of counts."""

import argparse


class UsageError(Exception):
    """Bad command-line input; the message names the argument and the fix (`cli.main` prints it
    after the command's name and exits with status 2)."""


def at_least_one(text: str) -> int:
    """argparse type of a count (--steps, --workers): an integer >= 1 (argparse reports anything
    else as a usage error)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
