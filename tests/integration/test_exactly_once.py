"""Exactly one record per closed window under crashes, rebalances, a broker restart and a zombie.

Events are produced live, each source partition's disorder equal to grace
(``tests.integration.workload``): nothing may be late, whatever happens to
the replicas or the broker. Every test stops its services, reads the output,
late, dead-letter and derived topics to their end offsets, and compares with
the independent oracle and offline mode.

Marked ``chaos``: they take minutes. Run them alone with
``bash scripts/test.sh -m chaos``; the default suite includes them.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from collections import Counter

import pytest

from tests.integration.harness import REPO, Reader, Service, log_events, stop_and_read, wait_until
from tests.integration.workload import (
    AMOUNT,
    GRACE_MS,
    Workload,
    assert_exact,
    collect,
    expected_derived,
    expected_sessions,
    pipeline_body,
    session_of,
    sessions_in,
)

pytestmark = pytest.mark.chaos

#: A poll of 500 records or events: after a kill, a move or a broker outage the backlog's packs are processed
#: over several iterations, and the crashes, rewinds and moves here also meet polls in hand (``service.runtime.in_hand``).
APP_EXTRA = "cache_max_keys = 20000\npoll_batch = 500"
PARTITIONS = range(6)


def test_kill_9_at_random_moments_emits_every_session_exactly_once(app):
    """≥ 200,000 events, ≥ 5,000 users, 6 kills, local state deleted before two of the restarts;
    late events, dead letters and a rule's derived records each come out once too.

    Kill k comes once k / 7.5 of the stream is written. Each run restores every partition
    before the next kill, which takes longer on a slower machine: production stops at 90 %
    of the stream until the sixth kill is done, so the six kills promised all happen, with
    the last tenth of the stream still to come, whatever the speed of the machine."""
    app.configure(pipeline_body(app, rule=True), partitions=6, app_extra=APP_EXTRA)
    events = 200_000
    workload = Workload(app, events=events, users=5_000, rate=2_500, late_every=1_000, malformed_every=1_000)
    last_tenth = workload.hold(events * 9 // 10)
    workload.create_topics()
    service = app.service().start()
    service.wait_started()
    workload.start()
    store = app.state_dir / app.id / "i1"
    rng = random.Random(42)
    kills = 0
    after_wipe: list[int] = []  # the runs that started on deleted local state
    while kills < 6:
        wait_until(lambda kills=kills: workload.progress() > (kills + 1) / 7.5, 120, "workload progress")
        time.sleep(rng.uniform(0, 2))
        service.kill()
        kills += 1
        if kills in (2, 4):
            # The store is really there, one directory per partition, and really gone after.
            assert sorted(p.name for p in store.iterdir()) == [f"sessions-{p}" for p in PARTITIONS]
            shutil.rmtree(store)
            assert not store.exists()
            after_wipe.append(service.starts + 1)
        service.start()
        service.wait_restored(PARTITIONS)  # each run restores every partition before the next kill
    assert workload.running, "the stream goes on after the last kill"
    last_tenth.set()
    assert len(after_wipe) == 2
    workload.join(timeout=600)
    expected = expected_sessions(app.config_path, workload.produced)
    got = collect(app, [service], len(expected), rule=True)
    assert workload.written >= 200_000 and len(expected) > 10_000
    assert_exact(app, got, expected, workload, expected_derived(app, app.config_path, workload.produced))
    for run in after_wipe:
        restores = [e for e in log_events(service.run_log(run)) if e.get("event") == "restoring state"]
        full = {e["partition"] for e in restores if e.get("mode") == "full"}
        assert full == set(PARTITIONS), f"run {run} after a wipe restored {sorted(full)} fully: {restores}"


def test_scaling_from_one_to_three_replicas_and_back(app):
    """1 → 3 replicas → 1 while producing live: one leaves with SIGTERM, the other is killed
    with SIGKILL (the group notices after its session timeout)."""
    app.configure(pipeline_body(app, rule=True), partitions=6, app_extra=APP_EXTRA)
    workload = Workload(app, events=120_000, users=3_000, rate=2_000, seed=2, late_every=1_000, malformed_every=1_000)
    workload.create_topics()
    first = app.service("i1").start()
    first.wait_started()
    workload.start()
    wait_until(lambda: workload.progress() > 0.2, 120, "workload progress")
    second, third = app.service("i2").start(), app.service("i3").start()
    second.wait_started()
    third.wait_started()
    wait_until(lambda: workload.progress() > 0.45, 120, "workload progress")
    assert second.stop() == 0
    wait_until(lambda: workload.progress() > 0.65, 120, "workload progress")
    third.kill()
    workload.join(timeout=600)
    expected = expected_sessions(app.config_path, workload.produced)
    got = collect(app, [first], len(expected), rule=True)
    assert_exact(app, got, expected, workload, expected_derived(app, app.config_path, workload.produced))
    for replica in (first, second, third):
        assert '"partitions assigned"' in replica.log()
    assert '"partitions revoked"' in first.log(), "the first replica gave partitions away when the others joined"


def test_two_replicas_one_killed_its_partitions_move_to_the_other(app):
    """Two replicas share the work; one is killed for good mid-stream. The group gives its
    partitions to the survivor after the session timeout, which restores their state and goes on."""
    app.configure(pipeline_body(app), partitions=6, app_extra=APP_EXTRA)
    workload = Workload(app, events=80_000, users=3_000, rate=2_000, seed=6, late_every=1_000, malformed_every=1_000)
    workload.create_topics()
    survivor, victim = app.service("i1").start(), app.service("i2").start()
    survivor.wait_started()
    victim.wait_started()
    workload.start()
    wait_until(lambda: workload.progress() > 0.3, 120, "workload progress")
    wait_until(lambda: '"partitions assigned"' in victim.log(), 60, "the second replica to take partitions")
    victim.kill()
    workload.join(timeout=600)
    expected = expected_sessions(app.config_path, workload.produced)
    got = collect(app, [survivor], len(expected))
    assert_exact(app, got, expected, workload)
    assert survivor.log().count('"partitions assigned"') >= 2, "the survivor took the killed replica's partitions"


#: The idle timeout of the broker-restart test: it must cover how long producers take to deliver
#: what they held once the broker is back (docs/semantics.md, "Choosing grace").
RESTART_IDLE_TIMEOUT = "15s"
#: A producer that gives up on a silent broker's requests and reconnects within a second, so the
#: events it held through the outage reach the topics well within that once the broker is back
#: (librdkafka's defaults wait up to 30 s for a request and 10 s between reconnections).
PROMPT_PRODUCER = {"request.timeout.ms": 5_000, "reconnect.backoff.max.ms": 1_000, "retry.backoff.max.ms": 1_000}


#: The script that runs the suite's broker (restarted and killed by the tests of outages).
KAFKA_SCRIPT = os.environ.get("SESSIONIZER_TEST_KAFKA_SCRIPT", str(REPO / "scripts" / "kafka.sh"))


def live_stream_for_outages(app, events: int) -> tuple[Workload, Service]:
    """A service reading a live stream of ``events`` (3,000 users, 1,500 a second), started; producers
    that reconnect promptly, and sources quiet only after 15 s read to their end, for broker outages."""
    app.configure(pipeline_body(app), partitions=6, app_extra=f'{APP_EXTRA}\nidle_timeout = "{RESTART_IDLE_TIMEOUT}"')
    workload = Workload(app, events=events, users=3_000, rate=1_500, seed=3, producer_config=PROMPT_PRODUCER)
    workload.create_topics()
    service = app.service().start()
    service.wait_started()
    workload.start()
    return workload, service


def test_broker_restart_mid_stream(app):
    """The broker goes away and comes back mid-stream: the output is exact, nothing is late.

    Events produced during the outage wait in the producers, with their event times, and reach
    the topics after it, partition by partition, while the sources may already be read to their
    new ends. Grace (equal to the disorder) does not cover the outage, and need not: the outage
    shows (failed requests for end offsets, lost connections, failed commits), so no source is
    quiet until it has been read to its end for the idle timeout again, and the producers
    deliver within it.
    """
    workload, service = live_stream_for_outages(app, events=80_000)
    wait_until(lambda: workload.progress() > 0.3, 120, "workload progress")
    began = time.monotonic()
    subprocess.run(["bash", KAFKA_SCRIPT, "restart"], check=True, timeout=180)
    outage = time.monotonic() - began
    print(f"broker outage {outage:.1f} s, grace {GRACE_MS} ms")
    assert workload.running, "the workload must produce through the outage"
    assert outage * 1000 > GRACE_MS, "an outage longer than grace: its events need more than grace"
    workload.join(timeout=600)
    expected = expected_sessions(app.config_path, workload.produced)
    got = collect(app, [service], len(expected))
    assert_exact(app, got, expected, len(workload.produced))


def test_broker_restarted_and_killed_four_times_mid_stream(app):
    """Four outages, two clean restarts and two kill -9s, through one stream: the output is exact.

    Each outage may meet a commit half done: logged by the broker, its markers not yet written,
    so for a while the changelog's stable offset is before the store's checkpoint (the store is
    kept, not rebuilt below it); or a restore that must wait for the broker's answer (it waits,
    and the service keeps running). Both once emitted sessions twice or stopped the service.
    """
    workload, service = live_stream_for_outages(app, events=120_000)
    for outage, at in enumerate((0.15, 0.35, 0.55, 0.75)):
        wait_until(lambda at=at: workload.progress() > at, 300, "workload progress")
        service.mark(f"outage {outage}")
        if outage % 2 == 0:
            subprocess.run(["bash", KAFKA_SCRIPT, "restart"], check=True, timeout=180)
        else:
            subprocess.run(["bash", KAFKA_SCRIPT, "kill"], check=True, timeout=60)
            subprocess.run(["bash", KAFKA_SCRIPT, "start"], check=True, timeout=180)
    workload.join(timeout=600)
    expected = expected_sessions(app.config_path, workload.produced)
    got = collect(app, [service], len(expected))
    assert_exact(app, got, expected, len(workload.produced))


#: What a fenced process logs when it stops because another with its instance id is in the group.
STEPPED_DOWN = '"fenced by another process with this instance id; stepping down"'
#: What a fenced instance logs, whichever of its calls meets the fence first (service/runtime/).
FENCED = (
    '"commit failed, aborting and rewinding"',
    '"processing failed, aborting and rewinding"',
    '"producer failed, replacing it"',
    '"partitions lost"',
    STEPPED_DOWN,
)
#: What the collector logs while it retries one transactional call (service/runtime/collector.py).
RETRIES = ("transactional call failed, retrying", "abort failed, retrying")
#: What a fenced process logs once it no longer uses the fenced producer.
GIVEN_UP = ('"producer failed, replacing it"', '"partitions lost"', STEPPED_DOWN)
ZOMBIE_EVENTS = 60_000


def freeze_and_replace(app, tmp_path) -> tuple[Workload, Service, Service, str]:
    """i1 runs on a live stream and is frozen mid-stream (SIGSTOP: alive, silent). A second process
    with the same instance id starts on another disk, as a rescheduled pod would: its producer, with
    the same transactional id, fences the frozen one's, and it takes every partition once the group
    drops the silent member (session timeout 6 s). More events come, then the zombie wakes up
    (SIGCONT) holding a transaction it believes open, and meets the fence.

    Returns the workload, the zombie, its successor and the zombie's log after it woke up
    (both logs are marked ``--- SIGCONT ---`` at that moment).
    """
    app.configure(pipeline_body(app), partitions=6, app_extra=APP_EXTRA)
    workload = Workload(app, events=ZOMBIE_EVENTS, users=2_000, rate=1_500, seed=5)
    workload.create_topics()
    zombie = app.service("i1").start()
    zombie.wait_restored(PARTITIONS)
    workload.start()
    wait_until(lambda: workload.progress() > 0.2, 120, "workload progress")
    zombie.signal(signal.SIGSTOP)

    workdir = tmp_path / "successor"
    workdir.mkdir()
    successor = Service(app.config_path, workdir, "i1", env={"SESSIONIZER__APP__STATE_DIR": str(tmp_path / "successor-state")})
    app.services.append(successor)
    successor.start()
    successor.wait_restored(PARTITIONS, timeout=180)  # every partition: the group has dropped the frozen member
    wait_until(lambda: workload.progress() > 0.5, 120, "more events while the zombie is frozen")

    resumed = zombie.mark("SIGCONT")
    successor.mark("SIGCONT")
    zombie.signal(signal.SIGCONT)

    def fenced() -> list[str]:
        after = zombie.log().split(resumed)[-1]
        met = [line for line in FENCED if line in after]
        if not met:
            zombie.assert_alive()
        return met

    wait_until(fenced, 120, "the zombie to meet the fence")
    return workload, zombie, successor, zombie.log().split(resumed)[-1]


def test_a_zombie_with_the_same_instance_id_is_fenced_and_publishes_nothing(app, tmp_path):
    """The zombie's first call after it wakes up fails on the fence: it aborts and rewinds
    (its log says so) and publishes nothing, so every session still comes out exactly once.

    Once it has met the fence it is killed, as an orchestrator that sees it would; what
    happens when it is left running is the next test's.
    """
    workload, zombie, successor, _ = freeze_and_replace(app, tmp_path)

    def given_up() -> str | None:
        """The zombie's log since it woke up, once it says the fenced producer is not used again."""
        woke = zombie.log().split("--- SIGCONT ---")[-1]
        return woke if any(line in woke for line in GIVEN_UP) else None

    # The first line can come before the one saying what happens to the producer: an abort
    # after records timed out first asks the coordinator for a new epoch, and meets the fence then.
    woke = wait_until(given_up, 120, "the zombie to give its fenced producer up")
    zombie.kill()
    # Frozen inside a transactional call, it may first retry that call, which meets the fence
    # or the lost generation in turn: the first outcome is what counts, not a retry inside a call.
    first = next(
        e for e in log_events(woke) if e.get("level") == "warning" and e["event"] != "librdkafka" and e["event"] not in RETRIES
    )
    assert first["event"] in ("commit failed, aborting and rewinding", "processing failed, aborting and rewinding", "partitions lost")
    workload.join(timeout=600)
    expected = expected_sessions(app.config_path, workload.produced)
    got = collect(app, [successor], len(expected))
    assert_exact(app, got, expected, len(workload.produced))


