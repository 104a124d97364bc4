"""What the processor needs from a kind of window, and the half every kind shares.

A kind differs in how an event lands in its windows (``add``), when a window
can no longer change (``close_time``) and what a closed window reports
(``bounds``, ``fields``). Everything done to whole windows afterwards — popping
the closed ones in start order, rendering values, storing aggregate states — is
the same for every kind and lives once in ``WindowKindBase``. None of it runs
per event, so the hot path (``add``) stays in the kinds, free of extra calls.
"""

from __future__ import annotations

from functools import cached_property
from operator import attrgetter
from typing import Any, Generic, Protocol, TypeVar

from service.core.aggregates import Aggregate, keeps_state_as_is
from service.core.closing import closed


class WindowKind(Protocol):
    """What the processor needs from a kind of window.

    ``add`` gets the event's ``limit``, the time it was judged against (its
    source's watermark or stream time, the later): a window closed at the
    limit was already given the late record, so the event stays out of it.
    ``stream_time`` is the task's (None while unknown): rules forget state by
    it. ``source`` is the index of the event's topic in the pipeline's sources.
    Kinds that run rules append the records those derive to ``derived``.
    """

    #: True when a late event may still count in some of its windows (hopping).
    partial_late: bool

    def late_reason(self, time_ms: int, stream_time: int) -> str | None: ...

    def add(
        self, windows: list[Any], time_ms: int, event: dict[str, Any], limit: int,
        source: int = 0, derived: list[Any] | None = None, stream_time: int | None = None,
    ) -> int: ...

    def next_close(self, windows: list[Any]) -> int: ...

    def pop_closed(self, windows: list[Any], stream_time: int, derived: list[Any] | None = None) -> list[Any]: ...

    def pop_all(self, windows: list[Any], derived: list[Any] | None = None) -> list[Any]: ...

    def values(self, window: Any) -> dict[str, Any]: ...

    def bounds(self, window: Any) -> tuple[int, int]: ...

    def dump(self, windows: list[Any]) -> list[Any]: ...

    def load(self, data: list[Any]) -> list[Any]: ...


class Aggregated(Protocol):
    """What every kind's window holds: a start, an event count and one state per aggregate."""

    start: int
    count: int
    aggs: list[Any]


W = TypeVar("W", bound=Aggregated)

#: Closed windows are emitted oldest first, whatever order the key's list is in.
_by_start = attrgetter("start")


class WindowKindBase(Generic[W]):
    """The per-window operations of ``WindowKind``, written once for every kind.

    A kind supplies ``add``, ``late_reason``, ``close_time``, ``bounds``,
    ``fields`` and the layout of its stored rows (``dump``/``load``, which use
    ``dump_aggs``/``load_aggs`` for the aggregate states).
    """

    aggregates: tuple[Aggregate, ...]

    def close_time(self, window: W) -> int:
        """Stream time after which no acceptable event can change ``window``."""
        raise NotImplementedError

    def bounds(self, window: W) -> tuple[int, int]:
        raise NotImplementedError

    def fields(self, window: W) -> dict[str, Any]:
        """The kind's own fields of an emitted window; the aggregates follow them."""
        raise NotImplementedError

    def next_close(self, windows: list[W]) -> int:
        if len(windows) == 1:  # most keys have one open window: no min over a map
            return self.close_time(windows[0])
        return min(map(self.close_time, windows))

    def pop_closed(self, windows: list[W], stream_time: int, derived: list[Any] | None = None) -> list[W]:
        close_time = self.close_time
        done = [w for w in windows if closed(close_time(w), stream_time)]
        for window in done:
            windows.remove(window)
        done.sort(key=_by_start)
        return done

    def pop_all(self, windows: list[W], derived: list[Any] | None = None) -> list[W]:
        done = sorted(windows, key=_by_start)
        windows.clear()
        return done

    def values(self, window: W) -> dict[str, Any]:
        out = self.fields(window)
        for agg, state in zip(self.aggregates, window.aggs):
            out[agg.name] = agg.result(state)
        return out

    def dump_aggs(self, states: list[Any]) -> list[Any]:
        """Aggregate states as JSON-ready values, in the order of ``aggregates``.

        The list itself when every state is JSON as it is: the caller
        serializes it at once, before any event can change it.
        """
        if self._states_as_is:
            return states
        return [a.dump(x) for a, x in zip(self.aggregates, states)]

    def load_aggs(self, stored: list[Any]) -> list[Any]:
        if self._states_as_is:
            return stored
        return [a.load(x) for a, x in zip(self.aggregates, stored)]

    @cached_property
    def _states_as_is(self) -> bool:
        """Every aggregate stores its state as it is (``keeps_state_as_is``)."""
        return all(map(keeps_state_as_is, self.aggregates))
