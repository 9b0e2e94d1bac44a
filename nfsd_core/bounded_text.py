"""Untrusted text, checked and parsed within bounds.

A setting can come from a stranger (a ComfyUI graph on a shared server, a file someone else
wrote). Before it is parsed its size is bounded, so a 10 MB string costs nothing; JSON is parsed
with a bounded nesting depth, so a 50,000-deep array is a clear refusal, not a RecursionError;
text that is not valid Unicode (a lone surrogate, which JSON can carry) is refused before it
reaches a tokenizer or the file system. Every refusal is a ValueError that names the setting and
quotes at most a short `excerpt` of what was given, so an error never repeats a huge input into
logs, histories or websockets.
"""

from __future__ import annotations

import json
import re
from typing import Any

EXCERPT_CHARS = 40  # of the input quoted in a refusal
WHITESPACE_CONTROLS = frozenset("\t\n\r")


def excerpt(value: Any, limit: int = EXCERPT_CHARS) -> str:
    """`value` as a short quotation for an error: a string's repr, anything else's repr unquoted, cut
    to `limit` characters with the total length named when it is longer."""
    if not isinstance(value, str):
        text = repr(value)
        return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value):,} characters)"


def first_lone_surrogate(text: str) -> int | None:
    """The index of the first lone surrogate in `text` (not valid Unicode: no file system, encoder or
    tokenizer takes it), or None."""
    try:
        text.encode("utf-8")
        return None
    except UnicodeEncodeError as error:
        return error.start


def check_text(name: str, text: Any, max_chars: int, controls: frozenset[str] = WHITESPACE_CONTROLS) -> str:
    """`text` if it is a string of at most `max_chars` characters of valid Unicode without control
    characters other than `controls`; else a ValueError naming `name`, the limit and the fault."""
    if not isinstance(text, str):
        raise ValueError(f"{name} must be text, got {type(text).__name__}")
    if len(text) > max_chars:
        raise ValueError(f"{name} is {len(text):,} characters long; give at most {max_chars:,}")
    surrogate = first_lone_surrogate(text)
    if surrogate is not None:
        raise ValueError(f"{name} holds a lone surrogate ({text[surrogate]!r}) at character {surrogate}, which is not "
                         "valid Unicode text: remove it")
    refused = "".join(chr(code) for code in (*range(32), 127) if chr(code) not in controls)
    control = re.search(f"[{re.escape(refused)}]", text)
    if control is not None:
        raise ValueError(f"{name} holds the control character {control.group()!r} at character {control.start()}: "
                         "remove it")
    return text


def nesting_depth(value: Any) -> int:
    """How deeply JSON-like lists and dicts nest in `value` (a scalar: 0), without recursion."""
    depth, pending = 0, [(value, 1)]
    while pending:
        item, level = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            depth = max(depth, level)
            pending.extend((child, level + 1) for child in children)
    return depth


def parse_json(name: str, text: Any, max_chars: int, max_depth: int, example: str = "") -> Any:
    """The JSON value in `text`, refused (ValueError naming `name`) when it is longer than
    `max_chars`, nests deeper than `max_depth`, or does not parse; `example` is a value that works."""
    check_text(name, text, max_chars)
    hint = f", e.g. {example}" if example else ""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:  # its message quotes no input, only where parsing stopped
        raise ValueError(f"{name} is not valid JSON{hint}: {error.msg} at line {error.lineno} column "
                         f"{error.colno}") from None
    except RecursionError:  # json's C parser stops at the interpreter's recursion limit
        raise ValueError(f"{name} nests lists or objects more than {max_depth} deep; give at most "
                         f"{max_depth} levels{hint}") from None
    if nesting_depth(value) > max_depth:
        raise ValueError(f"{name} nests lists or objects more than {max_depth} deep; give at most "
                         f"{max_depth} levels{hint}")
    return value
