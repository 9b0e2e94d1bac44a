"""Bounds on settings, checked when a settings object is made.

Settings can come from untrusted text (a ComfyUI graph's JSON, a config file). A number out of
range there must be refused with its name, the range and the value given, not reach a
constructor that allocates 2^40 rows or divides by zero. A bounded dataclass field is declared
with `whole(default, low, high)` or `real(default, low, high)` (tuples: every element), and the
dataclass's `__post_init__` calls `check_ranges(self)`. NaN and infinities are never in range.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from .bounded_text import excerpt

RANGE = "range"
WHOLE = "whole"


def whole(default: Any, low: int, high: int) -> Any:
    """A dataclass field holding whole numbers (or a tuple of them) in [low, high]."""
    return dataclasses.field(default=default, metadata={RANGE: (low, high), WHOLE: True})


def real(default: Any, low: float, high: float) -> Any:
    """A dataclass field holding finite real numbers (or a tuple of them) in [low, high]."""
    return dataclasses.field(default=default, metadata={RANGE: (low, high), WHOLE: False})


def setting_bounds(settings_type: type, name: str) -> tuple[float, float]:
    """(low, high) of the bounded field `name` of the settings dataclass `settings_type`, for
    widgets and CLI options that must accept what the settings accept."""
    (item,) = [item for item in dataclasses.fields(settings_type) if item.name == name]
    return item.metadata[RANGE]


def is_finite_number(value: Any) -> bool:
    """A real number (not a bool) that is neither NaN nor infinite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_number(name: str, value: Any, low: float, high: float, whole_number: bool = False) -> None:
    """ValueError naming `name` unless `value` is a (whole) number in [low, high]."""
    kind = "a whole number" if whole_number else "a finite number"
    fits_kind = isinstance(value, int) if whole_number else is_finite_number(value)
    if isinstance(value, bool) or not fits_kind or not low <= value <= high:
        raise ValueError(f"{name} must be {kind} from {low:g} to {high:g}, got {excerpt(value)}")


def check_ranges(settings: Any) -> None:
    """Check every bounded field of the dataclass instance `settings` (see the module doc)."""
    for item in dataclasses.fields(settings):
        if RANGE not in item.metadata:
            continue
        value = getattr(settings, item.name)
        for element in value if isinstance(value, tuple) else (value,):
            check_number(item.name, element, *item.metadata[RANGE], whole_number=item.metadata[WHOLE])


def json_ready(value: Any) -> Any:
    """`value` (dicts, lists, tuples, numbers, strings) with every NaN or infinite float as None:
    strict JSON has no NaN, and a statistic that overflowed must not make the whole record unreadable."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    return value
