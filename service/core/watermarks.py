"""Event time over several inputs: per-source watermarks and the stream time they allow.

A window task can be fed by many source partitions: partition i of several
co-partitioned topics, or every partition of every source topic through a
repartition topic. Read from a backlog, those sources arrive at different
speeds, so "the largest event time seen" runs ahead of the slowest source and
turns its on-time events late. Flink's answer is used here:

- Each source has a **watermark**, a lower bound on what it can still
  deliver: every later event of it is at least its watermark minus grace.
  It is the largest event time read from the source, or, once the source has
  been quiet for the idle timeout, the wall-clock time at which it was last
  found read to its end, whichever is later (``service.runtime.ends``).
- The task's **stream time** is the minimum of its sources' watermarks, and
  unknown while one of them has none. A window closes only when stream time
  passes its close time, so a slow source, a dead reader or a source whose
  reader is moving holds closing back instead of losing its events to "late".
- A quiet source does not hold windows open for ever: its wall-clock bound
  moves with the present. Idleness never *removes* a source from the
  minimum, so a source whose reader stops reporting holds stream time where
  its last report left it.
- Watermarks and stream time never go back.

An event is late when it is more than ``grace`` behind the later of its own
source's watermark and the stream time. As stream time is at most any
source's watermark, that is its own source's watermark: whether an event is
late depends on its own source partition alone, never on how fast the others
were read.

Every value here is a fact about what was read, never a claim about the
present: a watermark re-read from the repartition topic after a restart or a
rewind is as true as when it was written.

Sources are small integers (``source_id``): the source topic's index in the
pipeline and the partition, so the hot path handles ints, not tuples.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def source_id(topic_index: int, partition: int) -> int:
    """One int for (source topic index, partition)."""
    return (topic_index << 16) | partition


def source_parts(source: int) -> tuple[int, int]:
    """``source_id``'s inverse: (topic index, partition)."""
    return source >> 16, source & 0xFFFF


class Watermarks:
    """The watermarks of one task's sources, and the stream time they allow.

    ``expected`` are the sources that must have a watermark before stream time
    can move: until a source has one, nothing is known of how far behind it is.
    """

    def __init__(self, expected: Iterable[int]) -> None:
        self.expected = set(expected)
        #: source -> its watermark
        self.marks: dict[int, int] = {}
        #: Set when a watermark changed since the last ``take_changed``.
        self.changed = False

    # -- what the task learns ---------------------------------------------------

    def advance(self, source: int, watermark: int) -> int:
        """``source`` has got at least as far as ``watermark``; returns its watermark now.

        A record read by the task itself passes its event time; a repartition
        frame or a report, the watermark its source's reader gave it.
        """
        mark = self.marks.get(source)
        if mark is None or watermark > mark:
            self.marks[source] = mark = watermark
            self.changed = True
        return mark

    def report(self, source: int, watermark: int | None) -> None:
        """A report of ``source``: it feeds this task, and has got as far as ``watermark`` (None: nothing yet)."""
        self.expected.add(source)
        if watermark is not None:
            self.advance(source, watermark)

    # -- what it allows -----------------------------------------------------------

    def stream_time(self) -> int | None:
        """The smallest watermark; None while a source has none."""
        marks = self.marks
        if not marks or not self.expected.issubset(marks.keys()):
            return None
        return min(marks.values())

    # -- state ----------------------------------------------------------------------

    def snapshot(self) -> dict[int, int]:
        """The watermarks as they are now, for ``rewind``."""
        return dict(self.marks)

    def rewind(self, snapshot: dict[int, int]) -> None:
        """Back to a ``snapshot`` (the last commit's), after an abort."""
        self.marks = dict(snapshot)
        self.changed = False

    def take_changed(self) -> bool:
        changed, self.changed = self.changed, False
        return changed

    def dump(self) -> list[list[int]]:
        """The watermarks, for the store and its changelog."""
        return [[source, mark] for source, mark in sorted(self.marks.items())]

    def load(self, data: Any) -> None:
        for source, mark in data or ():
            current = self.marks.get(source)
            if current is None or mark > current:
                self.marks[source] = mark
