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

A poll that comes back empty ends the catch-up pace, even one made without
waiting (the interval over) before librdkafka's next fetch returned: the loop
has nothing in hand, so the commit costs no throughput, and on the
repartition path it is what lets the window tasks read the packs (read
committed). Holding such commits back to the catch-up interval made replays
slower, not faster (2026-12-07, README's Performance section).
"""

from __future__ import annotations

import math
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


def poll_wait(seconds: float) -> float:
    """How long a poll may wait for records: ``seconds``, at least 0, rounded up to a whole millisecond.

    librdkafka waits in milliseconds, and confluent-kafka rounds a wait down
    to them: any wait under a millisecond was no wait. The loop then spun
    through the last millisecond before every commit and punctuation: 1,501
    and 1,814 polls a second in an idle loop, 11 once rounded up, and its
    process's CPU halved (1.33% and 1.31% of a core, 0.62% and 0.69%;
    2026-12-07, two runs each of ``bench/bench.py``'s wait for the last
    sessions, counted in a copy of the service).
    """
    milliseconds = math.ceil(max(0.0, seconds) * 1000)
    # The middle of the last millisecond: rounded down, whatever the float's error, it is that millisecond.
    return (milliseconds + 0.5) / 1000 if milliseconds else 0.0
