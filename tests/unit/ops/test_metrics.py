"""Metrics built from the loop's stats at scrape time: names, labels and values."""

from __future__ import annotations

import time

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from service.core.reasons import DEAD_LETTER_REASONS
from service.ops.metrics import build_registry
from service.runtime.stats import LoopStats, ProducerStats, TaskCounts
from tests.helpers import config_from_toml, config_toml, pipeline, session_window

CONFIG = config_toml(
    {"sessions": pipeline(["web"], session_window("1s"), dead_letter_topic="sessions-dlq")},
    app={"id": "shop", "instance_id": "i1"},
)


@pytest.fixture
def stats():
    stats = LoopStats()
    stats.source_dead_letters[("sessions-dlq", "invalid_json")] = 2
    stats.rebalances = 1
    stats.records_sent = 42
    return stats


def scrape(stats: LoopStats) -> dict[tuple[str, tuple], float]:
    """Every sample as (name, sorted labels) -> value; the ``app_id`` label, checked, left out of sessionizer_*."""
    text = generate_latest(build_registry(stats, config_from_toml(CONFIG))).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = dict(sample.labels)
            if family.name.startswith("sessionizer_"):
                assert labels.pop("app_id") == "shop", sample
            samples[(sample.name, tuple(sorted(labels.items())))] = sample.value
    return samples


def test_task_counters_carry_pipeline_and_partition(stats):
    stats.sample.tasks[("sessions", 0)] = TaskCounts(
        processed=3,
        late=1,
        emitted=1,
        dead_lettered=2,
        late_reasons={"behind_stream_time": 1},
        dead_letter_reasons={"invalid_json": 1, "unreadable_frame": 1},
    )
    stats.sample.task_states = {"running": 1, "restoring": 0}
    stats.count_consumed(("web", 0), 3)
    stats.count_consumed(("web", 0), 1)
    for _ in range(5):
        stats.committed(0.01, 0.01)
    observe = stats.emit_observer("sessions")
    observe(int(time.time() * 1000) - 4000)
    samples = scrape(stats)
    labels = (("partition", "0"), ("pipeline", "sessions"))
    assert samples[("sessionizer_events_processed_total", labels)] == 3
    assert samples[("sessionizer_late_events_total", (*labels, ("reason", "behind_stream_time")))] == 1
    assert samples[("sessionizer_late_events_total", (*labels, ("reason", "behind_watermark")))] == 0
    assert samples[("sessionizer_windows_emitted_total", labels)] == 1
    assert samples[("sessionizer_session_merges_total", labels)] == 0
    assert samples[("sessionizer_events_consumed_total", (("partition", "0"), ("topic", "web")))] == 4
    # the source stage's dead letters plus the window task's, by reason; every reason is there from the start
    dead = {dict(k[1])["reason"]: v for k, v in samples.items() if k[0] == "sessionizer_dead_letter_records_total"}
    assert dead == {reason: 0 for reason in DEAD_LETTER_REASONS} | {"invalid_json": 3, "unreadable_frame": 1}
    assert samples[("sessionizer_commits_total", ())] == 5
    assert samples[("sessionizer_rebalances_total", ())] == 1
    assert samples[("sessionizer_records_sent_total", ())] == 42
    assert samples[("sessionizer_tasks", (("state", "running"),))] == 1
    info = (("instance_id", "i1"), ("version", "0.1.0"))  # and app_id, as every sample
    assert samples[("sessionizer_info", info)] == 1
    delay = samples[("sessionizer_emit_delay_seconds_sum", (("pipeline", "sessions"),))]
    assert 3.0 < delay < 60
    assert samples[("sessionizer_emit_delay_seconds_bucket", (("le", "5.0"), ("pipeline", "sessions")))] == 1


def test_sampled_values_and_restore_progress(stats):
    stats.sample.task_states = {"restoring": 1, "running": 0}
    stats.sample.restore_remaining[("sessions", 2)] = 750
    stats.sample.stores[("sessions", 2)] = (17, 4096)
    stats.sample.lag[("web", 2)] = 9
    stats.sample.assigned = 2
    samples = scrape(stats)
    labels = (("partition", "2"), ("pipeline", "sessions"))
    assert samples[("sessionizer_restore_remaining_records", labels)] == 750
    assert samples[("sessionizer_state_keys", labels)] == 17
    assert samples[("sessionizer_state_bytes", labels)] == 4096
    assert samples[("sessionizer_consumer_lag_records", (("partition", "2"), ("topic", "web")))] == 9
    assert samples[("sessionizer_tasks", (("state", "restoring"),))] == 1
    assert samples[("sessionizer_assigned_partitions", ())] == 2


