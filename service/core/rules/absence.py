"""Absence rules: "``first`` and no ``then``" (seed 004's abandoned cart).

Two flavours, both per session:

- without ``within``, "until the session closes": the session holds a first
  with no then at the same time or later. Decided when the session closes, so
  the record carries the session summary. At most one per session; it carries
  the latest first (the one no then followed).
- with ``within = T``: each first at time a with no then in [a, a + T] in its
  session derives one record. That is certain once stream time passes
  a + T + grace (every event up to a + T has arrived by then), or when the
  session closes, whichever comes first; the record is produced then. It
  carries the first but no summary: the session is still open and what it
  holds so far depends on arrival order.

An event meeting both conditions answers itself. Both decisions are functions
of the session's final set of events, which does not depend on arrival order
(docs/rules.md).
"""

from __future__ import annotations

from typing import Any

import orjson

from service.config import RuleConfig
from service.core.closing import closed
from service.core.conditions import compile_condition
from service.core.rules.base import Derived, Keeper, Rule


def _later(left: list[Any] | None, right: list[Any] | None) -> list[Any] | None:
    """The later of two ``[time, kept]``; equal times are ordered by the JSON text, not by arrival."""
    if left is None:
        return right
    if right is None:
        return left
    if left[0] != right[0]:
        return left if left[0] > right[0] else right
    return left if _text(left[1]) >= _text(right[1]) else right


def _text(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


class _Absence(Rule):
    def __init__(self, config: RuleConfig) -> None:
        self.name = config.name
        self.topic = config.topic
        self.event = config.event
        self.is_first = compile_condition(config.first)
        self.is_then = compile_condition(config.then)
        self.keep = Keeper(config.keep)


class AbsenceUntilClose(_Absence):
    """State ``[latest first as [time, kept] or None, latest then time or None]``."""

    kind = "absence"

    def init(self) -> list[Any]:
        return [None, None]

    def add(self, state: list[Any], time_ms: int, event: dict[str, Any], source: int, stream_time: int, out: list[Derived]) -> list[Any]:
        if self.is_first(event):
            state[0] = _later(state[0], [time_ms, self.keep(event)])
        if self.is_then(event) and (state[1] is None or time_ms > state[1]):
            state[1] = time_ms
        return state

    def merge(self, left: list[Any], right: list[Any], out: list[Derived]) -> list[Any]:
        then = right[1] if left[1] is None else left[1] if right[1] is None else max(left[1], right[1])
        return [_later(left[0], right[0]), then]

    def close(self, state: list[Any], bounds: tuple[int, int], values: dict[str, Any], out: list[Derived]) -> None:
        first, then_time = state
        if first is None or (then_time is not None and then_time >= first[0]):
            return
        record = {"first": first[1], "first_time_ms": first[0], "session": values}
        out.append(Derived(self.topic, self.event, bounds[1], record))


class AbsenceWithin(_Absence):
    """State ``[pending firsts as [time, kept], then times]``.

    Pending firsts have no then within T so far. Then times are kept while a
    first at or before them can still arrive (stream time <= then + grace).
    """

    kind = "absence_within"

    def __init__(self, config: RuleConfig, grace_ms: int) -> None:
        super().__init__(config)
        assert config.within_ms is not None
        self.within = config.within_ms
        self.grace = grace_ms

    def init(self) -> list[Any]:
        return [[], []]

    def add(self, state: list[Any], time_ms: int, event: dict[str, Any], source: int, stream_time: int, out: list[Derived]) -> list[Any]:
        is_first = self.is_first(event)
        is_then = self.is_then(event)
        if not (is_first or is_then):
            return state
        pending, thens = state
        thens = [t for t in thens if not closed(t + self.grace, stream_time)]
        if is_then:
            pending = [p for p in pending if not p[0] <= time_ms <= p[0] + self.within]
            thens.append(time_ms)
        if is_first and not any(time_ms <= t <= time_ms + self.within for t in thens):
            pending.append([time_ms, self.keep(event)])
        return [pending, thens]

    def merge(self, left: list[Any], right: list[Any], out: list[Derived]) -> list[Any]:
        pending = self._unanswered(left[0], right[1]) + self._unanswered(right[0], left[1])
        return [pending, left[1] + right[1]]

    def deadline(self, state: list[Any]) -> int | None:
        if not state[0]:
            return None
        return min(self._certain_after(first) for first in state[0])

    def expire(self, state: list[Any], stream_time: int, out: list[Derived]) -> list[Any]:
        still = []
        for first in state[0]:
            if closed(self._certain_after(first), stream_time):
                out.append(self._absent(first))
            else:
                still.append(first)
        return [still, state[1]]

    def close(self, state: list[Any], bounds: tuple[int, int], values: dict[str, Any], out: list[Derived]) -> None:
        for first in state[0]:
            out.append(self._absent(first))

    def _certain_after(self, first: list[Any]) -> int:
        """Once stream time passes this, every event up to first + T has arrived."""
        time_ms: int = first[0]
        return time_ms + self.within + self.grace

    def _unanswered(self, pending: list[list[Any]], thens: list[int]) -> list[list[Any]]:
        return [p for p in pending if not any(p[0] <= t <= p[0] + self.within for t in thens)]

    def _absent(self, first: list[Any]) -> Derived:
        deadline = first[0] + self.within
        values = {"first": first[1], "first_time_ms": first[0], "deadline_ms": deadline}
        return Derived(self.topic, self.event, deadline, values)
