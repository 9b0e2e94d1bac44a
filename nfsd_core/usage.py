"""The command line's one error type, shared by every subcommand's module."""


class UsageError(Exception):
    """Bad command-line input; the message names the argument and the fix (`cli.main` prints it
    after the command's name and exits with status 2)."""