def test_commit_histograms(stats):
    stats.committed(0.02, 0.015)
    stats.committed(3.0, 2.9)
    samples = scrape(stats)
    assert samples[("sessionizer_commit_duration_seconds_count", ())] == 2
    assert samples[("sessionizer_commit_duration_seconds_bucket", (("le", "0.025"),))] == 1
    assert samples[("sessionizer_transaction_duration_seconds_bucket", (("le", "+Inf"),))] == 2
    assert samples[("sessionizer_transaction_duration_seconds_sum", ())] == pytest.approx(2.915)


def test_names_follow_prometheus_conventions(stats):
    stats.sample.tasks[("sessions", 0)] = TaskCounts()
    registry = build_registry(stats, config_from_toml(CONFIG))
    families = list(text_string_to_metric_families(generate_latest(registry).decode()))
    ours = [f for f in families if f.name.startswith("sessionizer")]
    assert len(ours) >= 20
    for family in ours:
        assert family.name == family.name.lower()
        assert family.documentation
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), family.name
        if {"duration", "delay", "age"} & set(family.name.split("_")):
            assert family.name.endswith("_seconds"), family.name
    assert any(f.name == "process_cpu_seconds" for f in families)  # process metrics come along


def test_every_sessionizer_sample_carries_the_app_id(stats):
    """Two applications in one Prometheus never add up: every sessionizer_* sample says whose it is."""
    stats.sample.tasks[("sessions", 0)] = TaskCounts(processed=1)
    stats.sample.stores[("sessions", 0)] = (1, 1)
    stats.sample.stream_time[("sessions", 0)] = 1_000
    stats.sample.watermarks[("sessions", 0, "web")] = 1_000
    stats.sample.restore_remaining[("sessions", 1)] = 5
    stats.sample.lag[("web", 0)] = 0
    stats.emit_observer("sessions")(0)
    text = generate_latest(build_registry(stats, config_from_toml(CONFIG))).decode()
    families = [f for f in text_string_to_metric_families(text) if f.name.startswith("sessionizer")]
    assert families
    for family in families:
        for sample in family.samples:
            assert sample.labels.get("app_id") == "shop", sample
    # the process collectors are left as prometheus_client makes them
    process = [f for f in text_string_to_metric_families(text) if f.name == "process_cpu_seconds"]
    assert process and "app_id" not in process[0].samples[0].labels


def test_stream_time_event_time_lag_and_source_watermarks(stats):
    now = time.time()
    stats.sample.stream_time[("sessions", 3)] = int((now - 90) * 1000)
    stats.sample.watermarks[("sessions", 3, "web")] = int((now - 30) * 1000)
    samples = scrape(stats)
    labels = (("partition", "3"), ("pipeline", "sessions"))
    assert samples[("sessionizer_stream_time_seconds", labels)] == pytest.approx(now - 90, abs=0.01)
    assert samples[("sessionizer_event_time_lag_seconds", labels)] == pytest.approx(90, abs=5)
    watermark = (("partition", "3"), ("pipeline", "sessions"), ("source", "web"))
    assert samples[("sessionizer_source_watermark_seconds", watermark)] == pytest.approx(now - 30, abs=0.01)


def test_librdkafka_statistics_once_they_arrive(stats):
    samples = scrape(stats)
    assert not any(name.startswith("sessionizer_kafka_") for name, _ in samples)  # nothing before the first statistics
    stats.kafka_consumer_lag[("web", 1)] = 40
    stats.producer = ProducerStats(errors=3, retries=7, queued_messages=12, queued_bytes=4096, transaction_state="InTransaction")
    samples = scrape(stats)
    assert samples[("sessionizer_kafka_consumer_lag_records", (("partition", "1"), ("topic", "web")))] == 40
    assert samples[("sessionizer_kafka_producer_errors_total", ())] == 3
    assert samples[("sessionizer_kafka_producer_retries_total", ())] == 7
    assert samples[("sessionizer_kafka_producer_queue_messages", ())] == 12
    assert samples[("sessionizer_kafka_producer_queue_bytes", ())] == 4096
    states = {dict(labels)["state"]: value for (name, labels), value in samples.items() if name == "sessionizer_kafka_transaction_state"}
    assert states["InTransaction"] == 1 and states["Ready"] == 0 and sum(states.values()) == 1
    assert len(states) == 13  # librdkafka's states, every one present


def test_an_unknown_transaction_state_is_shown_too(stats):
    stats.producer = ProducerStats(transaction_state="SomethingNew")
    states = {dict(labels)["state"]: v for (name, labels), v in scrape(stats).items() if name == "sessionizer_kafka_transaction_state"}
    assert states["SomethingNew"] == 1 and len(states) == 14
