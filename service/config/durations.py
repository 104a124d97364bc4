"""Durations and sizes as people write them in config files: ``"30m"``, ``"500ms"``, ``"64MiB"``."""

from __future__ import annotations

import re

_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")

DURATION_HELP = "a duration such as '500ms', '2s', '30m', '1h30m' or a whole number of milliseconds"


def _whole_or_text(value: object) -> int | str:
    """A non-negative whole number as it is, or the text to parse (lower case, no spaces); else ``ValueError``."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        if value < 0:
            raise ValueError(value)
        return value
    if not isinstance(value, str):
        raise ValueError(value)
    text = value.strip().lower().replace(" ", "")
    return int(text) if text.isdigit() else text


def parse_duration_ms(value: object) -> int:
    """Return ``value`` in milliseconds, or raise ``ValueError``.

    A bare integer is read as milliseconds, the unit Kafka uses everywhere.
    """
    text = _whole_or_text(value)
    if isinstance(text, int):
        return text
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


_UNITS_BYTES = {
    "b": 1,
    "kb": 1_000,
    "mb": 1_000_000,
    "gb": 1_000_000_000,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)(b|kb|mb|gb|kib|mib|gib)")

SIZE_HELP = "a size such as '64MiB', '512MB', '1GiB' or a whole number of bytes"


def parse_size_bytes(value: object) -> int:
    """Return ``value`` in bytes, or raise ``ValueError``; a bare integer is bytes."""
    text = _whole_or_text(value)
    if isinstance(text, int):
        return text
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(value)
    return int(round(float(match.group(1)) * _UNITS_BYTES[match.group(2)]))


def format_size_bytes(size: int) -> str:
    """The shortest exact spelling of ``size`` in binary units, for logs and docs."""
    for unit in ("GiB", "MiB", "KiB"):
        scale = _UNITS_BYTES[unit.lower()]
        if size and size % scale == 0:
            return f"{size // scale}{unit}"
    return str(size)
