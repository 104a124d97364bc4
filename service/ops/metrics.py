"""Prometheus metrics, read from the running loop when scraped.

The stream loop is per-event Python, so metrics cost it nothing per event:

- counts the loop keeps anyway (``WindowProcessor.counters``, commits,
  rebalances, punctuations, records sent) are read by ``LoopCollector`` at
  scrape time, from the HTTP thread, as plain integers;
- what the loop has to record is recorded once per batch or per commit into
  ``LoopMetrics`` (consumed records per partition, commit and transaction
  durations) and once per emitted window (emit delay), into lock-free
  ``Buckets`` that only the loop thread writes;
- what needs a librdkafka or RocksDB call (consumer lag, store size) is
  sampled by the loop thread itself once a second (``LoopMetrics.tick``), so
  the HTTP thread never touches a client or a store the loop may be closing.

Counters of a task (one partition of one pipeline) survive the task: when a
partition is revoked, the collector keeps its final counts, so a counter never
goes down while the process lives.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from service import __version__
from service.config import Config

if TYPE_CHECKING:
    from service.runtime.loop import StreamLoop
    from service.runtime.tasks import WindowTask

log = structlog.get_logger("sessionizer.metrics")

#: How often the loop samples consumer lag, store sizes and its assignment.
SAMPLE_INTERVAL = 1.0

COMMIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
EMIT_DELAY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0, 86400.0)

Where = tuple[str, int]


class Buckets:
    """A histogram written by one thread and read by another, without a lock.

    Counts are per bucket (``value <= bound``) and made cumulative when read;
    a scrape racing an observation may see the sum a step ahead of the counts,
    which Prometheus tolerates.
    """

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        counts = list(self.counts)
        out = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), counts):
            total += count
            out.append(("+Inf" if bound == float("inf") else _float(bound), total))
        return out


@dataclass
class Sample:
    """What the loop thread measured at its last sampling."""

    at: float = 0.0
    assigned: int = 0
    lag: dict[Where, int] = field(default_factory=dict)
    #: (pipeline, partition) -> (approximate keys, approximate bytes)
    stores: dict[Where, tuple[int, int]] = field(default_factory=dict)


class LoopMetrics:
    """What the stream loop records for metrics and health; written only by the loop thread."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        #: Monotonic time of the loop's last iteration (liveness).
        self.last_iteration = self.started
        #: True from the loop's first iteration until it closes.
        self.running = False
        self.consumed: dict[Where, int] = {}
        self.aborts = 0
        self.commit_seconds = Buckets(COMMIT_BUCKETS)
        self.transaction_seconds = Buckets(COMMIT_BUCKETS)
        self.emit_delay: dict[str, Buckets] = {}
        self.sample = Sample()
        self._next_sample = 0.0
        self._sampled_rebalances = 0

    # -- hooks the loop calls -----------------------------------------------------

    def count_consumed(self, where: Where, count: int) -> None:
        """Once per partition per batch."""
        self.consumed[where] = self.consumed.get(where, 0) + count

    def committed(self, seconds: float, transaction_seconds: float) -> None:
        self.commit_seconds.observe(seconds)
        self.transaction_seconds.observe(transaction_seconds)

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

    def tick(self, loop: StreamLoop, now: float) -> None:
        """Every loop iteration: note that the loop is alive; once a second or after a rebalance, sample."""
        self.last_iteration = now
        self.running = True
        if now < self._next_sample and loop.rebalances == self._sampled_rebalances:
            return
        self._next_sample = now + SAMPLE_INTERVAL
        self._sampled_rebalances = loop.rebalances
        try:
            self.sample = take_sample(loop, now)
        except Exception as exc:  # a metric must never stop the loop
            log.warning("metrics sampling failed", error=str(exc))


def take_sample(loop: StreamLoop, now: float) -> Sample:
    """Consumer lag per partition and store sizes, read in the loop's own thread.

    Lag is the high watermark librdkafka last saw in a fetch response (the last
    stable offset under read_committed) minus the consumer's position: no
    request to the broker is made.
    """
    consumer = loop.consumer
    assignment = consumer.assignment()
    lag: dict[Where, int] = {}
    if assignment:
        for tp in consumer.position(assignment):
            if tp.offset < 0:
                continue  # nothing fetched yet
            _low, high = consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0:
                lag[(tp.topic, tp.partition)] = max(0, high - tp.offset)
    stores = {}
    for task in list(loop.tasks.values()):
        stores[(task.pipeline.name, task.partition)] = (task.store.approximate_keys(), task.store.approximate_bytes())
    return Sample(at=now, assigned=len(assignment), lag=lag, stores=stores)


