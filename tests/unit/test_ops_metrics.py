"""Metrics read from the loop at scrape time: names, labels, values, and counters that never go down."""

from __future__ import annotations

import time
from types import SimpleNamespace

import orjson
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from service.ops.metrics import Buckets, LoopMetrics, build_registry
from service.core.pipeline import Pipeline
from service.runtime.punctuator import Punctuator
from service.runtime.tasks import TaskState, WindowTask
from service.state.store import WindowStore
from tests.helpers import config_from_toml

CONFIG = """
[app]
id = "shop"
instance_id = "i1"
[pipelines.sessions]
sources = ["web"]
key = "user_id"
time = "ts"
output = "out"
dead_letter_topic = "sessions-dlq"
[pipelines.sessions.window]
type = "session"
gap = "1s"
"""


class FakeLoop(SimpleNamespace):
    """The attributes of ``StreamLoop`` the collector reads, with real tasks and stores."""


@pytest.fixture
def loop(tmp_path):
    config = config_from_toml(CONFIG)
    pipeline = Pipeline(config.pipelines[0])
    fake = FakeLoop(
        config=config,
        pipelines=(pipeline,),
        tasks={},
        state=SimpleNamespace(restoring={}),
        sources=SimpleNamespace(dead_letters={"sessions-dlq": 2}),
        punctuator=Punctuator(1.0),
        rebalances=1,
        commits=5,
        collector=SimpleNamespace(sent=42),
        metrics=LoopMetrics(),
    )
    fake.stores = []

    def add_task(partition: int) -> WindowTask:
        store = WindowStore(tmp_path / f"{partition}-{len(fake.stores)}", pipeline.window)
        fake.stores.append(store)
        task = WindowTask(pipeline, "shop-sessions-repartition", partition, store)
        task.state = TaskState.RUNNING
        task.processor.on_emit = fake.metrics.emit_observer(pipeline.name)
        fake.tasks[(task.topic, partition)] = task
        return task

    fake.add_task = add_task
    yield fake
    for store in fake.stores:
        store.close()


def scrape(loop) -> dict[tuple[str, tuple], float]:
    """Every sample as (name, sorted labels) -> value, from the loop's one registry."""
    if not hasattr(loop, "registry"):
        loop.registry = build_registry(loop, loop.config)
    text = generate_latest(loop.registry).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def send(task: WindowTask, user: str, time_ms: int) -> None:
    event = {"user_id": user, "ts": time_ms}
    task.processor.process(user.encode(), time_ms, event, orjson.dumps(event))


def test_counters_come_from_the_processors_with_pipeline_and_partition(loop):
    task = loop.add_task(0)
    now = int(time.time() * 1000)
    send(task, "a", now - 5000)
    send(task, "a", now - 4500)
    send(task, "b", now)  # stream time moves on: a's session closes
    send(task, "a", now - 60_000)  # late
    assert task.processor.close_due() == 1
    loop.metrics.count_consumed(("web", 0), 3)
    loop.metrics.count_consumed(("web", 0), 1)
    samples = scrape(loop)
    labels = (("partition", "0"), ("pipeline", "sessions"))
    assert samples[("sessionizer_events_processed_total", labels)] == 3
    assert samples[("sessionizer_late_events_total", labels)] == 1
    assert samples[("sessionizer_windows_emitted_total", labels)] == 1
    assert samples[("sessionizer_session_merges_total", labels)] == 0
    assert samples[("sessionizer_events_consumed_total", (("partition", "0"), ("topic", "web")))] == 4
    assert samples[("sessionizer_dead_letter_records_total", (("topic", "sessions-dlq"),))] == 2
    assert samples[("sessionizer_commits_total", ())] == 5
    assert samples[("sessionizer_rebalances_total", ())] == 1
    assert samples[("sessionizer_records_sent_total", ())] == 42
    assert samples[("sessionizer_tasks", (("state", "running"),))] == 1
    info = (("app_id", "shop"), ("instance_id", "i1"), ("version", "0.1.0"))
    assert samples[("sessionizer_info", info)] == 1
    # the emitted session closed at (now - 4500) + gap: wall clock minus that is a few seconds
    delay = samples[("sessionizer_emit_delay_seconds_sum", (("pipeline", "sessions"),))]
    assert 3.0 < delay < 60
    assert samples[("sessionizer_emit_delay_seconds_bucket", (("le", "5.0"), ("pipeline", "sessions")))] == 1


