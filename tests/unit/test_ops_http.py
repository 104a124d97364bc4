"""The HTTP port without a broker: health, readiness, metrics, and open-session queries."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.core.partitioner import murmur2, partition_for
from service.core.pipeline import Pipeline
from service.errors import ServiceStopping
from service.ops.metrics import build_registry
from service.ops.queries import SessionQueries, encode_key
from service.ops.web import OpsServer
from service.runtime.clients import consumer_config
from service.runtime.owners import Owner, instance_from_client_id
from service.runtime.queries import LOCAL, REMOTE, RESTORING, Query, QueryInbox, answer
from service.runtime.stats import LoopStats
from service.runtime.tasks import TaskState
from tests.helpers import config_from_toml, window_task
from tests.integration.harness import murmur2_partition

CONFIG = """
[app]
id = "shop"
instance_id = "i1"
[topics]
partitions = 4
[http]
host = "127.0.0.1"
port = 0
liveness_timeout = "2s"
[pipelines.sessions]
sources = ["web"]
key = "user_id"
time = "ts"
output = "out"
[pipelines.sessions.window]
type = "session"
gap = "10m"
[pipelines.sessions.aggregates]
types = { type = "count_by", field = "type" }
[pipelines.baskets]
sources = ["web"]
key = ["user_id", "shop"]
time = "ts"
output = "baskets"
[pipelines.baskets.window]
type = "tumbling"
size = "1h"
"""


# -- partitioning -------------------------------------------------------------------


def test_murmur2_matches_kafkas_own_test_vectors():
    # org.apache.kafka.common.utils.UtilsTest#testMurmur2, as signed Java ints
    cases = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
    }
    for key, expected in cases.items():
        value = murmur2(key)
        assert (value - 2**32 if value >= 2**31 else value) == expected, key


@given(st.binary(max_size=64), st.integers(min_value=1, max_value=64))
def test_partition_for_agrees_with_the_test_harness(key, partitions):
    assert partition_for(key, partitions) == murmur2_partition(key, partitions)


def test_keys_are_encoded_as_the_source_stage_does():
    config = config_from_toml(CONFIG)
    sessions, baskets = (Pipeline(p) for p in config.pipelines)
    event = {"user_id": "AllOfR", "shop": 7}
    assert encode_key("AllOfR", 1) == sessions.key(event)
    assert encode_key('["AllOfR", "7"]', 2) == baskets.key(event)
    assert encode_key('["AllOfR",7]', 2) == baskets.key(event)
    with pytest.raises(ValueError):
        encode_key("AllOfR", 2)


def test_instance_id_is_read_back_from_the_consumers_client_id():
    config = config_from_toml(CONFIG)
    client_id = consumer_config(config)["client.id"]
    assert instance_from_client_id(client_id, "shop") == "i1"
    assert instance_from_client_id("someone-else", "shop") is None


# -- answering in the loop thread ------------------------------------------------------


@pytest.fixture
def tasks(tmp_path):
    config = config_from_toml(CONFIG)
    pipeline = Pipeline(config.pipelines[0])
    made = {}
    for partition in range(4):
        task = window_task(config, pipeline, partition, tmp_path)
        task.state = TaskState.RUNNING
        made[task.task_id] = task
    yield config, pipeline, made
    for task in made.values():
        task.close()


def add(task, user, ts, kind):
    event = {"user_id": user, "ts": ts, "type": kind}
    task.processor.process(user.encode(), ts, event, orjson.dumps(event))


def test_a_local_key_gets_its_open_windows_with_close_times(tasks):
    config, pipeline, made = tasks
    partition = partition_for(b"AllOfR", 4)
    task = made[(pipeline.name, partition)]
    base = 1_499_265_000_000  # 2017-07-05 14:30 UTC, seed 004
    add(task, "AllOfR", base, "put-item-in-cart")
    add(task, "AllOfR", base + 4 * 60_000, "checkout")
    (part,) = answer(made, Query(b"AllOfR", [(pipeline, partition)]))
    assert part.status == LOCAL and part.stream_time_ms == base + 240_000
    (window,) = part.windows
    assert window["start_ms"] == base and window["end_ms"] == base + 240_000
    assert window["closes_at_ms"] == base + 240_000 + 600_000  # end + gap (+ grace 0)
    assert window["value"]["event_count"] == 2
    assert window["value"]["types"] == {"put-item-in-cart": 1, "checkout": 1}
    (nobody,) = answer(made, Query(b"nobody", [(pipeline, partition)]))
    assert nobody.status == LOCAL and nobody.windows == []


def test_a_partition_elsewhere_or_restoring_is_said_so(tasks):
    config, pipeline, made = tasks
    del made[(pipeline.name, 1)]
    made[(pipeline.name, 2)].state = TaskState.RESTORING
    parts = answer(made, Query(b"k", [(pipeline, 1), (pipeline, 2)]))
    assert [p.status for p in parts] == [REMOTE, RESTORING]


def test_the_inbox_is_answered_by_the_loop_and_closes(tasks):
    config, pipeline, made = tasks
    inbox = QueryInbox()
    future = inbox.submit(Query(b"k", [(pipeline, 0)]))
    assert not future.done()
    inbox.serve(made)  # what the loop does once per iteration
    assert future.result(0)[0].status == LOCAL
    pending = inbox.submit(Query(b"k", [(pipeline, 0)]))
    inbox.close()
    with pytest.raises(ServiceStopping):
        pending.result(0)
    with pytest.raises(ServiceStopping):
        inbox.submit(Query(b"k", [(pipeline, 0)])).result(0)


class FakeOwners:
    def __init__(self, owners):
        self.owners = owners

    def owner(self, topic, partition):
        return self.owners.get((topic, partition))


def serving(inbox, made, stop):
    """A stand-in for the loop thread: serve the inbox until told to stop."""
    while not stop.is_set():
        inbox.serve(made)
        time.sleep(0.005)


@pytest.fixture
def queries(tasks):
    config, pipeline, made = tasks
    inbox = QueryInbox()
    stop = threading.Event()
    thread = threading.Thread(target=serving, args=(inbox, made, stop), daemon=True)
    thread.start()
    pipelines = (pipeline,)
    owners = FakeOwners({})
    yield SessionQueries(config, pipelines, {pipeline.config.repartition_topic: 4}, inbox, owners, timeout=2), made, owners
    stop.set()
    thread.join()


def test_lookup_statuses(queries):
    sessions, made, owners = queries
    topic = "shop-sessions-repartition"
    key = "AllOfR"
    partition = partition_for(key.encode(), 4)
    add(made[("sessions", partition)], key, 1_000_000, "preview-item")

    status, body = sessions.lookup(key)
    assert status == 200
    assert body["key"] == key and body["instance_id"] == "i1"
    (part,) = body["pipelines"]
    assert part["partition"] == partition and part["windows"][0]["value"]["event_count"] == 1

    assert sessions.lookup(key, "nope")[0] == 404

    owners.owners[(topic, partition)] = Owner("i2", "shop-i2-consumer", "10.0.0.7")
    task = made.pop(("sessions", partition))
    status, body = sessions.lookup(key)
    assert status == 421
    assert body["pipelines"][0]["owner"] == {"instance_id": "i2", "client_id": "shop-i2-consumer", "host": "10.0.0.7"}

    owners.owners.clear()  # nobody owns it: a rebalance is under way
    assert sessions.lookup(key)[0] == 503

    made[("sessions", partition)] = task
    task.state = TaskState.RESTORING
    status, body = sessions.lookup(key)
    assert status == 503 and body["pipelines"][0]["status"] == "restoring"


def test_lookup_names_the_owners_url_when_instances_share_a_fixed_port(queries):
    sessions, made, owners = queries
    sessions.config = load_config_with_port(sessions.config, 9108)
    topic = "shop-sessions-repartition"
    key = "user/1"
    partition = partition_for(key.encode(), 4)
    made.pop(("sessions", partition))
    owners.owners[(topic, partition)] = Owner("i2", "shop-i2-consumer", "10.0.0.7")
    status, body = sessions.lookup(key)
    assert status == 421
    assert body["pipelines"][0]["owner"]["url"] == "http://10.0.0.7:9108/sessions/user%2F1?pipeline=sessions"


def load_config_with_port(config, port):
    from dataclasses import replace

    return replace(config, http_port=port)


# -- the server -------------------------------------------------------------------


@pytest.fixture
def server(tmp_path):
    config = config_from_toml(CONFIG)
    stats = LoopStats()
    ops = OpsServer(config, stats, build_registry(stats, config))
    ops.start()
    yield ops, stats
    ops.close()


def get(ops, path, accept=None):
    request = urllib.request.Request(f"http://127.0.0.1:{ops.port}{path}", headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def test_port_zero_picks_a_free_port(server):
    ops, _ = server
    assert ops.port > 0
    assert get(ops, "/")[0] == 200


def test_healthz_follows_the_loops_iterations(server):
    ops, stats = server
    status, _, body = get(ops, "/healthz")
    assert status == 200 and orjson.loads(body)["status"] == "ok"  # starting counts as alive
    stats.last_iteration = time.monotonic() - 3  # liveness_timeout is 2s
    status, _, body = get(ops, "/healthz")
    assert status == 503 and orjson.loads(body)["status"] == "stalled"


def test_readyz_needs_running_assigned_and_restored(server):
    ops, metrics = server
    assert _ready(ops) == (503, "starting")
    metrics.running = True
    metrics.sample.at = 1.0
    assert _ready(ops) == (503, "no partitions assigned")
    metrics.restoring = 1
    assert _ready(ops) == (503, "restoring state")  # even before the assignment is sampled
    metrics.sample.assigned = 6
    assert _ready(ops) == (503, "restoring state")
    metrics.restoring = 0
    assert _ready(ops) == (200, "ready")
    metrics.running = False
    assert _ready(ops) == (503, "stopped")


def _ready(ops):
    status, _, body = get(ops, "/readyz")
    return status, orjson.loads(body)["status"]


def test_metrics_in_both_exposition_formats(server):
    ops, _ = server
    status, headers, body = get(ops, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert b"sessionizer_info{" in body and b"process_cpu_seconds_total" in body
    status, headers, body = get(ops, "/metrics", accept="application/openmetrics-text; version=1.0.0")
    assert status == 200 and headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def test_sessions_before_start_up_and_unknown_paths(server):
    ops, _ = server
    status, headers, _ = get(ops, "/sessions/AllOfR")
    assert status == 503 and headers["Retry-After"] == "1"
    status, _, body = get(ops, "/nope")
    assert status == 404 and "/sessions/{key}" in orjson.loads(body)["endpoints"]
