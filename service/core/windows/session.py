"""Session windows: activity separated by more than ``gap`` of silence.

A session spans [first event time, last event time]. An event within ``gap`` of
a session (inclusive) joins it; one within ``gap`` of two sessions merges them,
and their aggregates merge too (seed 004's AllOfR story).

Caps, which Kafka Streams does not have: ``max_events`` closes a session the
moment it holds that many events, and ``max_duration`` bounds end - start. An
event that does not fit a capped session starts a new one, so sessions of one
key may then overlap in time; each accepted event still counts exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.core.aggregates import Aggregate
from service.core.closing import closed
from service.core.inline import adder
from service.core.windows.base import WindowKindBase

#: Close time of a session that reached ``max_events``: closed at any stream time.
CLOSE_NOW = -(2**62)


@dataclass(slots=True)
class Session:
    start: int
    end: int
    count: int
    aggs: list[Any]
    #: One state per rule (``service.core.windows.with_rules``); None in a pipeline without rules.
    rules: list[Any] | None = None


class SessionWindows(WindowKindBase[Session]):
    partial_late = False

    def __init__(
        self,
        gap_ms: int,
        grace_ms: int,
        aggregates: tuple[Aggregate, ...] = (),
        max_duration_ms: int | None = None,
        max_events: int | None = None,
    ) -> None:
        self.gap = gap_ms
        self.grace = grace_ms
        self.aggregates = aggregates
        #: Adds an event to a session's aggregate states: it runs for every event (``service.core.inline``).
        self._add_to = adder(aggregates)
        self.max_duration = max_duration_ms
        self.max_events = max_events
        self.capped = max_duration_ms is not None or max_events is not None
        #: An uncapped session's close time is its end plus this (``close_time``).
        self._reach = gap_ms + grace_ms

    def close_time(self, session: Session) -> int:
        """Stream time after which no acceptable event can change ``session``.

        Accepted events are never more than ``grace`` behind stream time, and an
        event can reach a session up to ``gap`` after its end (or, with a
        duration cap, up to ``max_duration`` after its start).
        """
        if self.max_events is not None and session.count >= self.max_events:
            return CLOSE_NOW
        reach = session.end + self.gap
        if self.max_duration is not None:
            reach = min(reach, session.start + self.max_duration)
        return reach + self.grace

    def next_close(self, sessions: list[Session]) -> int:
        # Every commit asks this of every changed key: uncapped, it is the earliest end plus gap and grace.
        if self.capped:
            return super().next_close(sessions)
        if len(sessions) == 1:
            return sessions[0].end + self._reach
        return min([s.end for s in sessions]) + self._reach

    def late_reason(self, time_ms: int, stream_time: int) -> str | None:
        # The earliest session an event at time_ms could join ends at
        # time_ms - gap, so closes at time_ms + grace: if that one is closed the
        # event could belong to a session already emitted.
        if closed(time_ms + self.grace, stream_time):
            return f"event time {time_ms} is more than grace ({self.grace} ms) behind stream time {stream_time}"
        return None

    def add(
        self, sessions: list[Session], time_ms: int, event: dict[str, Any], limit: int,
        source: int = 0, derived: list[Any] | None = None, stream_time: int | None = None,
    ) -> int:
        """Put the event into ``sessions``; return how many sessions were merged away.

        ``source`` and ``derived`` are for rules (``SessionWindowsWithRules``).
        """
        low = time_ms - self.gap
        high = time_ms + self.gap
        # The common cases first, without building the list of touching sessions:
        # the event extends the key's one open session, or starts the key's next one.
        if len(sessions) == 1:
            only = sessions[0]
            if only.start > high or only.end < low:
                sessions.append(self._new(time_ms, event))
                return 0
            if not self.capped:
                self._add_event(only, time_ms, event)
                return 0
        elif not sessions:
            sessions.append(self._new(time_ms, event))
            return 0
        elif len(sessions) == 2 and not self.capped:
            # The key's previous session is over and awaits its close (windows close at commits),
            # and its next one has begun: the event most often extends one of the two.
            first, second = sessions
            reaches_first = first.start <= high and first.end >= low
            if reaches_first != (second.start <= high and second.end >= low):
                self._add_event(first if reaches_first else second, time_ms, event)
                return 0
        touching = [s for s in sessions if s.start <= high and s.end >= low]
        if not touching:
            sessions.append(self._new(time_ms, event))
            return 0
        if not self.capped or self._fits(touching, time_ms):
            target = touching[0]
            for other in touching[1:]:
                self._absorb(target, other)
                sessions.remove(other)
            self._add_event(target, time_ms, event)
            return len(touching) - 1
        # Caps forbid merging them all: join the nearest session that has room.
        touching.sort(key=lambda s: (_distance(s, time_ms), s.start))
        for session in touching:
            if self._fits([session], time_ms):
                self._add_event(session, time_ms, event)
                return 0
        sessions.append(self._new(time_ms, event))
        return 0

    def bounds(self, session: Session) -> tuple[int, int]:
        return session.start, session.end

    def fields(self, session: Session) -> dict[str, Any]:
        return {
            "session_start_ms": session.start,
            "session_end_ms": session.end,
            "event_count": session.count,
            "duration_ms": session.end - session.start,
        }

    def dump(self, sessions: list[Session]) -> list[Any]:
        """``[start, end, count, aggregates]`` per session."""
        dump_aggs = self.dump_aggs
        return [[s.start, s.end, s.count, dump_aggs(s.aggs)] for s in sessions]

    def load(self, data: list[Any]) -> list[Session]:
        load_aggs = self.load_aggs
        # ``*_``: state written while the pipeline had rules (a fifth element) loads without them.
        return [Session(start, end, count, load_aggs(states)) for start, end, count, states, *_ in data]

    def _new(self, time_ms: int, event: dict[str, Any]) -> Session:
        states = [a.init() for a in self.aggregates]
        self._add_to(states, event, time_ms)
        return Session(time_ms, time_ms, 1, states)

    def _add_event(self, session: Session, time_ms: int, event: dict[str, Any]) -> None:
        if time_ms < session.start:
            session.start = time_ms
        elif time_ms > session.end:
            session.end = time_ms
        session.count += 1
        self._add_to(session.aggs, event, time_ms)

    def _absorb(self, target: Session, other: Session) -> None:
        target.start = min(target.start, other.start)
        target.end = max(target.end, other.end)
        target.count += other.count
        target.aggs = [a.merge(x, y) for a, x, y in zip(self.aggregates, target.aggs, other.aggs)]

    def _fits(self, sessions: list[Session], time_ms: int) -> bool:
        """Would ``sessions`` plus the event, as one session, respect the caps?"""
        if self.max_events is not None and sum(s.count for s in sessions) + 1 > self.max_events:
            return False
        if self.max_duration is not None:
            start = min(time_ms, min(s.start for s in sessions))
            end = max(time_ms, max(s.end for s in sessions))
            if end - start > self.max_duration:
                return False
        return True


def _distance(session: Session, time_ms: int) -> int:
    if time_ms < session.start:
        return session.start - time_ms
    if time_ms > session.end:
        return time_ms - session.end
    return 0