def test_a_zombie_left_running_steps_down_and_never_takes_the_transactional_id_back(app, tmp_path):
    """As above, but the zombie is left running. Its producer is fenced while its successor is in
    the group, so it stops (exit 4, one line saying why) instead of replacing the producer, which
    would fence the successor in turn. The successor, the newer incarnation, is never fenced, and
    every session comes out exactly once."""
    workload, zombie, successor, _ = freeze_and_replace(app, tmp_path)
    code = zombie.process.wait(120)
    assert code == 4, f"the zombie exited {code}:\n{zombie.log()[-4000:]}"
    woke = zombie.log().split("--- SIGCONT ---")[-1]
    assert STEPPED_DOWN in woke
    assert '"producer failed, replacing it"' not in woke, "the zombie must not make a new producer: it would fence the successor"
    zombie.process = None
    workload.join(timeout=600)
    expected = expected_sessions(app.config_path, workload.produced)
    got = collect(app, [successor], len(expected), timeout=120)
    assert_exact(app, got, expected, len(workload.produced))
    after = successor.log().split("--- SIGCONT ---")[-1]
    fenced = [line for line in after.splitlines() if '"producer failed, replacing it"' in line or STEPPED_DOWN in line]
    assert not fenced, "the successor was fenced by the zombie:\n" + "\n".join(fenced)


