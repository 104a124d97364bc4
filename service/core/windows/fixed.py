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


@dataclass(slots=True)
class Window:
    start: int
    count: int
    aggs: list[Any]


class FixedWindows:
    partial_late = True

    def __init__(self, size_ms: int, advance_ms: int, grace_ms: int, aggregates: tuple[Aggregate, ...] = ()) -> None:
        self.size = size_ms
        self.advance = advance_ms
        self.grace = grace_ms
        self.aggregates = aggregates

    def close_time(self, start: int) -> int:
        return start + self.size + self.grace

    def starts(self, time_ms: int) -> range:
        """Starts of the windows containing ``time_ms``, oldest first."""
        last = time_ms - time_ms % self.advance
        return range(last - self.size + self.advance, last + 1, self.advance)

    def late_reason(self, time_ms: int, stream_time: int) -> str | None:
        missed = [s for s in self.starts(time_ms) if closed(self.close_time(s), stream_time)]
        if not missed:
            return None
        windows = ", ".join(f"[{s}, {s + self.size})" for s in missed)
        return f"window {windows} already closed at stream time {stream_time} (grace {self.grace} ms)"

    def add(
        self,
        windows: list[Window],
        time_ms: int,
        event: dict[str, Any],
        stream_time: int,
        source: int = 0,
        derived: list[Any] | None = None,
    ) -> int:
        by_start = {w.start: w for w in windows}
        for start in self.starts(time_ms):
            if closed(self.close_time(start), stream_time):
                continue
            window = by_start.get(start)
            if window is None:
                window = Window(start, 0, [a.init() for a in self.aggregates])
                windows.append(window)
            window.count += 1
            aggs = window.aggs
            for i, agg in enumerate(self.aggregates):
                aggs[i] = agg.add(aggs[i], event, time_ms)
        return 0

    def next_close(self, windows: list[Window]) -> int:
        return self.close_time(min(w.start for w in windows))

    def pop_closed(self, windows: list[Window], stream_time: int, derived: list[Any] | None = None) -> list[Window]:
        done = [w for w in windows if closed(self.close_time(w.start), stream_time)]
        for window in done:
            windows.remove(window)
        done.sort(key=lambda w: w.start)
        return done

    def pop_all(self, windows: list[Window], derived: list[Any] | None = None) -> list[Window]:
        done = sorted(windows, key=lambda w: w.start)
        windows.clear()
        return done

    def bounds(self, window: Window) -> tuple[int, int]:
        return window.start, window.start + self.size

    def values(self, window: Window) -> dict[str, Any]:
        out: dict[str, Any] = {
            "window_start_ms": window.start,
            "window_end_ms": window.start + self.size,
            "event_count": window.count,
        }
        for agg, state in zip(self.aggregates, window.aggs):
            out[agg.name] = agg.result(state)
        return out

    def dump(self, windows: list[Window]) -> list[Any]:
        aggs = self.aggregates
        return [[w.start, w.count, [a.dump(x) for a, x in zip(aggs, w.aggs)]] for w in windows]

    def load(self, data: list[Any]) -> list[Window]:
        aggs = self.aggregates
        return [Window(start, count, [a.load(x) for a, x in zip(aggs, states)]) for start, count, states in data]
