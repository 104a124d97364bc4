"""Tumbling and hopping windows: fixed-size, aligned to the epoch.

A window covers [start, start + size). Tumbling windows advance by their size;
hopping windows advance by ``advance`` (which divides ``size``), so an event
belongs to size / advance of them. A window closes when stream time passes
end + grace. A late event still counts in those of its windows that are open
and goes to the late topic for the ones already emitted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.core.aggregates import Aggregate
from service.core.closing import closed
from service.core.inline import adder
from service.core.windows.base import WindowKindBase


@dataclass(slots=True)
class Window:
    start: int
    count: int
    aggs: list[Any]


class FixedWindows(WindowKindBase[Window]):
    partial_late = True

    def __init__(self, size_ms: int, advance_ms: int, grace_ms: int, aggregates: tuple[Aggregate, ...] = ()) -> None:
        self.size = size_ms
        self.advance = advance_ms
        self.grace = grace_ms
        self.aggregates = aggregates
        #: Adds an event to a window's aggregate states (``service.core.inline``).
        self._add_to = adder(aggregates)

    def closes_at(self, start: int) -> int:
        """Close time of the window starting at ``start``."""
        return start + self.size + self.grace

    def close_time(self, window: Window) -> int:
        return self.closes_at(window.start)

    def starts(self, time_ms: int) -> range:
        """Starts of the windows containing ``time_ms``, oldest first."""
        last = time_ms - time_ms % self.advance
        return range(last - self.size + self.advance, last + 1, self.advance)

    def late_reason(self, time_ms: int, stream_time: int) -> str | None:
        missed = [s for s in self.starts(time_ms) if closed(self.closes_at(s), stream_time)]
        if not missed:
            return None
        windows = ", ".join(f"[{s}, {s + self.size})" for s in missed)
        return f"window {windows} already closed at stream time {stream_time} (grace {self.grace} ms)"

    def add(
        self, windows: list[Window], time_ms: int, event: dict[str, Any], limit: int,
        source: int = 0, derived: list[Any] | None = None, stream_time: int | None = None,
    ) -> int:
        by_start = {w.start: w for w in windows}
        closes_at = self.closes_at
        add_to = self._add_to
        for start in self.starts(time_ms):
            if closed(closes_at(start), limit):
                continue  # the late record for it was made by the processor
            window = by_start.get(start)
            if window is None:
                window = Window(start, 0, [a.init() for a in self.aggregates])
                windows.append(window)
            window.count += 1
            add_to(window.aggs, event, time_ms)
        return 0

    def bounds(self, window: Window) -> tuple[int, int]:
        return window.start, window.start + self.size

    def fields(self, window: Window) -> dict[str, Any]:
        return {"window_start_ms": window.start, "window_end_ms": window.start + self.size, "event_count": window.count}

    def dump(self, windows: list[Window]) -> list[Any]:
        """``[start, count, aggregates]`` per window."""
        dump_aggs = self.dump_aggs
        return [[w.start, w.count, dump_aggs(w.aggs)] for w in windows]

    def load(self, data: list[Any]) -> list[Window]:
        load_aggs = self.load_aggs
        return [Window(start, count, load_aggs(states)) for start, count, states in data]
