"""Getting the grouping key and the event time out of a decoded JSON event.

The same code runs in the Kafka source stage and in ``sessionizer process``,
so a record that is dead-lettered online is dead-lettered offline too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import methodcaller
from typing import Any

import orjson

from service.core.reasons import BAD_KEY, BAD_TIMESTAMP, INVALID_JSON, NO_KEY, NOT_AN_OBJECT

# Re-exported: custom aggregates raise it by this name (docs/rules.md, examples/aggregates.py).
from service.errors import BadRecord as BadRecord

Getter = Callable[[dict[str, Any]], Any]
#: Turns a record value into the event every pipeline reads (``parse_event`` for JSON); raises ``BadRecord``.
Decode = Callable[[bytes | None], dict[str, Any]]
#: Turns a framed record key into the bytes a pipeline grouped by ``@key`` groups by; raises ``BadRecord``.
KeyDecode = Callable[[bytes | None], bytes | None]

# Epoch numbers at or above this are milliseconds: 1e11 seconds is the year 5138,
# 1e11 milliseconds is 1973.
MS_THRESHOLD = 100_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


def field_getter(path: str) -> Getter:
    """A function returning the value at dotted ``path``, or None when absent.

    A top-level key that itself contains dots wins over the nested walk.
    """
    parts = path.split(".")
    if len(parts) == 1:
        getter: Getter = methodcaller("get", path)  # event.get(path), without a Python frame: it runs per event
        return getter
    if len(parts) == 2:
        # The common nested case (``details.page``), without a loop: it runs per event.
        outer, inner = parts

        def get_two(event: dict[str, Any]) -> Any:
            value = event.get(path)
            if value is not None:
                return value
            nested = event.get(outer)
            return nested.get(inner) if type(nested) is dict else None

        return get_two

    def get(event: dict[str, Any]) -> Any:
        value = event.get(path)
        if value is not None:
            return value
        value = event
        for part in parts:
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        return value

    return get


def parse_event(raw: bytes | memoryview | None) -> dict[str, Any]:
    """Decode one record value, which must be a JSON object."""
    if raw is None:
        raise BadRecord("empty value (tombstone)", INVALID_JSON)
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRecord(f"invalid JSON: {exc}", INVALID_JSON) from None
    if not isinstance(event, dict):
        raise BadRecord(f"expected a JSON object, got {type(event).__name__}", NOT_AN_OBJECT)
    return event


#: ``key = "@key"``: group by the Kafka record key itself, as Kafka Streams' ``groupByKey``.
RECORD_KEY = "@key"
#: The envelope's field for a record key (``@key`` is not a field of the event).
RECORD_KEY_FIELD = "key"


@dataclass(frozen=True)
class KeyExtractor:
    """The grouping key: one field, several making a composite key, or the record key.

    A single field gives its value as text (``"user_123"``, ``"42"``). Several
    fields give a JSON array of their texts (``["u1","u2"]``), which cannot be
    confused whatever characters the values hold. ``@key`` takes the record
    key's bytes as they are, so sources already keyed by the grouping key need
    no repartitioning (``service.core.topology``).
    """

    paths: tuple[str, ...]
    _getters: tuple[Getter, ...] = field(init=False, repr=False, compare=False)
    #: The one top-level field of a plain key, for the per-event fast path; None otherwise.
    plain_field: str | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_getters", tuple(field_getter(p) for p in self.paths))
        plain = len(self.paths) == 1 and "." not in self.paths[0] and self.paths[0] != RECORD_KEY
        object.__setattr__(self, "plain_field", self.paths[0] if plain else None)

    @property
    def record_key(self) -> bool:
        return self.paths == (RECORD_KEY,)

    @property
    def output_field(self) -> str | None:
        """The output's one key field when the key is one field (its path, or ``key`` for ``@key``); None for several."""
        if len(self.paths) != 1:
            return None
        return RECORD_KEY_FIELD if self.paths[0] == RECORD_KEY else self.paths[0]

    def __call__(self, event: dict[str, Any], record_key: bytes | None = None) -> bytes:
        top = self.plain_field
        if top is not None:
            value = event.get(top)
            if type(value) is str and value:  # the common case, decided in two steps
                return value.encode()
        getters = self._getters
        if len(getters) == 1:
            if self.paths[0] == RECORD_KEY:
                if not record_key:
                    raise BadRecord('no key: the record has no key (key = "@key")', NO_KEY)
                return record_key
            return _key_text(self.paths[0], getters[0](event)).encode()
        return orjson.dumps([_key_text(p, g(event)) for p, g in zip(self.paths, getters)])

    def fields(self, key: bytes) -> dict[str, str]:
        """The key's field values by path, for the output envelope."""
        single = self.output_field
        if single is not None:
            # A field's key is its value's UTF-8; only a record key (``@key``) can be other bytes.
            return {single: key.decode(errors="replace")}
        return dict(zip(self.paths, orjson.loads(key)))