@dataclass
class TaskTotals:
    processed: int = 0
    late: int = 0
    emitted: int = 0
    merges: int = 0
    dead_lettered: int = 0
    restored: int = 0

    def add(self, other: TaskTotals) -> None:
        self.processed += other.processed
        self.late += other.late
        self.emitted += other.emitted
        self.merges += other.merges
        self.dead_lettered += other.dead_lettered
        self.restored += other.restored

    @classmethod
    def of(cls, task: WindowTask) -> TaskTotals:
        c = task.processor.counters
        return cls(c.processed, c.late, c.emitted, c.merges, task.dead_lettered, task.restored_records)


class LoopCollector(Collector):
    """The service's metrics, built from the loop's state at each scrape."""

    def __init__(self, loop: StreamLoop, config: Config) -> None:
        self.loop = loop
        self.config = config
        self._lock = threading.Lock()
        self._seen: dict[int, WindowTask] = {}
        self._retired: dict[Where, TaskTotals] = {}

    def collect(self) -> Iterator[Metric]:
        with self._lock:  # scrapes may run concurrently; the retired totals are shared
            families = list(self._families())
        return iter(families)

    def _task_totals(self) -> dict[Where, TaskTotals]:
        """Counts per (pipeline, partition): revoked tasks' final counts plus live tasks'."""
        current = {id(t): t for t in list(self.loop.tasks.values())}
        for ident, task in self._seen.items():
            if ident not in current:
                self._retired.setdefault((task.pipeline.name, task.partition), TaskTotals()).add(TaskTotals.of(task))
        self._seen = current
        totals = {where: TaskTotals() for where in self._retired}
        for where, retired in self._retired.items():
            totals[where].add(retired)
        for task in current.values():
            totals.setdefault((task.pipeline.name, task.partition), TaskTotals()).add(TaskTotals.of(task))
        return totals

    def _families(self) -> Iterator[Metric]:
        loop = self.loop
        metrics = loop.metrics
        sample = metrics.sample
        config = self.config

        info = InfoMetricFamily("sessionizer", "The running sessionizer: version, app id and instance id.")
        info.add_metric([], {"version": __version__, "app_id": config.app_id, "instance_id": config.instance_id})
        yield info

        yield GaugeMetricFamily(
            "sessionizer_loop_iteration_age_seconds",
            "Seconds since the stream loop last went round; /healthz fails when it exceeds http.liveness_timeout.",
            value=time.monotonic() - metrics.last_iteration,
        )
        yield GaugeMetricFamily(
            "sessionizer_assigned_partitions",
            "Partitions (source and repartition) assigned to this instance, sampled each second.",
            value=sample.assigned,
        )

        consumed = CounterMetricFamily(
            "sessionizer_events_consumed", "Records consumed, per topic and partition.", labels=["topic", "partition"]
        )
        for (topic, partition), count in sorted(dict(metrics.consumed).items()):
            consumed.add_metric([topic, str(partition)], count)
        yield consumed

        totals = sorted(self._task_totals().items())
        per_task = [
            ("sessionizer_events_processed", "Events added to windows, per pipeline and partition.", "processed"),
            ("sessionizer_late_events", "Events sent to the late topic, per pipeline and partition.", "late"),
            ("sessionizer_windows_emitted", "Final window records emitted, per pipeline and partition.", "emitted"),
            ("sessionizer_session_merges", "Sessions merged because an event bridged them.", "merges"),
            ("sessionizer_restored_records", "Changelog records applied while restoring state.", "restored"),
        ]
        for name, documentation, attribute in per_task:
            family = CounterMetricFamily(name, documentation, labels=["pipeline", "partition"])
            for (pipeline, partition), total in totals:
                family.add_metric([pipeline, str(partition)], getattr(total, attribute))
            yield family

        dead = CounterMetricFamily(
            "sessionizer_dead_letter_records", "Records written to a dead-letter topic, per that topic.", labels=["topic"]
        )
        by_topic = dict(loop.sources.dead_letters)
        dlq_of = {p.name: p.config.dead_letter_topic for p in loop.pipelines}
        for (pipeline, _), total in totals:
            topic = dlq_of.get(pipeline)
            if topic is not None:
                by_topic[topic] = by_topic.get(topic, 0) + total.dead_lettered
        for pipeline in loop.pipelines:
            by_topic.setdefault(pipeline.config.dead_letter_topic, 0)
        for topic, count in sorted(by_topic.items()):
            dead.add_metric([topic], count)
        yield dead

        keys = GaugeMetricFamily(
            "sessionizer_state_keys",
            "Keys holding at least one open window (RocksDB estimate), sampled each second.",
            labels=["pipeline", "partition"],
        )
        size = GaugeMetricFamily(
            "sessionizer_state_bytes",
            "State store size on disk and in memtables (RocksDB estimate), sampled each second.",
            labels=["pipeline", "partition"],
        )
        for (pipeline, partition), (key_count, byte_count) in sorted(sample.stores.items()):
            keys.add_metric([pipeline, str(partition)], key_count)
            size.add_metric([pipeline, str(partition)], byte_count)
        yield keys
        yield size

        tasks = GaugeMetricFamily("sessionizer_tasks", "Window tasks by state (restoring or running).", labels=["state"])
        states = [t.state.value for t in list(loop.tasks.values())]
        for state in ("restoring", "running"):
            tasks.add_metric([state], states.count(state))
        yield tasks

        remaining = GaugeMetricFamily(
            "sessionizer_restore_remaining_records",
            "Changelog records still to read for each partition being restored.",
            labels=["pipeline", "partition"],
        )
        for restoration in list(loop.state.restoring.values()):
            task = restoration.task
            remaining.add_metric(
                [task.pipeline.name, str(task.partition)], max(0, restoration.end - restoration.position)
            )
        yield remaining

        yield _histogram(
            "sessionizer_commit_duration_seconds",
            "Wall time of a commit: closing due windows, writing changelogs, the transaction, the RocksDB write.",
            metrics.commit_seconds,
        )
        yield _histogram(
            "sessionizer_transaction_duration_seconds",
            "Wall time of committing the Kafka transaction with the consumed offsets (a flush under at-least-once).",
            metrics.transaction_seconds,
        )
        delay = HistogramMetricFamily(
            "sessionizer_emit_delay_seconds",
            "Wall clock at emit minus the window's close time (event time), per pipeline.",
            labels=["pipeline"],
        )
        for pipeline, buckets in sorted(dict(metrics.emit_delay).items()):
            delay.add_metric([pipeline], buckets.cumulative(), buckets.sum)
        yield delay

        lag = GaugeMetricFamily(
            "sessionizer_consumer_lag_records",
            "Records between the consumer's position and the partition's end, sampled each second.",
            labels=["topic", "partition"],
        )
        for (topic, partition), records in sorted(sample.lag.items()):
            lag.add_metric([topic, str(partition)], records)
        yield lag

        yield CounterMetricFamily("sessionizer_punctuations", "Wall-clock punctuator runs.", value=loop.punctuator.runs)
        yield CounterMetricFamily("sessionizer_rebalances", "Partition assignments, revocations and losses.", value=loop.rebalances)
        yield CounterMetricFamily("sessionizer_commits", "Commits that wrote something.", value=loop.commits)
        yield CounterMetricFamily(
            "sessionizer_rollbacks",
            "Times uncommitted work was dropped to be read again: aborted transactions, failed commits, lost partitions.",
            value=metrics.aborts,
        )
        yield CounterMetricFamily(
            "sessionizer_records_sent",
            "Records produced: repartition, output, changelog, late and dead-letter.",
            value=loop.collector.sent,
        )


def _histogram(name: str, documentation: str, buckets: Buckets) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation)
    family.add_metric([], buckets.cumulative(), buckets.sum)
    return family


def _float(value: float) -> str:
    return repr(float(value))


def build_registry(loop: StreamLoop, config: Config) -> CollectorRegistry:
    """The service's own registry: its collector plus process, platform and GC metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LoopCollector(loop, config))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
