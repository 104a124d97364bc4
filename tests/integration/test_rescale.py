"""Adding (and removing) partitions without replaying the sources: ``sessionizer rescale`` on the real broker.

Every test produces live, at the edge of the promise (disorder equal to
grace), stops the replicas mid-stream, rescales, starts replicas with the
new count, and goes on producing: the output must equal the independent
oracle, each session once, nothing late.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib

import pytest
from confluent_kafka.admin import AdminClient, NewPartitions

from service.core.watermarks import source_id
from service.runtime.frames import report
from tests.helpers import config_toml, sessionizer
from tests.integration.backlog import Backlog
from tests.integration.harness import (
    REPO,
    Reader,
    bootstrap,
    create_topics,
    end_offsets,
    log_events,
    produce,
    producer,
    send,
    stop_and_read,
    wait_until,
)
from tests.integration.test_operations import HOLD_THE_WALL_CLOCK
from tests.integration.test_rules import SHOP_TOPICS, by_user, calls_body, check_sessions, offline, online, shop_body
from tests.integration.workload import (
    SOURCES,
    Workload,
    assert_exact,
    collect,
    expected_derived,
    expected_sessions,
    pipeline_body,
)

pytestmark = pytest.mark.chaos


def rescale(app, partitions: int, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``sessionizer rescale`` as an operator runs it, the config already saying the new count."""
    app.configure(app.body, partitions=partitions, app_extra=app.extra)
    return sessionizer("rescale", "--config", str(app.config_path), "--partitions", str(partitions), clean=False, timeout=timeout)


def configured(app, body: str, partitions: int, extra: str = "") -> None:
    app.body, app.extra = body, extra
    app.configure(body, partitions=partitions, app_extra=extra)


def layout_generation(app) -> int:
    admin = AdminClient({"bootstrap.servers": bootstrap()})
    topics = admin.list_topics(timeout=10).topics
    changelogs = [t for t in topics if t.startswith(app.topic("sessions-changelog"))]
    return max(int(t.rsplit("-g", 1)[1]) if "-g" in t else 0 for t in changelogs)


