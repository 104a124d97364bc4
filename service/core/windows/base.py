"""What the processor needs from a kind of window (session, tumbling, hopping)."""

from __future__ import annotations

from typing import Any, Protocol


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
