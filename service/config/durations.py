"""Durations as people write them in config files: ``"30m"``, ``"2s"``, ``"500ms"``."""

from __future__ import annotations

import re

_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")

DURATION_HELP = "a duration such as '500ms', '2s', '30m', '1h30m' or a whole number of milliseconds"


def parse_duration_ms(value: object) -> int:
    """Return ``value`` in milliseconds, or raise ``ValueError``.

    A bare integer is read as milliseconds, the unit Kafka uses everywhere.
    """
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        if value < 0:
            raise ValueError(value)
        return value
    if not isinstance(value, str):
        raise ValueError(value)
    text = value.strip().lower().replace(" ", "")
    if text.isdigit():
        return int(text)
    pos = 0
    total = 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            raise ValueError(value)
        total += float(match.group(1)) * _UNITS_MS[match.group(2)]
        pos = match.end()
    if pos == 0 or pos != len(text):
        raise ValueError(value)
    return int(round(total))


def format_duration_ms(ms: int) -> str:
    """The shortest exact spelling of ``ms``, for logs and docs."""
    for unit in ("d", "h", "m", "s"):
        size = _UNITS_MS[unit]
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
