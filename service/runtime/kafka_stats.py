"""librdkafka's own statistics, kept in ``LoopStats`` for the metrics.

With ``statistics.interval.ms`` set (15 s by default for the main consumer and
the producer, ``service.runtime.clients``), librdkafka hands each client's
``stats_cb`` a JSON document every interval (librdkafka's STATISTICS.md). The
callback runs in whichever thread serves the client's callbacks: the loop's
``consume`` and ``poll``, or the commit worker while a transaction commits.
It parses the document with orjson there, once an interval, never per event,
keeps the few numbers operators need, and replaces whole values in
``LoopStats``, so the HTTP thread reads one consistent value without a lock.

A callback never raises: librdkafka would hand the exception to ``consume``
or ``poll`` and stop the loop. An unreadable document is logged and skipped.
"""

from __future__ import annotations

from typing import Any

import orjson
import structlog

from service.runtime.ids import Partition
from service.runtime.stats import LoopStats, ProducerStats

log = structlog.get_logger("sessionizer.kafka_stats")

#: librdkafka's transaction states (``rd_kafka_txn_state2str``), in its order.
TRANSACTION_STATES = (
    "Init",
    "WaitPID",
    "ReadyNotAcked",
    "Ready",
    "InTransaction",
    "BeginCommit",
    "CommittingTransaction",
    "CommitNotAcked",
    "BeginAbort",
    "AbortingTransaction",
    "AbortedNotAcked",
    "AbortableError",
    "FatalError",
)

#: librdkafka's fetch states of a partition this consumer is not fetching.
_NOT_FETCHING = ("none", "stopping", "stopped")


class ConsumerStatistics:
    """The main consumer's ``stats_cb``: librdkafka's consumer lag per partition it fetches."""

    def __init__(self, stats: LoopStats) -> None:
        self.stats = stats

    def __call__(self, document: str) -> None:
        try:
            self.stats.kafka_consumer_lag = consumer_lag(orjson.loads(document))
        except Exception as exc:  # never into librdkafka's poll
            log.warning("unreadable librdkafka statistics", client="consumer", error=str(exc))


def consumer_lag(data: dict[str, Any]) -> dict[Partition, int]:
    """(topic, partition) -> ``consumer_lag``: the partition's end (the last stable offset under
    read_committed) minus the offset this group committed, as librdkafka knows it.

    librdkafka learns the committed offset from the group's offset fetch and from
    its own commits. Under exactly-once the offsets are committed by the
    producer's transaction instead, which librdkafka's consumer never hears of,
    so it reports -1 and the partition is left out; ``sessionizer_consumer_lag_records``
    (the consumer's position) is there in every mode. ``consumer_lag_stored`` is
    -1 here in both modes: the service never stores offsets, it commits them.
    """
    lag: dict[Partition, int] = {}
    for topic, topic_data in (data.get("topics") or {}).items():
        for key, partition in (topic_data.get("partitions") or {}).items():
            number = int(key)
            if number < 0 or partition.get("fetch_state", "none") in _NOT_FETCHING:
                continue  # -1 is librdkafka's internal "unassigned" partition
            value = partition.get("consumer_lag", -1)
            if isinstance(value, int) and value >= 0:
                lag[Partition(topic, number)] = value
    return lag


class ProducerStatistics:
    """The producer's ``stats_cb``: errors, retries, the queue and the transaction state.

    One instance serves every producer the collector makes: a failed producer
    is replaced by a new one (``producer failed, replacing it``), whose counts
    start from zero. Counts are kept per producer (librdkafka's ``name``, unique
    in the process) and summed, so the totals never go down; the queue and the
    state are the newest producer's.
    """

    def __init__(self, stats: LoopStats) -> None:
        self.stats = stats
        #: producer name -> (transmit errors, retries), the largest seen.
        self._counts: dict[str, tuple[int, int]] = {}
        self._newest: str | None = None

    def __call__(self, document: str) -> None:
        try:
            self._update(orjson.loads(document))
        except Exception as exc:  # never into librdkafka's poll
            log.warning("unreadable librdkafka statistics", client="producer", error=str(exc))

    def _update(self, data: dict[str, Any]) -> None:
        name = str(data.get("name", ""))
        errors = retries = 0
        for broker in (data.get("brokers") or {}).values():
            errors += int(broker.get("txerrs", 0))
            retries += int(broker.get("txretries", 0))
        before = self._counts.get(name)
        if before is None:
            # a new producer: an abandoned one that still reports never takes its place back
            self._newest = name
            before = (0, 0)
        self._counts[name] = (max(before[0], errors), max(before[1], retries))
        previous = self.stats.producer
        if name == self._newest:
            eos = data.get("eos") or {}
            queued_messages = int(data.get("msg_cnt", 0))
            queued_bytes = int(data.get("msg_size", 0))
            state = eos.get("txn_state")
        elif previous is not None:
            queued_messages, queued_bytes, state = previous.queued_messages, previous.queued_bytes, previous.transaction_state
        else:
            queued_messages, queued_bytes, state = 0, 0, None
        self.stats.producer = ProducerStats(
            errors=sum(e for e, _ in self._counts.values()),
            retries=sum(r for _, r in self._counts.values()),
            queued_messages=queued_messages,
            queued_bytes=queued_bytes,
            transaction_state=state if isinstance(state, str) else None,
        )