def test_a_revoked_partitions_counts_are_kept_so_counters_never_go_down(loop):
    first = loop.add_task(1)
    now = int(time.time() * 1000)
    for i in range(3):
        send(first, f"u{i}", now)
    labels = (("partition", "1"), ("pipeline", "sessions"))
    assert scrape(loop)[("sessionizer_events_processed_total", labels)] == 3
    send(first, "late-but-before-revoke", now)  # counted after the last scrape
    del loop.tasks[(first.topic, 1)]  # revoked
    assert scrape(loop)[("sessionizer_events_processed_total", labels)] == 4
    again = loop.add_task(1)  # assigned back: a new task, a new store
    send(again, "x", now)
    assert scrape(loop)[("sessionizer_events_processed_total", labels)] == 5


def test_sampled_values_and_restore_progress(loop):
    task = loop.add_task(2)
    task.state = TaskState.RESTORING
    loop.state.restoring[("shop-sessions-changelog", 2)] = SimpleNamespace(task=task, end=1000, position=250)
    loop.metrics.sample.stores[("sessions", 2)] = (17, 4096)
    loop.metrics.sample.lag[("web", 2)] = 9
    loop.metrics.sample.assigned = 2
    samples = scrape(loop)
    labels = (("partition", "2"), ("pipeline", "sessions"))
    assert samples[("sessionizer_restore_remaining_records", labels)] == 750
    assert samples[("sessionizer_state_keys", labels)] == 17
    assert samples[("sessionizer_state_bytes", labels)] == 4096
    assert samples[("sessionizer_consumer_lag_records", (("partition", "2"), ("topic", "web")))] == 9
    assert samples[("sessionizer_tasks", (("state", "restoring"),))] == 1
    assert samples[("sessionizer_assigned_partitions", ())] == 2


def test_commit_histograms(loop):
    loop.metrics.committed(0.02, 0.015)
    loop.metrics.committed(3.0, 2.9)
    samples = scrape(loop)
    assert samples[("sessionizer_commit_duration_seconds_count", ())] == 2
    assert samples[("sessionizer_commit_duration_seconds_bucket", (("le", "0.025"),))] == 1
    assert samples[("sessionizer_transaction_duration_seconds_bucket", (("le", "+Inf"),))] == 2
    assert samples[("sessionizer_transaction_duration_seconds_sum", ())] == pytest.approx(2.915)


def test_names_follow_prometheus_conventions(loop):
    loop.add_task(0)
    registry = build_registry(loop, loop.config)
    families = list(text_string_to_metric_families(generate_latest(registry).decode()))
    ours = [f for f in families if f.name.startswith("sessionizer")]
    assert len(ours) >= 20
    for family in ours:
        assert family.name == family.name.lower()
        assert family.documentation
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), family.name
        if "duration" in family.name or "delay" in family.name or "age" in family.name:
            assert family.name.endswith("_seconds"), family.name
    assert any(f.name == "process_cpu_seconds" for f in families)  # process metrics come along


def test_buckets_are_cumulative_with_le_semantics():
    buckets = Buckets((1.0, 2.0))
    for value in (0.5, 1.0, 1.5, 9.0):
        buckets.observe(value)
    assert buckets.cumulative() == [("1.0", 2), ("2.0", 3), ("+Inf", 4)]
    assert buckets.sum == 12.0


def test_emit_delay_of_a_window_closing_in_the_future_counts_as_zero():
    metrics = LoopMetrics()
    observe = metrics.emit_observer("p")
    observe(int(time.time() * 1000) + 60_000)
    assert metrics.emit_delay["p"].sum == 0.0 and metrics.emit_delay["p"].counts[0] == 1


def test_tick_marks_the_loop_alive_and_samples_once_a_second(loop):
    sampled = []
    loop.consumer = SimpleNamespace(assignment=lambda: sampled.append(1) or [])
    metrics = loop.metrics
    metrics.tick(loop, 100.0)
    metrics.tick(loop, 100.5)
    metrics.tick(loop, 101.1)
    assert metrics.running and metrics.last_iteration == 101.1
    assert len(sampled) == 2
    loop.rebalances += 1  # a new assignment is sampled at once
    metrics.tick(loop, 101.2)
    assert len(sampled) == 3
