"""Event time over several inputs: per-source watermarks and the stream time they allow.

A window task can be fed by many source partitions: partition i of several
co-partitioned topics, or every partition of every source topic through a
repartition topic. Read from a backlog, those sources arrive at different
speeds, so "the largest event time seen" runs ahead of the slowest source and
turns its on-time events late. Flink's answer is used here:

- Each source has a **watermark**: the largest event time read from it so far.
- The task's **stream time** is the minimum of its sources' watermarks. A
  window closes only when stream time passes its close time, so a slow source
  holds closing back instead of losing its events to "late".
- A source that is **idle** (read to its end, and said so recently) does not
  hold the minimum back, so a quiet topic still lets windows close. When every
  source is idle, stream time is the largest watermark: everything produced
  so far has been read.
- Stream time never goes back.

An event is late when it is more than ``grace`` behind the later of its own
source's watermark and the stream time. Its source's watermark makes the
decision the same whatever the speeds of the other sources (each source's own
disorder is what grace has to cover); the stream time keeps the one
predicate: no event is accepted into a window that was already closed.

Sources are small integers (``source_id``): the source topic's index in the
pipeline and the partition, so the hot path handles ints, not tuples.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: How long an "idle" report counts, in seconds of the task's wall clock: a
#: source whose reader stopped reporting (a crashed instance) is no longer
#: idle, so its silence holds stream time instead of letting it run ahead.
DEFAULT_IDLE_FRESHNESS = 3.0


def source_id(topic_index: int, partition: int) -> int:
    """One int for (source topic index, partition)."""
    return (topic_index << 16) | partition


def source_parts(source: int) -> tuple[int, int]:
    """``source_id``'s inverse: (topic index, partition)."""
    return source >> 16, source & 0xFFFF


class Watermarks:
    """The watermarks of one task's sources, and the stream time they allow.

    ``expected`` are the sources that must report before stream time can move:
    until a source has a watermark or has said it is idle, nothing is known of
    how far behind it is.
    """

    def __init__(self, expected: Iterable[int], idle_freshness: float = DEFAULT_IDLE_FRESHNESS) -> None:
        self.expected = set(expected)
        #: source -> largest event time read from it
        self.marks: dict[int, int] = {}
        #: source -> wall-clock time (monotonic s) of its last idle report; absent when not idle
        self.idle_since: dict[int, float] = {}
        self.idle_freshness = idle_freshness
        #: Set when a watermark changed since the last ``take_changed``.
        self.changed = False

    # -- what the task learns ---------------------------------------------------

    def observe(self, source: int, time_ms: int) -> int:
        """A record of ``source`` at ``time_ms`` (a task reading the source itself); returns its watermark."""
        mark = self.marks.get(source)
        if mark is None or time_ms > mark:
            self.marks[source] = mark = time_ms
            self.changed = True
        if self.idle_since:
            self.idle_since.pop(source, None)
        return mark

    def advance(self, source: int, watermark: int) -> int:
        """A record of ``source`` that carries its watermark (a repartition frame); returns the watermark now."""
        mark = self.marks.get(source)
        if mark is None or watermark > mark:
            self.marks[source] = mark = watermark
            self.changed = True
        if self.idle_since:
            self.idle_since.pop(source, None)
        return mark

    def report(self, source: int, watermark: int | None, idle: bool, now: float) -> None:
        """A periodic report of ``source``: its watermark, and whether it is read to its end."""
        if watermark is not None:
            mark = self.marks.get(source)
            if mark is None or watermark > mark:
                self.marks[source] = watermark
                self.changed = True
        self.expected.add(source)
        if idle:
            self.idle_since[source] = now
        else:
            self.idle_since.pop(source, None)

    def forget_idleness(self) -> None:
        """Nothing is known to be idle any more (after a restart, an abort, an outage)."""
        self.idle_since.clear()

    # -- what it allows -----------------------------------------------------------

    def _idle(self, source: int, now: float) -> bool:
        since = self.idle_since.get(source)
        return since is not None and now - since <= self.idle_freshness

    def stream_time(self, now: float) -> int | None:
        """The minimum watermark of the sources that are not idle; None while one of them is unknown.

        With every source idle, the largest watermark.
        """
        lowest: int | None = None
        every_idle = True
        marks = self.marks
        for source in self.expected | marks.keys():
            if self._idle(source, now):
                continue
            every_idle = False
            mark = marks.get(source)
            if mark is None:
                return None
            if lowest is None or mark < lowest:
                lowest = mark
        if every_idle:
            return max(marks.values()) if marks else None
        return lowest

    def all_idle(self, now: float) -> bool:
        """Every source is read to its end and said so recently: the wall clock may drive stream time."""
        sources = self.expected | self.marks.keys()
        return bool(sources) and all(self._idle(source, now) for source in sources)

    def lowest_active(self, now: float) -> tuple[int | None, list[int]]:
        """For alignment: the lowest watermark among sources that are not idle, and those sources."""
        active = [s for s in self.expected | self.marks.keys() if not self._idle(s, now)]
        known = [self.marks[s] for s in active if s in self.marks]
        return (min(known) if known else None), active

    # -- state ----------------------------------------------------------------------

    def take_changed(self) -> bool:
        changed, self.changed = self.changed, False
        return changed

    def dump(self) -> list[list[int]]:
        """The watermarks, for the store and its changelog (idleness is never kept: it must be heard anew)."""
        return [[source, mark] for source, mark in sorted(self.marks.items())]

    def load(self, data: Any) -> None:
        for source, mark in data or ():
            current = self.marks.get(source)
            if current is None or mark > current:
                self.marks[source] = mark
