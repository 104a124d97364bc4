"""Availability: restarts keep their partitions, stopped replicas hand theirs over at once,
and standby replicas make a failover restore only the changelog's tail.

Live production throughout, each source partition's disorder equal to grace,
and the output compared with the independent oracle: moving partitions
quickly must never cost a session or emit one twice.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka.admin import AdminClient

from tests.integration.harness import bootstrap, end_offsets, log_events, wait_until
from tests.integration.workload import Workload, assert_exact, collect, expected_sessions, pipeline_body

pytestmark = pytest.mark.chaos

PARTITIONS = 6
#: The session timeout of these tests' static members (s): longer than a restart here takes, and far
#: longer than a handover should.
SESSION_TIMEOUT_S = 30
SESSION_TIMEOUT = {"SESSIONIZER__KAFKA__CONSUMER__SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_S * 1000), "SESSIONIZER__APP__STATIC_MEMBERSHIP": "true"}
#: The members' heartbeat interval (s), ``heartbeat.interval.ms`` of every test config (conftest.py).
HEARTBEAT_S = 0.5
#: How soon after a moment a member was still alive the coordinator could drop it without being told:
#: the session timeout after its last heartbeat, which was at most a heartbeat interval before.
EXPIRY_S = SESSION_TIMEOUT_S - HEARTBEAT_S


def assignments(app) -> dict[str, set[tuple[str, int]]]:
    """Per instance id, the partitions the group's coordinator says it holds."""
    admin = AdminClient({"bootstrap.servers": bootstrap()})
    description = admin.describe_consumer_groups([app.id], request_timeout=10)[app.id].result(10)
    held: dict[str, set[tuple[str, int]]] = {}
    for member in description.members:
        instance = member.client_id.removeprefix(f"{app.id}-").removesuffix("-consumer")
        partitions = member.assignment.topic_partitions if member.assignment else []
        held.setdefault(instance, set()).update((tp.topic, tp.partition) for tp in partitions)
    return held


def settled(app, instances: set[str], total: int) -> dict[str, set[tuple[str, int]]] | None:
    """The assignment once exactly ``instances`` share ``total`` partitions, each some; else None."""
    held = assignments(app)
    if set(held) != instances or sum(len(p) for p in held.values()) != total or not all(held.values()):
        return None
    return held


def test_a_restart_within_the_session_timeout_moves_no_partition(app):
    """Static membership: a replica killed and started again on its disk, within the session
    timeout, gets back exactly its partitions, and the other replica is never rebalanced."""
    app.configure(pipeline_body(app), partitions=PARTITIONS)
    workload = Workload(app, events=30_000, users=2_000, rate=1_500, seed=21)
    workload.create_topics()
    stays, restarts = app.service("i1", env=SESSION_TIMEOUT).start(), app.service("i2", env=SESSION_TIMEOUT).start()
    stays.wait_started()
    restarts.wait_started()
    workload.start()
    total = 3 * 3 + PARTITIONS  # three sources of three partitions, and the repartition topic
    before = wait_until(lambda: settled(app, {"i1", "i2"}, total), 60, "both replicas to hold partitions")
    marker = stays.mark("restart")
    killed = time.monotonic()
    restarts.kill()
    restarts.start()
    restarts.wait_assigned(timeout=EXPIRY_S)
    back = time.monotonic() - killed
    # The premise, checked rather than hoped for: back in the group before the coordinator could drop it.
    assert back < EXPIRY_S, f"the restart took {back:.1f} s: longer than the session timeout this test is about"
    workload.join(timeout=600)
    after = settled(app, {"i1", "i2"}, total)
    assert after == before
    untouched = stays.log().split(marker)[-1]
    assert '"partitions revoked"' not in untouched and '"partitions assigned"' not in untouched
    expected = expected_sessions(app.config_path, workload.produced)
    assert_exact(app, collect(app, [stays, restarts], len(expected)), expected, workload)


def test_a_stopped_replica_hands_its_partitions_over_well_before_the_session_timeout(app):
    """SIGTERM leaves the group, static member or not: the other replica holds every partition
    within seconds, where a static member that did not leave would keep them for the 30 s
    session timeout."""
    app.configure(pipeline_body(app), partitions=PARTITIONS)
    workload = Workload(app, events=30_000, users=2_000, rate=1_500, seed=22)
    workload.create_topics()
    stays, stops = app.service("i1", env=SESSION_TIMEOUT).start(), app.service("i2", env=SESSION_TIMEOUT).start()
    stays.wait_started()
    stops.wait_started()
    workload.start()
    total = 3 * 3 + PARTITIONS
    wait_until(lambda: settled(app, {"i1", "i2"}, total), 60, "both replicas to hold partitions")
    asked = time.monotonic()  # it heartbeats until it stops: its last heartbeat is at most HEARTBEAT_S before
    assert stops.stop() == 0
    # Had it not left the group, the coordinator would drop it no sooner than EXPIRY_S after it was asked
    # to stop: every partition with the other replica before that is the proof it left.
    wait_until(lambda: settled(app, {"i1"}, total), EXPIRY_S, "the remaining replica to hold every partition")
    took = time.monotonic() - asked
    assert took < EXPIRY_S, f"the handover took {took:.1f} s after the stop was asked for"
    workload.join(timeout=600)
    expected = expected_sessions(app.config_path, workload.produced)
    assert_exact(app, collect(app, [stays], len(expected)), expected, workload)


