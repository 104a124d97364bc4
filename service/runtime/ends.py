"""When a source partition is known read to its end, and when its silence may move event time on.

A window closes when stream time, the slowest source's watermark, passes its
close time. A source that gets no events would hold every window open for
ever, so a quiet source must let its watermark move with the wall clock. The
question is when, without ever passing events that a living producer has
written, or will write with a time the promise covers.

The answer here, after Flink's ``withIdleness`` and Kafka Streams' use of the
consumer's lag in ``max.task.idle.ms``:

- **Read to its end as of a moment.** Every ``interval`` the instance asks
  the broker for the end offsets of the source partitions it reads (one
  ``ListOffsets`` request, the last stable offset under ``read_committed``).
  When the answer shows that this instance has read a partition up to that
  end, every record written to it before the request was sent has been read.
  The broker vouches for it; no end-of-partition event, which librdkafka
  sends once and never renews, and no local guess does.
- **Quiet for the idle timeout.** A partition counts as quiet once it has had
  no records, and was found read to its end at every request, for
  ``idle_timeout``. The count starts again at a record, an answer that finds
  it behind its end, a request that fails or is not answered, an error any
  Kafka client of the process reports (a broker connection lost), a rewind,
  and a gap of more than ``max_gap`` between two answers (a loop that stalled
  saw nothing meanwhile). Only observed time counts: the span from the first
  request that found it at its end to the latest one, never the time since
  the latest request, which nothing has watched yet (however long a stalled
  loop took to come back). After a broker outage, a restart or a move,
  producers get that long to deliver what they held.
- **The bound.** A quiet partition's watermark may become the wall-clock time
  at which it was last found read to its end, minus ``END_MARGIN_MS``: every
  later record was written after that moment, and a live producer writes an
  event at most grace after its time (``docs/semantics.md``, "Choosing
  grace"). The margin covers the producers' own buffering (linger, batches
  in flight) and small clock steps.

A partition that has records is never quiet: its watermark is its event time,
and a replay is judged by event time alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, cast

import structlog
from confluent_kafka import IsolationLevel, KafkaError, KafkaException, TopicPartition, admin
from confluent_kafka.admin import AdminClient

from service.runtime.ids import Partition

log = structlog.get_logger("sessionizer.ends")


#: Subtracted from the wall-clock time a partition was found read to its end (ms).
END_MARGIN_MS = 1_000
#: What ``list_offsets`` asks of each partition: its end (its last stable offset under read_committed,
#: its log end under read_uncommitted); the changelog reader asks it too.
#: (The admin package imports ``OffsetSpec`` without exporting it, and leaves its methods untyped.)
LATEST = cast(Any, admin).OffsetSpec.latest()
#: How long an end-offsets request may take before its partitions count as not found at their end (s).
DEFAULT_PATIENCE = 10.0
#: Requests failed in a row after which the admin client is replaced (see ``SourceEnds._failed_request``).
REPLACE_AFTER = 3
#: Errors that say the client's metadata is out of date (a leader moved, a broker restarted).
STALE_METADATA = frozenset({KafkaError.FENCED_LEADER_EPOCH, KafkaError.UNKNOWN_LEADER_EPOCH, KafkaError.NOT_LEADER_FOR_PARTITION})


@dataclass(slots=True)
class Quiet:
    """One source partition: since when it has had no records while found read to its end."""

    #: Bumped by every record, so the answer to a request sent before one is not taken for quiet.
    epoch: int = 0
    #: Monotonic s: when the first request that found it at its end after its last record was sent.
    since: float | None = None
    #: Wall-clock ms: when the latest such request was sent.
    end_ms: int | None = None
    #: Monotonic s: when the latest such request was sent.
    last: float | None = None

    def busy(self) -> None:
        """Records came, or may come (a rewind, an unanswered request): the count starts again."""
        self.epoch += 1
        self.since = None
        self.end_ms = None
        self.last = None

    def found(self, at_end: bool, epoch: int, sent: float, sent_ms: int, max_gap: float) -> None:
        """The answer to a request sent at ``sent`` (monotonic) and ``sent_ms`` (wall clock)."""
        if epoch != self.epoch:
            return  # a record came after the request was sent
        if not at_end:
            self.busy()
            return
        if self.since is None or self.last is None or sent - self.last > max_gap:
            self.since = sent  # nothing was seen between the last answer and this one
        self.last = sent
        if self.end_ms is None or sent_ms > self.end_ms:
            self.end_ms = sent_ms

    def bound(self, idle_timeout: float) -> int | None:
        """The wall-clock watermark the partition may have, once it has been seen quiet for ``idle_timeout``.

        Seen: between the first request that found it at its end and the
        latest one. What happened after the latest request was sent is not
        known yet, so that time does not count, whatever the clock says now.
        """
        if self.since is None or self.end_ms is None or self.last is None or self.last - self.since < idle_timeout:
            return None
        return self.end_ms - END_MARGIN_MS


@dataclass
class _Request:
    sent: float
    sent_ms: int
    #: The partitions asked for, each with its ``Quiet.epoch`` when the request was sent.
    epochs: dict[Partition, int]
    futures: Mapping[TopicPartition, Future[object]] = field(default_factory=dict)

    def done(self) -> bool:
        return all(future.done() for future in self.futures.values())


class SourceEnds:
    """The source partitions this instance reads: which are quiet, and their wall-clock bounds.

    ``probe`` is called on the loop's thread, every punctuation: it takes in
    the answer to the request in flight, if any, and sends the next.
    ``admin`` makes the admin client that asks; a new one is made when
    requests keep failing on metadata it holds out of date.
    ``errors`` counts the errors the process's Kafka clients reported
    (``ClientErrors.count``).
    """

    def __init__(
        self,
        admin: Callable[[], AdminClient],
        idle_timeout: float,
        errors: Callable[[], int],
        read_committed: bool = True,
        interval: float = 1.0,
        patience: float = DEFAULT_PATIENCE,
    ) -> None:
        self._new_admin = admin
        self._admin = admin()
        #: Requests that failed one after the other (any partition not answered).
        self._failed_in_a_row = 0
        self.idle_timeout = idle_timeout
        self._errors = errors
        self._errors_seen = errors()
        self._isolation = IsolationLevel.READ_COMMITTED if read_committed else IsolationLevel.READ_UNCOMMITTED
        self.interval = interval
        #: The longest gap between two answers that still counts as watching without a break.
        self.max_gap = 3 * interval
        self.patience = patience
        self._quiet: dict[Partition, Quiet] = {}
        self._request: _Request | None = None
        self._next = 0.0
        self.requests = 0
        self.failures = 0

    # -- what the task manager tells it -----------------------------------------------

    def track(self, where: Partition) -> None:
        """``where`` is a source partition this instance reads now: busy until found quiet."""
        self._quiet.setdefault(where, Quiet())

    def forget(self, where: Partition) -> None:
        self._quiet.pop(where, None)

    def records(self, where: Partition) -> None:
        """Records of ``where`` were processed, or wait to be (its count starts again)."""
        quiet = self._quiet.get(where)
        if quiet is not None:
            quiet.busy()

    def rewound(self) -> None:
        """Every partition goes back to its committed offset: none is quiet any more."""
        for quiet in self._quiet.values():
            quiet.busy()

    # -- what it answers ----------------------------------------------------------------

    def bound(self, where: Partition) -> int | None:
        """``where``'s wall-clock watermark (epoch ms), or None while it is not quiet."""
        quiet = self._quiet.get(where)
        return None if quiet is None else quiet.bound(self.idle_timeout)

    # -- asking the broker -----------------------------------------------------------------

    def probe(self, now: float, now_ms: int, read_up_to: Callable[[Partition], int | None]) -> None:
        """Take in the answer to the request in flight; send the next one when it is due.

        ``read_up_to(where)`` is the offset this instance has read ``where``
        up to: the partition is at its end when that is at least the end the
        broker gave.
        """
        errors = self._errors()
        if errors != self._errors_seen:
            self._errors_seen = errors
            self.rewound()  # a broker may have been away: producers may hold records
        request = self._request
        if request is not None:
            if request.done():
                self._take(request, read_up_to)
            elif now - request.sent > self.patience:
                self._take(request, read_up_to)  # what has not answered counts as not at its end
            else:
                return
            self._request = None
        if now >= self._next and self._quiet:
            self._next = now + self.interval
            self._send(now, now_ms)

    def _send(self, now: float, now_ms: int) -> None:
        epochs = {where: quiet.epoch for where, quiet in self._quiet.items()}
        request = _Request(now, now_ms, epochs)
        self.requests += 1
        try:
            request.futures = self._admin.list_offsets(
                {TopicPartition(topic, partition): LATEST for topic, partition in epochs},
                isolation_level=self._isolation,
                request_timeout=self.patience / 2,
            )
        except (KafkaException, ValueError, TypeError, RuntimeError) as exc:
            self._failed(request, str(exc))
            return
        self._request = request

    def _take(self, request: _Request, read_up_to: Callable[[Partition], int | None]) -> None:
        failed: list[str] = []
        stale = False
        for tp, future in request.futures.items():
            where = Partition(tp.topic, tp.partition)
            end, code = _end_offset(future)
            stale = stale or code in STALE_METADATA
            quiet = self._quiet.get(where)
            if quiet is None:
                continue  # no longer read here
            epoch = request.epochs.get(where, -1)
            if end is None:
                failed.append(f"{tp.topic}-{tp.partition}")
                quiet.found(False, epoch, request.sent, request.sent_ms, self.max_gap)
                continue
            position = read_up_to(where)
            quiet.found(position is not None and position >= end, epoch, request.sent, request.sent_ms, self.max_gap)
        if not failed:
            self._failed_in_a_row = 0
            return
        self.failures += 1
        self._failed_in_a_row += 1
        log.debug("end offsets not found", partitions=failed)
        self._failed_request(stale)

    def _failed_request(self, stale: bool) -> None:
        """Replace the admin client once its requests keep failing on metadata it holds out of date.

        After a broker restarts, librdkafka's admin client keeps sending
        ``ListOffsets`` with the partitions' old leader epochs and the broker
        keeps answering ``FENCED_LEADER_EPOCH``, for good (seen with librdkafka
        2.16; the same loop as librdkafka issue #4620, in the consumer). A new
        client asks for fresh metadata first.
        """
        if not stale or self._failed_in_a_row < REPLACE_AFTER:
            return
        log.warning("asking for end offsets keeps failing on out-of-date metadata; replacing the admin client",
                    requests=self._failed_in_a_row)  # fmt: skip
        self._admin = self._new_admin()
        self._failed_in_a_row = 0

    def _failed(self, request: _Request, error: str) -> None:
        self.failures += 1
        self._failed_in_a_row += 1
        log.warning("asking for end offsets failed", error=error)
        for where, epoch in request.epochs.items():
            quiet = self._quiet.get(where)
            if quiet is not None:
                quiet.found(False, epoch, request.sent, request.sent_ms, self.max_gap)


def _end_offset(future: Future[object]) -> tuple[int | None, int | None]:
    """The end offset a ``list_offsets`` future holds, or None and the error's code (None if it has not answered)."""
    if not future.done():
        return None, None
    try:
        result = future.result(timeout=0)
    except KafkaException as exc:  # a failed request: the partition is not known to be at its end
        error = exc.args[0] if exc.args else None
        return None, error.code() if isinstance(error, KafkaError) else None
    except Exception:
        return None, None
    offset = getattr(result, "offset", None)
    return (offset if isinstance(offset, int) and offset >= 0 else None), None
