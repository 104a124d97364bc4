"""A line every ``PROGRESS_INTERVAL`` seconds while long work goes on (a restore, a backlog).

It says how much is done, at what rate, what is left, when it should end and
how far event time has got, so an operator watching a long restore or replay
sees it move.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

log = structlog.get_logger("sessionizer.progress")

#: Seconds between two lines while the work goes on.
PROGRESS_INTERVAL = 10.0


class Progress:
    """A line every ``PROGRESS_INTERVAL`` seconds while long work goes on: done, rate, what is left, when it ends."""

    def __init__(self, event: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.event = event
        self.done = 0
        self._clock = clock
        self._since = (clock(), 0)

    def report(self, remaining: int, stream_time: int | None = None, **fields: object) -> None:
        now = self._clock()
        at, done_then = self._since
        if now - at < PROGRESS_INTERVAL:
            return
        rate = (self.done - done_then) / (now - at)
        self._since = (now, self.done)
        log.info(
            self.event,
            records_done=self.done,
            records_per_second=round(rate),
            records_remaining=remaining,
            eta_seconds=round(remaining / rate) if rate > 0 else None,
            event_time_reached=_iso(stream_time),
            **fields,
        )


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))
