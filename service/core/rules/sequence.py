"""Sequence rules: "``first`` followed by ``then`` within T" (seed 000's purchase_completed).

What is matched: every pair of two distinct events of one session, one meeting
``first`` at time a and one meeting ``then`` at time b, with a <= b <= a + T.
Each such pair derives one record, the moment it is complete: when the second
of the two arrives, or when an out-of-order event merges the sessions holding
them. Repeated events therefore derive one record per pair: two carts and one
payment within T are two matches, each carrying its own cart.

Why every pair, and not "the latest first before each then": a record is
produced at once and never taken back, so whether a pair matches must not
depend on events that may still arrive. "Latest first" does: a first that
arrives late, between a matched pair, would have been the partner had events
come in time order. Whether a and b match depends on a and b alone, so the
records derived are the same whatever the arrival order; the two events of a
pair are in one session from the moment the pair is complete on, so each pair
is found exactly once.

State per session: the firsts and thens that can still take part in a match.
A first at a can pair only with a then at or before a + T, which arrives while
stream time is at most a + T + grace; a then at b only with a first at or
before b, which arrives while stream time is at most b + grace. After that,
``closed`` says they are spent and they are dropped.
"""

from __future__ import annotations

from typing import Any

from service.config import RuleConfig
from service.core.closing import closed
from service.core.conditions import compile_condition
from service.core.rules.base import Derived, Keeper, Rule

#: [[time, kept], ...] for firsts and for thens
State = list[list[list[Any]]]


class Sequence(Rule):
    kind = "sequence"

    def __init__(self, config: RuleConfig, grace_ms: int) -> None:
        assert config.within_ms is not None
        self.name = config.name
        self.topic = config.topic
        self.event = config.event
        self.within = config.within_ms
        self.grace = grace_ms
        self.is_first = compile_condition(config.first)
        self.is_then = compile_condition(config.then)
        self.keep = Keeper(config.keep)

    def init(self) -> State:
        return [[], []]

    def add(self, state: State, time_ms: int, event: dict[str, Any], source: int, stream_time: int, out: list[Derived]) -> State:
        is_first = self.is_first(event)
        is_then = self.is_then(event)
        if not (is_first or is_then):
            return state
        firsts, thens = self._live(state, stream_time)
        kept = self.keep(event)
        # Against the events already there, so an event meeting both conditions never pairs with itself.
        if is_then:
            for first_time, first in firsts:
                if first_time <= time_ms <= first_time + self.within:
                    out.append(self._match(first_time, first, time_ms, kept))
        if is_first:
            for then_time, then in thens:
                if time_ms <= then_time <= time_ms + self.within:
                    out.append(self._match(time_ms, kept, then_time, then))
        if is_first:
            firsts.append([time_ms, kept])
        if is_then:
            thens.append([time_ms, kept])
        return [firsts, thens]

    def merge(self, left: State, right: State, out: list[Derived]) -> State:
        for firsts, thens in ((left[0], right[1]), (right[0], left[1])):
            for first_time, first in firsts:
                for then_time, then in thens:
                    if first_time <= then_time <= first_time + self.within:
                        out.append(self._match(first_time, first, then_time, then))
        return [left[0] + right[0], left[1] + right[1]]

    def _live(self, state: State, stream_time: int) -> State:
        """The firsts and thens that a future event could still match."""
        reach = self.within + self.grace
        firsts = [f for f in state[0] if not closed(f[0] + reach, stream_time)]
        thens = [t for t in state[1] if not closed(t[0] + self.grace, stream_time)]
        return [firsts, thens]

    def _match(self, first_time: int, first: dict[str, Any], then_time: int, then: dict[str, Any]) -> Derived:
        values = {"first": first, "then": then, "first_time_ms": first_time, "then_time_ms": then_time}
        return Derived(self.topic, self.event, then_time, values)
