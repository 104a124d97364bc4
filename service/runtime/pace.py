"""When the stream loop commits: every ``commit_interval``, and less often while it is behind.

A commit's work is per key changed since the last one, however many events
changed it: the key is closed if due, serialized, sent to its changelog and
written to RocksDB; and the transaction takes its round trips. While the
loop keeps up with its sources it commits every ``commit_interval`` (100 ms),
so windows close and output shows up promptly. While it is behind, replaying
a backlog or catching up after a restart, each poll comes back full and the
output is late by the backlog anyway; a commit every 100 ms then took 36% of
the loop's time (py-spy, ``bench/bench.py``'s replay of 5,000 users, nearly
all changed within 100 ms). So it then commits every
``catch_up_commit_interval`` instead, unless the stores' write-back caches
are over their budget, which only a commit lets them shrink.
"""

from __future__ import annotations

from collections.abc import Callable


class CommitPace:
    """Says when the loop should commit, given whether its last poll came back full."""

    def __init__(self, interval: float, catch_up: float, now: float) -> None:
        self.interval = interval
        #: Never shorter than ``interval``.
        self.catch_up = max(interval, catch_up)
        self.last = now

    @property
    def deadline(self) -> float:
        """The next commit when keeping up: how long the loop may wait for records."""
        return self.last + self.interval

    def due(self, now: float, behind: bool, over_budget: Callable[[], bool]) -> bool:
        """``behind``: the last poll returned a full batch. ``over_budget`` is asked only when that postpones a commit."""
        if now < self.last + self.interval:
            return False
        return not behind or now >= self.last + self.catch_up or over_budget()

    def committed(self, now: float) -> None:
        self.last = now