def kill_at(app, point: str | tuple[str, ...] | None) -> bool:
    """Start the command and SIGKILL it as soon as its output shows ``point`` (or 0.3 s in); True if it was killed."""
    marks = (point,) if isinstance(point, str) else point
    command = subprocess.Popen(
        [sys.executable, "-m", "service", "rescale", "--config", str(app.config_path), "--partitions", "4"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert command.stdout is not None
    if marks is None:
        time.sleep(0.3)
    else:
        for line in command.stdout:
            if any(mark in line for mark in marks):
                break
    alive = command.poll() is None
    command.send_signal(signal.SIGKILL)
    command.communicate(timeout=60)
    return alive


def produce_then_stop(app, workload: Workload, replicas: list[str], fraction: float):
    services = [app.service(i).start() for i in replicas]
    for service in services:
        service.wait_started()
    workload.start()
    wait_until(lambda: workload.progress() > fraction, 180, "workload progress")
    for service in services:
        assert service.stop() == 0
    return services


def test_six_to_twelve_partitions_under_live_traffic_with_two_replicas_after(app):
    """6 → 12 mid-stream, with the sequence rule's state: the output equals the oracle, each
    session once, nothing late, every derived record once; the guards refuse a replica with
    the new count before the rescale, and a rescale while a replica runs."""
    configured(app, pipeline_body(app, rule=True), 6)
    workload = Workload(app, events=40_000, users=3_000, rate=1_500, seed=31)
    workload.create_topics()
    produce_then_stop(app, workload, ["i1", "i2"], 0.4)

    # A replica told 12 before the state has 12 stops with one line naming the command.
    app.configure(app.body, partitions=12, app_extra=app.extra)
    early = sessionizer("run", "--config", str(app.config_path), clean=False, timeout=120)
    assert early.returncode == 2, early.stderr
    assert "sessionizer rescale --config <file> --partitions 12" in early.stderr
    assert "Traceback" not in early.stderr

    # A rescale while a replica runs is refused.
    app.configure(app.body, partitions=6, app_extra=app.extra)
    running = app.service("i1").start()
    running.wait_assigned()
    refused = rescale(app, 12)
    assert refused.returncode != 0 and "running members" in refused.stderr, refused.stderr
    assert running.stop() == 0

    # Whatever the stopped replicas left unread in the repartition topic (often frames of their last
    # transaction), the command processes it with the old layout's tasks before it copies anything. For
    # a drain every run can count on, a report that says nothing (a source with no watermark yet) waits
    # in each partition.
    out = producer()
    for partition in range(6):
        send(out, app.topic("sessions-repartition"), report(None, source_id(0, 0), idle=False), None, partition)
    assert out.flush(30) == 0
    done = rescale(app, 12)
    assert done.returncode == 0, done.stderr
    assert "draining 6 repartition partitions" in done.stdout and '"repartition topics drained"' in done.stderr, done.stdout
    assert "committed layout generation 1" in done.stdout
    assert layout_generation(app) == 1
    assert len(end_offsets(app.topic("sessions-changelog-g1"), 12)) == 12

    after = [app.service("i1").start(), app.service("i2").start()]
    workload.join(timeout=600)
    expected = expected_sessions(app.config_path, workload.produced)
    got = collect(app, after, len(expected), rule=True)
    assert_exact(app, got, expected, workload, derived=expected_derived(app, app.config_path, workload.produced))


def test_twelve_to_four_with_sessions_open_across_the_switch_and_kills_of_the_command(app):
    """12 → 4, the command killed with SIGKILL at five moments and run again each time:
    sessions that started before the switch and ended after it come out once, whole."""
    configured(app, pipeline_body(app), 12)
    workload = Workload(app, events=36_000, users=400, rate=1_500, seed=32)
    workload.create_topics()
    produce_then_stop(app, workload, ["i1"], 0.5)
    switch_ms = int(time.time() * 1000)
    app.configure(app.body, partitions=4, app_extra=app.extra)
    # Five kills, one in each phase: starting, before the drain, draining, writing the new
    # topics, and between the copy and the commit. Each attempt before the commit starts over.
    points = [None, "rescale of", ("state restored", "state up to date", "topic created"), ("topic created",), ("records of",)]
    killed = [kill_at(app, point) for point in points]
    assert killed == [True] * 5, killed
    done = rescale(app, 4)
    assert done.returncode == 0, done.stderr
    assert layout_generation(app) == 1
    service = app.service("i1").start()
    workload.join(timeout=600)
    expected = expected_sessions(app.config_path, workload.produced)
    got = collect(app, [service], len(expected))
    assert_exact(app, got, expected, workload)
    spanning = [s for s in expected if s[1] < switch_ms < s[2]]
    assert spanning, "some session was open across the switch"


def test_a_direct_pipelines_sources_gain_partitions_while_it_runs(app):
    """A pipeline grouped by the record key over three co-partitioned topics, read directly;
    the topics go from 3 to 6 partitions under live traffic. The service stops reading
    directly before it processes a moved key (no session split), goes on through its
    repartition topic with the state where it was; then ``rescale --partitions 6`` moves the
    state, and the output equals the oracle."""
    body = pipeline_body(app).replace('key = "user_id"', 'key = "@key"')
    assert 'key = "@key"' in body
    configured(app, body, 3)
    workload = Workload(app, events=45_000, users=2_000, rate=1_500, seed=33, keyed=True)
    workload.producer_config = {"topic.metadata.refresh.interval.ms": 1000}
    workload.create_topics()
    service = app.service("i1").start()
    service.wait_started()
    workload.start()
    wait_until(lambda: workload.progress() > 0.3, 180, "workload progress")
    admin = AdminClient({"bootstrap.servers": bootstrap()})
    for future in admin.create_partitions([NewPartitions(app.topic(s), 6) for s in SOURCES]).values():
        future.result(30)
    wait_until(lambda: '"sources gained partitions; starting the loop again"' in service.log(), 60, "the service to notice")
    wait_until(lambda: workload.progress() > 0.6, 180, "workload progress")
    assert service.stop() == 0
    done = rescale(app, 6)
    assert done.returncode == 0, done.stderr
    service = app.service("i1").start()
    workload.join(timeout=600)
    expected = expected_sessions(app.config_path, workload.produced, keyed=True)
    got = collect(app, [service], len(expected))
    assert_exact(app, got, expected, workload)
    events = [e for e in log_events(service.log()) if e.get("event") == "pipeline read through its repartition topic"]
    assert events, "after the rescale the pipeline reads through its repartition topic"


def test_rule_and_pairing_state_moves_with_its_keys(app):
    """Carts (a sequence rule's first step, two absence rules' too) and the first event of
    each call pair are committed; the service stops; 3 → 5 partitions; payments and the
    calls' second events follow. Every purchase, coupon, nudge and paired call comes out
    once, as offline mode derives them from all the events, and the sessions are the oracle's.

    The first run's wall clock is held back, so the carts' stream time stays at their event
    time however long the barrier takes (``tests.integration.test_rules``).
    """
    shop = tomllib.loads(shop_body(app, gap="2s", grace="1s"))["pipelines"]["shop"]
    calls = tomllib.loads(calls_body(app))["pipelines"]["calls"]
    body = config_toml({"shop": shop, "calls": calls})
    configured(app, body, 3)
    web, mobile, analytics, metrics = (app.topic(t) for t in ("web", "mobile", "analytics", "metrics"))
    create_topics([web, mobile, analytics, metrics])
    service = app.service().start(env=HOLD_THE_WALL_CLOCK)
    service.wait_started()
    now = int(time.time() * 1000)
    users = [f"user_{i}" for i in range(40)]
    pairs = [(f"a{i}", f"b{i}") for i in range(20)]
    carts = [{"user_id": u, "timestamp": now, "type": "item_added_to_cart", "event_id": f"c-{u}"} for u in users]
    firsts = [{"user1": a, "user2": b, "timestamp": now, "analytics": f"x-{a}"} for a, b in pairs]
    produce(web, carts, key=by_user)
    produce(analytics, firsts)
    changelogs = Reader([f"{app.id}-shop-changelog", f"{app.id}-calls-changelog"])

    def committed():
        changelogs.poll(0.3)
        keys = {r.key for r in changelogs.records if r.key and r.key.startswith(b"w")}
        return {b"w" + u.encode() for u in users} <= keys and len(keys) >= len(users) + len(pairs)

    wait_until(committed, 60, "every cart and every first call event in the changelogs")
    changelogs.close()
    assert service.stop() == 0

    done = rescale(app, 5)
    assert done.returncode == 0, done.stderr
    payments = [{"user_id": u, "timestamp": now + 1000, "type": "payment_processed", "event_id": f"p-{u}"} for u in users[::2]]
    seconds = [{"user1": a, "user2": b, "timestamp": now + 400, "metrics": f"y-{a}"} for a, b in pairs]
    produce(mobile, payments, key=by_user)
    produce(metrics, seconds)
    service = app.service().start()
    reader = Reader([app.topic("sessions"), app.topic("calls")])
    reader.wait_for(len(users), timeout=90, topic=app.topic("sessions"))
    reader.wait_for(len(pairs), timeout=90, topic=app.topic("calls"))
    reader.close()
    got = stop_and_read([service], [app.topic(t) for t in (*SHOP_TOPICS, "calls")])
    assert got[app.topic("late")] == [] and got[app.topic("dlq")] == []
    assert len(got[app.topic("purchases")]) == len(payments)
    assert len(got[app.topic("calls")]) == len(pairs)
    assert all(set(r.json()) >= {"analytics", "metrics"} for r in got[app.topic("calls")]), "every call paired across the switch"
    backlog = Backlog({web: carts, mobile: payments, analytics: firsts, metrics: seconds})
    shop_only = {t: got[app.topic(t)] for t in SHOP_TOPICS}
    check_sessions(app, {app.topic(t): v for t, v in shop_only.items()}, Backlog({web: carts, mobile: payments}), 2_000)
    assert online(got) == offline(app.config_path, backlog)
