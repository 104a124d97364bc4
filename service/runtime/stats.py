"""What the stream loop measures, kept where the operations layer can read it.

The loop thread is the only writer. HTTP threads (``/metrics``, ``/healthz``,
``/readyz``) only read, so the loop never takes a lock: a scrape may see one
counter a step ahead of another, which Prometheus tolerates. Anything that
needs a client or a store (lag, store sizes, per-task counts) is copied into a
``Sample`` by the loop thread once a second, so readers never touch Kafka
clients or RocksDB.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from service.runtime.ids import Partition, TaskId

#: How often the loop samples consumer lag, store sizes and its tasks.
SAMPLE_INTERVAL = 1.0

COMMIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
EMIT_DELAY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0, 86400.0)


class Buckets:
    """A histogram written by one thread and read by another, without a lock.

    Counts are per bucket (``value <= bound``) and made cumulative when read.
    """

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, count <= bound)`` pairs, the last bound being infinity."""
        out = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), list(self.counts)):
            total += count
            out.append((bound, total))
        return out


@dataclass
class TaskCounts:
    """Running totals of one pipeline partition, kept across the tasks that held it."""

    processed: int = 0
    late: int = 0
    emitted: int = 0
    merges: int = 0
    dead_lettered: int = 0
    restored: int = 0
    #: ``late`` by reason code (``service.core.reasons.LATE_REASONS``).
    late_reasons: dict[str, int] = field(default_factory=dict)
    #: ``dead_lettered`` by reason code (``service.core.reasons.DEAD_LETTER_REASONS``).
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)

    def add(self, other: TaskCounts) -> None:
        self.processed += other.processed
        self.late += other.late
        self.emitted += other.emitted
        self.merges += other.merges
        self.dead_lettered += other.dead_lettered
        self.restored += other.restored
        for mine, theirs in ((self.late_reasons, other.late_reasons), (self.dead_letter_reasons, other.dead_letter_reasons)):
            for code, count in theirs.items():
                mine[code] = mine.get(code, 0) + count


@dataclass
class Sample:
    """What the loop thread measured at its last sampling."""

    at: float = 0.0
    assigned: int = 0
    lag: dict[Partition, int] = field(default_factory=dict)
    #: (pipeline, partition) -> (approximate keys, approximate bytes)
    stores: dict[TaskId, tuple[int, int]] = field(default_factory=dict)
    #: (pipeline, partition) -> totals, including tasks that were revoked before.
    tasks: dict[TaskId, TaskCounts] = field(default_factory=dict)
    #: Task state ("restoring", "running") -> how many tasks are in it.
    task_states: dict[str, int] = field(default_factory=dict)
    #: (pipeline, partition) -> changelog records still to read.
    restore_remaining: dict[TaskId, int] = field(default_factory=dict)
    #: Per standby copy this instance keeps, the changelog records it lacks.
    standby_lag: dict[TaskId, int] = field(default_factory=dict)
    #: (pipeline, partition) -> stream time (event time, epoch ms) of each running window task that has one.
    stream_time: dict[TaskId, int] = field(default_factory=dict)
    #: (pipeline, partition, source topic) -> that topic's watermark as the task sees it (epoch ms).
    watermarks: dict[tuple[str, int, str], int] = field(default_factory=dict)


@dataclass(frozen=True)
class ProducerStats:
    """What librdkafka's last statistics said of the producer (``service.runtime.kafka_stats``)."""

    #: Failed requests (``txerrs``) and retried requests (``txretries``), summed over
    #: brokers and over every producer this process made: they never go down.
    errors: int = 0
    retries: int = 0
    #: Messages and bytes waiting in the producer's queue (``msg_cnt``, ``msg_size``).
    queued_messages: int = 0
    queued_bytes: int = 0
    #: The transaction state (``eos.txn_state``: ``Ready``, ``InTransaction``...).
    transaction_state: str | None = None


