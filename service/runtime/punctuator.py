"""Wall-clock punctuation, as Kafka Streams' ``PunctuationType.WALL_CLOCK_TIME``."""

from __future__ import annotations


class Punctuator:
    """Says when ``interval`` seconds of wall-clock time have passed since the last run."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next: float | None = None

    def due(self, now: float) -> bool:
        if self._next is None:
            self._next = now + self.interval
            return False
        if now < self._next:
            return False
        self._next = now + self.interval
        return True

    def remaining(self, now: float) -> float:
        """Seconds until the next punctuation is due: how long the loop may wait for records."""
        return 0.0 if self._next is None else max(0.0, self._next - now)