def test_at_least_once_loses_nothing(app):
    """Under at-least-once, after kills: every session is emitted, whole, with each of its events.

    An emitted record may repeat a session, and may count an event twice, but
    its (user, start, end) is an expected session's, it counts at least that
    session's events, and ``count_distinct`` of the events' sequence numbers
    shows it holds every one of them and no other. A repeated event that comes
    back after its session was emitted goes to the late topic: every late
    record is one of the events produced.

    Commits every 2 s, with polls of 100 records: the loop then routes many
    batches between two commits (a poll returns once full), so a kill always
    leaves repartition records written after the last offset commit, which the
    restart writes again: events are counted twice, and the test checks what
    it claims to.
    """
    aggregates = AMOUNT + '\nevents = { type = "count_distinct", field = "n" }'
    app.configure(
        pipeline_body(app, aggregates=aggregates), partitions=6, app_extra=APP_EXTRA + '\nprocessing_guarantee = "at_least_once"'
    )
    workload = Workload(app, events=60_000, users=2_000, rate=1_500, seed=4)
    workload.create_topics()
    service = app.service(env={"SESSIONIZER__APP__COMMIT_INTERVAL": "2s", "SESSIONIZER__APP__POLL_BATCH": "100"}).start()
    service.wait_started()
    workload.start()
    for kill in range(3):
        wait_until(lambda kill=kill: workload.progress() > (kill + 1) / 4.5, 120, "workload progress")
        service.kill()
        service.start()
        service.wait_restored(PARTITIONS)
    workload.join(timeout=600)
    expected = expected_sessions(app.config_path, workload.produced)
    by_key = {(user, start, end): (count, total) for user, start, end, count, total in expected}
    reader = Reader([app.topic("sessions")])
    try:
        wait_until(lambda: _covered(reader, app.topic("sessions"), expected), 240, "every expected session to be emitted")
    finally:
        reader.close()
    topics = [app.topic("sessions"), app.topic("late"), app.topic("dlq")]
    got = stop_and_read([service], topics)
    records = got[app.topic("sessions")]
    emitted = sessions_in(records)
    assert {(u, s, e) for u, s, e, _, _ in emitted} == set(by_key), "every expected session emitted, and no other"
    for record in records:
        user, start, end, count, _ = session_of(record)
        want, _ = by_key[(user, start, end)]
        assert count >= want, (user, start, end, count, want)
        assert record.json()["value"]["events"] == want, f"{(user, start, end)} does not hold exactly its {want} events"
    produced = Counter(workload.produced)
    late = Counter(r.value for r in got[app.topic("late")])
    assert not late - produced, "every late record is a repeated event"
    assert got[app.topic("dlq")] == []
    counted = sum(s[3] for s in emitted)
    print(f"at_least_once: {len(emitted)} records for {len(expected)} sessions, {counted - len(workload.produced)} events counted twice, "
          f"{sum(late.values())} repeats late")
    assert counted + sum(late.values()) > len(workload.produced), "the kills made the service process events again"


