"""An independent reference for session windows, sharing no code with the service.

Per key: sort the event times, split where two neighbours are more than
``gap`` apart, then count and sum. That is the promise of docs/semantics.md
for any arrival order within grace, written the plainest way, so that a bug
in the service's merging, closing, aggregates or stores cannot also be in the
reference and cancel out. ``late_events`` is the same for lateness: per-source
watermarks and grace, from each source's arrival order alone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from typing import NamedTuple


class Session(NamedTuple):
    key: str
    start: int
    end: int
    count: int
    total: int


def sessions(events: Iterable[tuple[str, int, int]], gap_ms: int) -> list[Session]:
    """``events``: (key, event time ms, amount). Returns the sessions, sorted."""
    by_key: dict[str, list[tuple[int, int]]] = {}
    for key, time_ms, amount in events:
        by_key.setdefault(key, []).append((time_ms, amount))
    out = []
    for key, items in by_key.items():
        items.sort()
        start, total, count = items[0][0], 0, 0
        end = start
        for time_ms, amount in items:
            if time_ms - end > gap_ms:
                out.append(Session(key, start, end, count, total))
                start, total, count = time_ms, 0, 0
            end = time_ms
            count += 1
            total += amount
        out.append(Session(key, start, end, count, total))
    return sorted(out)


def late_events(arrivals: Iterable[tuple[Hashable, int, Hashable]], grace_ms: int) -> set[Hashable]:
    """Which events are late, from nothing but each source's arrival order: docs/semantics.md's rule.

    ``arrivals``: (source, event time ms, event id) in the order each source
    delivers them (one source: one partition of one topic). A source's
    watermark is the largest event time it has delivered, this event's
    included; an event more than ``grace_ms`` behind its own source's
    watermark is late. Nothing about the other sources, stream time or how
    the service interleaves them enters into it.
    """
    marks: dict[Hashable, int] = {}
    late: set[Hashable] = set()
    for source, time_ms, ident in arrivals:
        mark = marks.get(source)
        if mark is None or time_ms > mark:
            marks[source] = mark = time_ms
        if time_ms < mark - grace_ms:
            late.add(ident)
    return late


def conserved(emitted: Iterable[Session], late: int, produced: int) -> bool:
    """Every event produced is counted once: in an emitted session, or as a late record."""
    return sum(s.count for s in emitted) + late == produced


def assert_each_once(got: Sequence[Hashable], expected: Sequence[Hashable]) -> None:
    """Each expected session exactly once, nothing else; the message names what is wrong."""
    duplicates = [s for s, n in Counter(got).items() if n > 1]
    missing = Counter(expected) - Counter(got)
    extra = Counter(got) - Counter(expected)
    assert not duplicates, f"{len(duplicates)} sessions emitted more than once, e.g. {duplicates[:3]}"
    assert not missing and not extra, (
        f"{sum(missing.values())} expected sessions missing (e.g. {list(missing)[:3]}), "
        f"{sum(extra.values())} unexpected (e.g. {list(extra)[:3]})"
    )