def _key_text(path: str, value: Any) -> str:
    if isinstance(value, str):
        if not value:
            raise BadRecord(f"key field {path!r} is empty", BAD_KEY)
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if value is None:
        raise BadRecord(f"no key: field {path!r} is missing or null", NO_KEY)
    raise BadRecord(f"key field {path!r} has type {type(value).__name__}; expected a string or an integer", BAD_KEY)


@dataclass(frozen=True)
class TimeExtractor:
    """Event time in epoch milliseconds, from a field or the Kafka record timestamp.

    ``auto`` reads numbers below 1e11 as epoch seconds and larger ones as epoch
    milliseconds, and strings as ISO-8601 (a time without zone is UTC). When the
    field is absent the record timestamp is used, so events from producers that
    set no time field still work.
    """

    path: str | None
    format: str = "auto"
    _get: Getter | None = field(init=False, repr=False, compare=False)
    #: The top-level field for the per-event fast path (an int of milliseconds); None otherwise.
    plain_field: str | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_get", field_getter(self.path) if self.path else None)
        fast = self.path is not None and "." not in self.path and self.format in ("auto", "epoch_ms")
        object.__setattr__(self, "plain_field", self.path if fast else None)

    def __call__(self, event: dict[str, Any], record_ms: int | None) -> int:
        top = self.plain_field
        if top is not None:
            value = event.get(top)
            # Epoch milliseconds as an int: the common case, decided in two steps.
            if type(value) is int and (value >= MS_THRESHOLD or self.format == "epoch_ms"):
                return value
        get = self._get
        value = get(event) if get is not None else None
        if value is None:
            if record_ms is None or record_ms < 0:
                where = f"field {self.path!r} is missing" if self.path else "no time field is configured"
                raise BadRecord(f"no timestamp: {where} and the record has no timestamp", BAD_TIMESTAMP)
            return record_ms
        return parse_time_ms(value, self.format, self.path or "timestamp")


def parse_time_ms(value: Any, fmt: str, path: str) -> int:
    if isinstance(value, bool):
        raise BadRecord(f"bad timestamp in {path!r}: {value!r} is a boolean", BAD_TIMESTAMP)
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text) if fmt != "iso8601" else None
        except ValueError:
            number = None
        if number is None:
            if fmt in ("epoch_s", "epoch_ms"):
                raise BadRecord(f"bad timestamp in {path!r}: {value!r} is not a number ({fmt})", BAD_TIMESTAMP)
            return _parse_iso(text, path)
        value = number
    if isinstance(value, (int, float)):
        if value != value or value in (float("inf"), float("-inf")):
            raise BadRecord(f"bad timestamp in {path!r}: {value!r}", BAD_TIMESTAMP)
        if fmt == "iso8601":
            raise BadRecord(f"bad timestamp in {path!r}: {value!r} is a number, expected ISO-8601 text", BAD_TIMESTAMP)
        if fmt == "epoch_ms" or (fmt == "auto" and abs(value) >= MS_THRESHOLD):
            return int(value)
        return int(round(value * 1000))
    raise BadRecord(f"bad timestamp in {path!r}: {type(value).__name__} {value!r}", BAD_TIMESTAMP)


def _parse_iso(text: str, path: str) -> int:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadRecord(f"bad timestamp in {path!r}: {text!r} is not ISO-8601", BAD_TIMESTAMP) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _ONE_MS
