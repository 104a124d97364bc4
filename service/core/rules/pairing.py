"""Pairing (seed 003): one record per call from events on two topics.

A pairing pipeline is a session pipeline whose sessions are calls: the two
services' events of one call are at most T apart, so with ``gap = T`` they
fall into one session, and calls of one pair of users (at least 2T apart in
the seed) into different ones. When the session closes, at its last event +
T + grace, it becomes one record instead of a summary:

- every source has an event: the combined record, on the output topic;
- some source has none: the lone record, when T + grace has passed without a
  partner, on ``lone_topic`` (the output topic unless set).

A call is one session and a session is closed once, so it never yields both.

The record merges one event per source, the earliest (equal times: the
smaller JSON text), taken in the order of ``sources``: a field comes from the
first of them that has it and is not null. The time field is replaced by
``time_field`` (default ``ts``) holding the earliest event's time as it was
written, so ``ts = min(ts1, ts2)``. Everything is chosen by event time and
content, never by arrival order.
"""

from __future__ import annotations

from typing import Any

import orjson

from service.config import PipelineConfig
from service.core.extract import field_getter
from service.core.rules.base import Derived, Rule

#: Per source index: the earliest event as [time, event], or None.
State = list[list[Any] | None]


class Pairing(Rule):
    kind = "pairing"

    def __init__(self, config: PipelineConfig) -> None:
        assert config.pairing is not None
        self.name = "pairing"
        self.sources = config.sources
        self.topic = config.output.topic
        self.lone_topic = config.pairing.lone_topic or config.output.topic
        self.ts_name = config.pairing.time_field
        self.get_time = field_getter(config.time) if config.time else None
        # A dotted time path leaves its top-level object in place; a plain one is replaced by ts.
        self.drop = config.time if config.time and "." not in config.time else None

    def init(self) -> State:
        return [None] * len(self.sources)

    def add(self, state: State, time_ms: int, event: dict[str, Any], source: int, stream_time: int, out: list[Derived]) -> State:
        if source >= len(state):
            source = 0  # a repartition record written before the sources list changed
        state[source] = _earlier(state[source], [time_ms, event])
        return state

    def merge(self, left: State, right: State, out: list[Derived]) -> State:
        return [_earlier(a, b) for a, b in zip(left, right)]

    def close(self, state: State, bounds: tuple[int, int], values: dict[str, Any], out: list[Derived]) -> None:
        present = [(i, item) for i, item in enumerate(state) if item is not None]
        if not present:
            return
        record: dict[str, Any] = {}
        for _, (_, event) in present:
            for name, value in event.items():
                if name != self.drop and record.get(name) is None:
                    record[name] = value
        earliest: list[Any] | None = present[0][1]
        for _, item in present[1:]:
            earliest = _earlier(earliest, item)
        assert earliest is not None  # the earlier of two present items
        written = self.get_time(earliest[1]) if self.get_time is not None else None
        record[self.ts_name] = written if written is not None else earliest[0]
        topic = self.topic if len(present) == len(state) else self.lone_topic
        names = ",".join(self.sources[i] for i, _ in present)
        out.append(Derived(topic, None, earliest[0], record, (("sessionizer.sources", names.encode()),)))


def _earlier(left: list[Any] | None, right: list[Any] | None) -> list[Any] | None:
    if left is None:
        return right
    if right is None:
        return left
    if left[0] != right[0]:
        return left if left[0] < right[0] else right
    return left if _text(left[1]) <= _text(right[1]) else right


def _text(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
