"""Prometheus metrics, built from the stream loop's ``LoopStats`` when scraped.

The stream loop is per-event Python, so metrics cost it nothing per event:
the loop keeps plain counters and lock-free histograms in ``LoopStats``
(``service.runtime.stats``), and once a second copies into a ``Sample``
whatever needs a Kafka client or a store (consumer lag, store sizes, per-task
totals). The collector here reads only that, from the HTTP thread, and never
touches a client or a store the loop may be closing.

Counters of a task (one partition of one pipeline) survive the task: when a
partition is revoked, its final counts are kept, so a counter never goes down
while the process lives.

Every ``sessionizer_*`` sample carries ``app_id``, so two applications scraped
by one Prometheus never add up; ``collect`` adds it to each family's samples.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

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
from service.core.reasons import DEAD_LETTER_REASONS, LATE_REASONS
from service.runtime.kafka_stats import TRANSACTION_STATES
from service.runtime.stats import Buckets, LoopStats


class LoopCollector(Collector):
    """The service's metrics, built from the loop's stats at each scrape."""

    def __init__(self, stats: LoopStats, config: Config) -> None:
        self.stats = stats
        self.config = config

    def collect(self) -> Iterator[Metric]:
        app = {"app_id": self.config.app_id}
        families = list(self._families())
        for family in families:
            family.samples = [sample._replace(labels={**app, **sample.labels}) for sample in family.samples]
        return iter(families)

    def _families(self) -> Iterator[Metric]:
        metrics = self.stats
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

        totals = sorted(sample.tasks.items())
        per_task = [
            ("sessionizer_events_processed", "Events added to windows, per pipeline and partition.", "processed"),
            ("sessionizer_windows_emitted", "Final window records emitted, per pipeline and partition.", "emitted"),
            ("sessionizer_session_merges", "Sessions merged because an event bridged them.", "merges"),
            ("sessionizer_restored_records", "Changelog records applied while restoring state.", "restored"),
        ]
        for name, documentation, attribute in per_task:
            family = CounterMetricFamily(name, documentation, labels=["pipeline", "partition"])
            for (pipeline, partition), total in totals:
                family.add_metric([pipeline, str(partition)], getattr(total, attribute))
            yield family

        late = CounterMetricFamily(
            "sessionizer_late_events",
            "Events sent to the late topic, per pipeline, partition and reason (behind_watermark, behind_stream_time).",
            labels=["pipeline", "partition", "reason"],
        )
        for (pipeline, partition), total in totals:
            for reason in _with_fixed(total.late_reasons, LATE_REASONS):
                late.add_metric([pipeline, str(partition), reason], total.late_reasons.get(reason, 0))
        yield late

        dead = CounterMetricFamily(
            "sessionizer_dead_letter_records",
            "Records written to a dead-letter topic, per that topic and reason (invalid_json, no_key, bad_timestamp...).",
            labels=["topic", "reason"],
        )
        by_topic: dict[tuple[str, str], int] = dict(metrics.source_dead_letters)
        dlq_of = {p.name: p.dead_letter_topic for p in config.pipelines}
        for (pipeline, _), total in totals:
            dead_letter_topic = dlq_of.get(pipeline)
            if dead_letter_topic is not None:
                for reason, count in total.dead_letter_reasons.items():
                    where = (dead_letter_topic, reason)
                    by_topic[where] = by_topic.get(where, 0) + count
        for dead_letter_topic in {p.dead_letter_topic for p in config.pipelines}:
            for reason in DEAD_LETTER_REASONS:
                by_topic.setdefault((dead_letter_topic, reason), 0)
        for (topic, reason), count in sorted(by_topic.items()):
            dead.add_metric([topic, reason], count)
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
        for state in ("restoring", "running"):
            tasks.add_metric([state], sample.task_states.get(state, 0))
        yield tasks

        remaining = GaugeMetricFamily(
            "sessionizer_restore_remaining_records",
            "Changelog records still to read for each partition being restored.",
            labels=["pipeline", "partition"],
        )
        for (pipeline, partition), records in sorted(sample.restore_remaining.items()):
            remaining.add_metric([pipeline, str(partition)], records)
        yield remaining

        standby = GaugeMetricFamily(
            "sessionizer_standby_lag_records",
            "Changelog records each standby copy this instance keeps still lacks (app.num_standby_replicas).",
            labels=["pipeline", "partition"],
        )
        for (pipeline, partition), records in sorted(sample.standby_lag.items()):
            standby.add_metric([pipeline, str(partition)], records)
        yield standby

        stream_time = GaugeMetricFamily(
            "sessionizer_stream_time_seconds",
            "Stream time (event time, epoch seconds) of each running window task, sampled each second.",
            labels=["pipeline", "partition"],
        )
        event_lag = GaugeMetricFamily(
            "sessionizer_event_time_lag_seconds",
            "Wall clock at the scrape minus each running window task's stream time: how far event time is behind.",
            labels=["pipeline", "partition"],
        )
        wall = time.time()
        for (pipeline, partition), time_ms in sorted(sample.stream_time.items()):
            stream_time.add_metric([pipeline, str(partition)], time_ms / 1000)
            event_lag.add_metric([pipeline, str(partition)], wall - time_ms / 1000)
        yield stream_time
        yield event_lag

        watermark = GaugeMetricFamily(
            "sessionizer_source_watermark_seconds",
            "Per window task and source topic: the lowest watermark (epoch seconds) of the topic's partitions, "
            "the one holding stream time back; sampled each second.",
            labels=["pipeline", "partition", "source"],
        )
        for (pipeline, partition, source), time_ms in sorted(sample.watermarks.items()):
            watermark.add_metric([pipeline, str(partition), source], time_ms / 1000)
        yield watermark

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
            delay.add_metric([pipeline], _cumulative(buckets), buckets.sum)
        yield delay

        lag = GaugeMetricFamily(
            "sessionizer_consumer_lag_records",
            "Records between the consumer's position and the partition's end, sampled each second.",
            labels=["topic", "partition"],
        )
        for (topic, partition), records in sorted(sample.lag.items()):
            lag.add_metric([topic, str(partition)], records)
        yield lag

        yield from self._librdkafka_families()

        yield CounterMetricFamily(
            "sessionizer_schema_registry_errors",
            "Schema lookups that failed because the registry was down, slow or erring (not 'no such schema'); "
            "their records wait, paused, and are retried.",
            value=metrics.schema_registry_errors,
        )
        yield GaugeMetricFamily(
            "sessionizer_schema_registry_waiting_partitions",
            "Partitions paused until the schema registry gives the schema of their next record.",
            value=metrics.schema_registry_waiting,
        )
        yield CounterMetricFamily("sessionizer_punctuations", "Wall-clock punctuator runs.", value=metrics.punctuations)
        yield CounterMetricFamily("sessionizer_rebalances", "Partition assignments, revocations and losses.", value=metrics.rebalances)
        yield CounterMetricFamily("sessionizer_commits", "Commits that wrote something.", value=metrics.commits)
        yield CounterMetricFamily(
            "sessionizer_rollbacks",
            "Times uncommitted work was dropped to be read again: aborted transactions, failed commits, lost partitions.",
            value=metrics.aborts,
        )
        yield CounterMetricFamily(
            "sessionizer_redelivered_records_dropped",
            "Records the consumer handed over again after they were processed; dropped so they count once.",
            value=metrics.redelivered,
        )
        yield CounterMetricFamily(
            "sessionizer_records_sent",
            "Records produced: repartition, output, changelog, late and dead-letter.",
            value=metrics.records_sent,
        )


    def _librdkafka_families(self) -> Iterator[Metric]:
        """What librdkafka's statistics said last (every ``statistics.interval.ms``, 15 s by default)."""
        metrics = self.stats
        lag = GaugeMetricFamily(
            "sessionizer_kafka_consumer_lag_records",
            "librdkafka's consumer_lag: partition end minus the group's committed offset, from its statistics; "
            "absent under exactly-once (the transaction commits the offsets, librdkafka's consumer never sees them).",
            labels=["topic", "partition"],
        )
        for (topic, partition), records in sorted(dict(metrics.kafka_consumer_lag).items()):
            lag.add_metric([topic, str(partition)], records)
        yield lag

        producer = metrics.producer
        errors = CounterMetricFamily(
            "sessionizer_kafka_producer_errors",
            "Producer requests that failed (librdkafka's txerrs, summed over brokers and over replaced producers).",
            labels=[],
        )
        retries = CounterMetricFamily(
            "sessionizer_kafka_producer_retries",
            "Producer requests retried (librdkafka's txretries, summed over brokers and over replaced producers).",
            labels=[],
        )
        queued = GaugeMetricFamily(
            "sessionizer_kafka_producer_queue_messages",
            "Messages waiting in the producer's queue (librdkafka's msg_cnt), at its last statistics.",
            labels=[],
        )
        queued_bytes = GaugeMetricFamily(
            "sessionizer_kafka_producer_queue_bytes",
            "Bytes waiting in the producer's queue (librdkafka's msg_size), at its last statistics.",
            labels=[],
        )
        state = GaugeMetricFamily(
            "sessionizer_kafka_transaction_state",
            "1 for the producer's transaction state at librdkafka's last statistics (eos.txn_state), 0 for the others.",
            labels=["state"],
        )
        if producer is not None:
            errors.add_metric([], producer.errors)
            retries.add_metric([], producer.retries)
            queued.add_metric([], producer.queued_messages)
            queued_bytes.add_metric([], producer.queued_bytes)
            current = producer.transaction_state
            if self.config.exactly_once and current is not None:
                for name in _with_fixed({current: 1}, TRANSACTION_STATES):
                    state.add_metric([name], 1 if name == current else 0)
        yield errors
        yield retries
        yield queued
        yield queued_bytes
        yield state


def _with_fixed(seen: dict[str, int], fixed: tuple[str, ...]) -> list[str]:
    """The fixed codes, always present (a counter at 0 lets ``rate`` see its first increase), then any other seen."""
    return [*fixed, *sorted(code for code in seen if code not in fixed)]


def _histogram(name: str, documentation: str, buckets: Buckets) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation)
    family.add_metric([], _cumulative(buckets), buckets.sum)
    return family


def _cumulative(buckets: Buckets) -> list[tuple[str, float]]:
    """Prometheus' bucket labels: the bound as a float's text, ``+Inf`` for the last."""
    return [("+Inf" if bound == float("inf") else repr(float(bound)), count) for bound, count in buckets.cumulative()]


def build_registry(stats: LoopStats, config: Config) -> CollectorRegistry:
    """The service's own registry: its collector plus process, platform and GC metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LoopCollector(stats, config))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
