"""Replay and rebuild: ``sessionizer reset`` and ``sessionizer restore-state`` on the real broker."""

from __future__ import annotations

import shutil
import time
from collections import Counter

import orjson
from confluent_kafka.admin import AdminClient

from service.config import load_config
from service.core.partitioner import partition_for
from service.core.pipeline import compile_pipelines
from service.runtime.ends import END_MARGIN_MS
from service.runtime.tasks.window import WATERMARKS
from service.state.store import WindowStore
from tests import oracle
from tests.helpers import session_body, sessionizer
from tests.integration.harness import Reader, bootstrap, create_topics, produce, read_all, stop_and_read, wait_until
from tests.integration.test_core import by_user, conserved, expected_of, sessions_of
from tests.integration.test_operations import HOLD_THE_WALL_CLOCK, http_port, scrape


def test_reset_replays_the_sources_and_rebuilds_the_same_sessions(app):
    config = app.configure(session_body(app, ["web"], gap="500ms", grace="1s"))
    create_topics([app.topic("web")])
    now = int(time.time() * 1000)
    events = [{"user_id": f"u{u}", "ts": now + s * 2_000 + i * 100} for u in range(5) for s in range(2) for i in range(3)]
    events.sort(key=lambda e: e["ts"])
    produce(app.topic("web"), events, key=by_user)
    expected = expected_of(events, 500)
    assert len(expected) == 10
    service = app.service().start()
    service.wait_started()
    reader = Reader([app.topic("sessions")])
    assert sessions_of(reader.wait_for(10, timeout=60)) == expected

    refused = sessionizer("reset", "--config", str(config), "--yes", clean=False, timeout=180)
    assert refused.returncode == 1 and "running members" in refused.stderr

    assert service.stop() == 0
    unconfirmed = sessionizer("reset", "--config", str(config), input_text="", clean=False, timeout=180)
    assert unconfirmed.returncode == 1 and "not confirmed" in unconfirmed.stderr
    done = sessionizer("reset", "--config", str(config), "--to-earliest", "--yes", clean=False, timeout=180)
    assert done.returncode == 0, done.stderr
    assert f"{app.id}-sessions-repartition" in done.stdout and "restart at partition@offset" in done.stdout
    assert not (app.state_dir / app.id).exists()
    topics = AdminClient({"bootstrap.servers": bootstrap()}).list_topics(timeout=10).topics
    assert f"{app.id}-sessions-changelog" not in topics

    service.start()
    service.wait_started()
    reader.wait_for(20, timeout=60)
    reader.close()
    got = stop_and_read([service], [app.topic("sessions"), app.topic("late")])
    records = got[app.topic("sessions")]
    # The replay emits the same sessions once more, and nothing else.
    assert Counter(sessions_of(records)) == Counter(expected * 2)
    assert got[app.topic("late")] == []
    assert conserved(records, got[app.topic("late")], events * 2)  # each event counted once per run


def test_restore_state_rebuilds_local_stores_from_the_changelog(app):
    """After ``restore-state``, each user's open window in the rebuilt stores is the one produced."""
    config = app.configure(session_body(app, ["web"], gap="1h", grace="1s", aggregates='amount = { type = "sum", field = "amount" }'))
    create_topics([app.topic("web")])
    start = 1_700_000_000_000  # a fixed epoch: the sessions, an hour's gap long, stay open
    events = [{"user_id": f"u{u}", "ts": start + u * 10 + i * 1_000, "amount": u + i} for u in range(30) for i in range(3)]
    events.sort(key=lambda e: e["ts"])  # each partition in time order: nothing is late
    produce(app.topic("web"), events, key=by_user)
    # No punctuation, so no source is ever found quiet: stream time moves with the events alone,
    # and the hour-long sessions of 2023 stay open however long the test takes.
    service = app.service().start(env=HOLD_THE_WALL_CLOCK)
    port = http_port(service)
    wait_until(lambda: scrape(port)["sessionizer_events_processed_total"] == len(events), 60, "every event processed")
    # Every window task is fed by the three source partitions: its stream time is the slowest one's
    # watermark, the latest event time of the partition whose last event is the earliest.
    latest = {p: max(e["ts"] for e in events if partition_for(e["user_id"].encode(), 3) == p) for p in range(3)}
    stream_time = min(latest.values())
    # The three tasks' stream times (summed by ``scrape``) once every source's last watermark is in.
    wait_until(lambda: abs(scrape(port)["sessionizer_stream_time_seconds"] - 3 * stream_time / 1000) < 0.01, 60, "stream time")
    assert scrape(port)["sessionizer_late_events_total"] == 0
    assert service.stop() == 0  # commits what it processed
    store_root = app.state_dir / app.id / "i1"
    assert sorted(p.name for p in store_root.iterdir()) == ["sessions-0", "sessions-1", "sessions-2"]
    shutil.rmtree(store_root)
    assert not store_root.exists()

    result = sessionizer("restore-state", "--config", str(config), "--instance-id", "i1", clean=False, timeout=180)
    assert result.returncode == 0, result.stderr
    assert "restored" in result.stdout
    restored = int(result.stdout.strip().splitlines()[-1].split()[1])
    # Every committed changelog record is read once (the store was deleted: a full restore): as many
    # as a read_committed reader finds, partition by partition. How many there are depends on how the
    # commits fell (a key changed in two commits is written twice), so it is counted, not predicted.
    changelog = read_all([f"{app.id}-sessions-changelog"])
    per_partition = Counter(r.partition for r in changelog)
    assert restored == len(changelog) == sum(per_partition.values())
    for partition in range(3):
        assert f"sessions-{partition}: {per_partition[partition]} records," in result.stdout, result.stdout
    # At least a window per user and each partition's stream time and watermarks.
    assert len(changelog) >= 30 + 2 * 3
    assert sorted(p.name for p in store_root.iterdir()) == ["sessions-0", "sessions-1", "sessions-2"]

    (pipeline,) = compile_pipelines(load_config(config, {}).pipelines)
    windows = []
    for partition in range(3):
        store = WindowStore(store_root / f"sessions-{partition}", pipeline.window)
        try:
            keys = list(store.keys())
            for key in keys:
                assert partition_for(key, 3) == partition, f"{key!r} restored into partition {partition}"
                for window in store.peek(key):
                    values = pipeline.window.values(window)
                    windows.append(
                        oracle.Session(key.decode(), values["session_start_ms"], values["session_end_ms"], values["event_count"], values["amount"])
                    )
            assert store.stream_time == stream_time, "stream time is restored too"
        finally:
            store.close()
    assert sorted(windows) == oracle.sessions(((e["user_id"], e["ts"], e["amount"]) for e in events), 3_600_000)


