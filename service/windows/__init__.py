"""Window logic, free of Kafka and storage: lists of windows per key, changed in place.

One predicate decides everything about time. A window is closed when stream
time has passed its close time; it is emitted then and can never change again.
An event is late exactly when a window it could still have to change is closed.
Kafka Streams decides "emit" and "too late" with two slightly different tests
and can emit a second "final" record for a window; here both ask ``closed``.
"""

from __future__ import annotations

from typing import Any, Protocol

from service.aggregates import Aggregate
from service.config import WindowConfig


def closed(close_time: int, stream_time: int) -> bool:
    """The one rule: a window whose close time stream time has passed is final."""
    return stream_time > close_time


class WindowKind(Protocol):
    """What the processor needs from a kind of window.

    ``source`` is the index of the event's topic in the pipeline's sources.
    Kinds that run rules append the records those derive to ``derived``.
    """

    #: True when a late event may still count in some of its windows (hopping).
    partial_late: bool

    def late_reason(self, time_ms: int, stream_time: int) -> str | None: ...

    def add(
        self,
        windows: list[Any],
        time_ms: int,
        event: dict[str, Any],
        stream_time: int,
        source: int = 0,
        derived: list[Any] | None = None,
    ) -> int: ...

    def next_close(self, windows: list[Any]) -> int: ...

    def pop_closed(self, windows: list[Any], stream_time: int, derived: list[Any] | None = None) -> list[Any]: ...

    def pop_all(self, windows: list[Any], derived: list[Any] | None = None) -> list[Any]: ...

    def values(self, window: Any) -> dict[str, Any]: ...

    def bounds(self, window: Any) -> tuple[int, int]: ...

    def dump(self, windows: list[Any]) -> list[Any]: ...

    def load(self, data: list[Any]) -> list[Any]: ...


def build_window_kind(config: WindowConfig, aggregates: tuple[Aggregate, ...], rules: tuple[Any, ...] = ()) -> WindowKind:
    from service.windows.fixed import FixedWindows
    from service.windows.session import SessionWindows
    from service.windows.with_rules import SessionWindowsWithRules

    if config.type == "session" and rules:
        return SessionWindowsWithRules(
            gap_ms=config.gap_ms,
            grace_ms=config.grace_ms,
            aggregates=aggregates,
            rules=rules,
            max_duration_ms=config.max_duration_ms,
            max_events=config.max_events,
        )
    if config.type == "session":
        return SessionWindows(
            gap_ms=config.gap_ms,
            grace_ms=config.grace_ms,
            aggregates=aggregates,
            max_duration_ms=config.max_duration_ms,
            max_events=config.max_events,
        )
    return FixedWindows(
        size_ms=config.size_ms,
        advance_ms=config.advance_ms,
        grace_ms=config.grace_ms,
        aggregates=aggregates,
    )