STANDBY = "num_standby_replicas = 1"


def takeover(service, marker: str) -> list[dict]:
    """What ``service`` logged about each store it started after ``marker``: promotions and restores."""
    after = service.log().split(marker)[-1]
    wanted = ("standby promoted", "restoring state", "state restored", "state up to date")
    return [e for e in log_events(after) if e.get("event") in wanted and e.get("pipeline") == "sessions"]


def test_with_a_standby_a_killed_replicas_partitions_restore_only_the_changelog_tail(app):
    """Two replicas, one standby each: every partition's store is copied to the other
    replica. One is killed mid-stream; the survivor promotes its copies and reads only the
    changelog records written since their last update, and the output is exact."""
    app.configure(pipeline_body(app), partitions=PARTITIONS, app_extra=STANDBY)
    workload = Workload(app, events=60_000, users=5_000, rate=2_000, seed=23)
    workload.create_topics()
    survivor, victim = app.service("i1").start(), app.service("i2").start()
    survivor.wait_started()
    victim.wait_started()
    workload.start()
    total = 3 * 3 + PARTITIONS
    held = wait_until(lambda: settled(app, {"i1", "i2"}, total), 60, "both replicas to hold partitions")
    moving = {p for topic, p in held["i2"] if topic.endswith("-repartition")}
    assert moving, held
    wait_until(lambda: workload.progress() > 0.4, 120, "workload progress")
    # Every store the victim runs has a copy on the survivor by now.
    wait_until(lambda: len([e for e in log_events(survivor.log()) if e.get("event") == "standby started"]) >= len(moving), 30, "standbys")
    marker = survivor.mark("kill")
    victim.kill()
    def taken_over() -> bool:
        survivor.assert_alive()
        done = {e["partition"] for e in takeover(survivor, marker) if e["event"] in ("state restored", "state up to date")}
        return moving <= done

    wait_until(taken_over, 60, "the survivor to restore the killed replica's partitions")
    workload.join(timeout=600)
    expected = expected_sessions(app.config_path, workload.produced)
    assert_exact(app, collect(app, [survivor], len(expected)), expected, workload)
    events = takeover(survivor, marker)
    promoted = {e["partition"] for e in events if e["event"] == "standby promoted"}
    assert promoted == moving
    changelog_records = sum(end_offsets(app.topic("sessions-changelog"), PARTITIONS))
    restored = sum(e["records"] for e in events if e["event"] == "state restored")
    assert all(e["mode"] == "tail" for e in events if e["event"] == "restoring state"), events
    assert restored < changelog_records / 4, f"restored {restored} of {changelog_records} changelog records"


def restores(service) -> list[dict]:
    """Every ``restoring state`` event of ``service``'s current run."""
    return [e for e in log_events(service.run_log()) if e.get("event") == "restoring state"]


def test_scaling_one_to_three_and_back_with_standbys_warms_newcomers_and_stays_exact(app):
    """1 → 3 → 1 replicas under live traffic, one standby: each newcomer copies the stores
    before it joins, so what the group moves to it restores only a tail; one leaves with
    SIGTERM, one is killed; the output equals the oracle."""
    app.configure(pipeline_body(app), partitions=PARTITIONS, app_extra=STANDBY)
    workload = Workload(app, events=90_000, users=4_000, rate=2_000, seed=24)
    workload.create_topics()
    first = app.service("i1").start()
    first.wait_started()
    workload.start()
    wait_until(lambda: workload.progress() > 0.2, 120, "workload progress")
    second = app.service("i2").start()
    wait_until(lambda: '"warmed up"' in second.run_log(), 120, "the second replica to warm up")
    second.wait_assigned()
    third = app.service("i3").start()
    wait_until(lambda: '"warmed up"' in third.run_log(), 120, "the third replica to warm up")
    third.wait_assigned()
    wait_until(lambda: workload.progress() > 0.5, 120, "workload progress")
    for newcomer in (second, third):
        full = [e for e in restores(newcomer) if e["mode"] != "tail"]
        assert not full, f"{newcomer.instance_id} restored in full: {full}"
    assert second.stop() == 0
    wait_until(lambda: workload.progress() > 0.7, 120, "workload progress")
    third.kill()
    workload.join(timeout=600)
    expected = expected_sessions(app.config_path, workload.produced)
    assert_exact(app, collect(app, [first], len(expected)), expected, workload)
    assert not [e for e in restores(first) if e["mode"] != "tail" and e["start"] > 0]