def stored(app) -> dict[int, tuple[int | None, bytes | None]]:
    """Each partition's stream time and sources' watermarks, as the stores of ``app``'s instance i1 hold them."""
    (pipeline,) = compile_pipelines(load_config(app.config_path, {}).pipelines)
    out = {}
    for partition in range(3):
        store = WindowStore(app.state_dir / app.id / "i1" / f"sessions-{partition}", pipeline.window)
        try:
            out[partition] = (store.stream_time, store.meta(WATERMARKS))
        finally:
            store.close()
    return out


def stream_times(port: int, app) -> dict[int, float] | None:
    """Each window task's stream time gauge (s), once all three have one."""
    metrics = scrape(port)
    found = {p: metrics.get(f'sessionizer_stream_time_seconds{{app_id="{app.id}",partition="{p}",pipeline="sessions"}}') for p in range(3)}
    if any(seconds is None for seconds in found.values()):
        return None
    return {p: float(seconds) for p, seconds in found.items() if seconds is not None}


def test_stream_time_the_wall_clock_moved_comes_back_after_a_restart(app):
    """No event at all: the quiet sources' wall-clock bounds alone move stream time. That stream time is
    state: after a clean stop, ``restore-state`` into an empty directory brings back exactly what the
    stores held; the service restarted on it, with no punctuation to move the wall clock's bounds on,
    judges events against it (one more than grace behind is late), never against less."""
    config = app.configure(session_body(app, ["web"], gap="1s", grace="1s"))
    create_topics([app.topic("web")])
    service = app.service().start()
    service.wait_started()
    port = http_port(service)
    before_ms = int(time.time() * 1000)

    def moved() -> bool:
        found = stream_times(port, app)
        return found is not None and all(seconds * 1000 > before_ms for seconds in found.values())

    wait_until(moved, 60, "the wall clock to move every task's stream time")
    assert service.stop() == 0
    stopped_ms = int(time.time() * 1000)
    kept = stored(app)
    assert all(st is not None and before_ms < st < stopped_ms - END_MARGIN_MS for st, _ in kept.values()), kept

    shutil.rmtree(app.state_dir)
    result = sessionizer("restore-state", "--config", str(config), "--instance-id", "i1", clean=False, timeout=180)
    assert result.returncode == 0, result.stderr
    assert stored(app) == kept, "stream time and watermarks restored from the changelog exactly as they were"

    service.start(env=HOLD_THE_WALL_CLOCK)
    port = http_port(service)
    restarted = wait_until(lambda: stream_times(port, app), 60, "the restored tasks' stream times")
    for partition, (st, _) in kept.items():
        # At least what was committed; more only by a report the last run wrote after its window tasks' last
        # read (a bound it asked for before it stopped, so at most the stop time minus the bound's second).
        assert st <= restarted[partition] * 1000 <= stopped_ms - END_MARGIN_MS, (partition, st, restarted)
    slowest = int(min(restarted.values()) * 1000)
    late = {"user_id": "late", "ts": slowest - 1_000 - 1}
    produce(app.topic("web"), [late], key=by_user)
    reader = Reader([app.topic("late")])
    (record,) = reader.wait_for(1, timeout=60, topic=app.topic("late"))
    reader.close()
    assert record.json() == late
    got = stop_and_read([service], [app.topic("late"), app.topic("sessions")])
    assert [r.value for r in got[app.topic("late")]] == [orjson.dumps(late)] and got[app.topic("sessions")] == []
