"""An independent reference for session windows, sharing no code with the service.

Per key: sort the event times, split where two neighbours are more than
``gap`` apart, then count and sum. That is the promise of docs/semantics.md
for any arrival order within grace, written the plainest way, so that a bug
in the service's merging, closing, aggregates or stores cannot also be in the
reference and cancel out.
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