class LoopStats:
    """Counters and histograms of one stream loop; written only by the loop thread.

    Except librdkafka's statistics (``kafka_consumer_lag``, ``producer``), which
    the clients' callbacks replace whole, from whichever thread polls them.
    """

    def __init__(self) -> None:
        self.started = time.monotonic()
        #: Monotonic time of the loop's last iteration (liveness).
        self.last_iteration = self.started
        #: True from the loop's first iteration until it closes.
        self.running = False
        #: Why the loop is not running yet ("broker unreachable: …"), for /readyz.
        self.not_ready: str | None = "starting"
        #: Partitions restoring right now, kept live (a restore can start and end between samples).
        self.restoring = 0
        self.consumed: dict[Partition, int] = {}
        self.commits = 0
        self.aborts = 0
        self.rebalances = 0
        self.punctuations = 0
        self.records_sent = 0
        #: Records the consumer handed over again that were processed already, and dropped.
        self.redelivered = 0
        #: (dead-letter topic, reason code) -> records the source stage wrote to it.
        self.source_dead_letters: dict[tuple[str, str], int] = {}
        self.commit_seconds = Buckets(COMMIT_BUCKETS)
        self.transaction_seconds = Buckets(COMMIT_BUCKETS)
        self.emit_delay: dict[str, Buckets] = {}
        #: Totals of tasks that were closed, so counters never go down.
        self.retired: dict[TaskId, TaskCounts] = {}
        #: librdkafka's consumer lag per partition (committed offset basis), from its statistics.
        self.kafka_consumer_lag: dict[Partition, int] = {}
        #: librdkafka's producer statistics; None until the first arrive.
        self.producer: ProducerStats | None = None
        #: Schema lookups that failed because the registry was down, slow or erring (not "no such schema").
        self.schema_registry_errors = 0
        #: Partitions paused until the registry gives their next record's schema.
        self.schema_registry_waiting = 0
        #: Why some of them wait longer than a lookup takes (the last failure), for /readyz; None otherwise.
        self.schema_registry_problem: str | None = None
        self.sample = Sample()
        self._next_sample = 0.0
        self._sampled_rebalances = 0

    def count_consumed(self, where: Partition, count: int) -> None:
        """Once per partition per batch."""
        self.consumed[where] = self.consumed.get(where, 0) + count

    def committed(self, seconds: float, transaction_seconds: float) -> None:
        self.commits += 1
        self.commit_seconds.observe(seconds)
        self.transaction_seconds.observe(transaction_seconds)

    def retire(self, task: TaskId, counts: TaskCounts) -> None:
        self.retired.setdefault(task, TaskCounts()).add(counts)

    def task_totals(self, live: Iterable[tuple[TaskId, TaskCounts]]) -> dict[TaskId, TaskCounts]:
        """Totals per (pipeline, partition): retired tasks' final counts plus the ``live`` tasks'."""
        totals: dict[TaskId, TaskCounts] = {}
        for task_id, retired in self.retired.items():
            totals.setdefault(task_id, TaskCounts()).add(retired)
        for task_id, counts in live:
            totals.setdefault(task_id, TaskCounts()).add(counts)
        return totals

    def emit_observer(self, pipeline: str) -> Callable[[int], None]:
        """A callback for ``WindowProcessor.on_emit``: records wall clock minus close time."""
        buckets = self.emit_delay.get(pipeline)
        if buckets is None:
            buckets = self.emit_delay[pipeline] = Buckets(EMIT_DELAY_BUCKETS)
        observe = buckets.observe
        clock = time.time

        def on_emit(close_ms: int) -> None:
            # An event stamped ahead of this host's clock can close a window "in
            # the future"; that counts as no delay.
            observe(max(0.0, clock() - close_ms / 1000))

        return on_emit

    def tick(self, now: float) -> bool:
        """Every loop iteration: note that the loop is alive; True when a new sample is due."""
        self.last_iteration = now
        self.running = True
        self.not_ready = None
        if now < self._next_sample and self.rebalances == self._sampled_rebalances:
            return False
        self._next_sample = now + SAMPLE_INTERVAL
        self._sampled_rebalances = self.rebalances
        return True
