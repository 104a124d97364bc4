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