def _covered(reader: Reader, topic: str, expected) -> bool:
    """Every expected session has been emitted, with at least its events."""
    reader.poll(0.5)
    emitted: dict[tuple, int] = {}
    for user, start, end, count, _ in map(session_of, reader.of(topic)):
        emitted[(user, start, end)] = max(count, emitted.get((user, start, end), 0))
    return all(emitted.get((user, start, end), -1) >= count for user, start, end, count, _ in expected)


def test_the_second_roll_of_an_upgrade_to_packs_loses_and_repeats_nothing(app):
    """docs/operations.md, "Upgrades": two replicas writing a repartition record per event
    (``app.pack_frames = false``, the first roll) are restarted one at a time with packs, while
    producing live. Meanwhile one writes packs and the other single frames, and each reads both."""
    app.configure(pipeline_body(app), partitions=6, app_extra=APP_EXTRA)
    workload = Workload(app, events=60_000, users=2_000, rate=2_000, seed=8, late_every=1_000, malformed_every=1_000)
    workload.create_topics()
    single = {"SESSIONIZER__APP__PACK_FRAMES": "false"}
    first, second = app.service("i1").start(env=single), app.service("i2").start(env=single)
    first.wait_started()
    second.wait_started()
    workload.start()
    wait_until(lambda: workload.progress() > 0.3, 120, "workload progress")
    assert first.stop() == 0
    first.start()  # with packs
    first.wait_started()
    wait_until(lambda: workload.progress() > 0.6, 120, "workload progress")
    assert second.stop() == 0
    second.start()
    second.wait_started()
    workload.join(timeout=600)
    expected = expected_sessions(app.config_path, workload.produced)
    got = collect(app, [first, second], len(expected))
    assert_exact(app, got, expected, workload)
