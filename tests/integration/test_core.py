"""The service against the real broker: sessions, idle closing, late and dead-letter topics."""

from __future__ import annotations

import random
import time
from collections import Counter

import orjson
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from service.commands.process import process_lines
from service.config import load_config
from service.core.partitioner import partition_for
from service.runtime.ends import END_MARGIN_MS
from tests import oracle
from tests.helpers import config_toml, framed, pipeline, session_body
from tests.integration.harness import (
    AHEAD_MS,
    Reader,
    bootstrap,
    create_topics,
    produce,
    stop_and_read,
    unique,
    wait_until,
)
from tests.integration.workload import Workload, assert_exact, collect, expected_sessions, pipeline_body


def by_user(value):
    return value["user_id"].encode() if isinstance(value, dict) and "user_id" in value else None


def sessions_of(records):
    out = []
    for r in records:
        v = r.json() if hasattr(r, "json") else r
        out.append((v["user_id"], v["value"]["session_start_ms"], v["value"]["session_end_ms"], v["value"]["event_count"]))
    return sorted(out)


def expected_of(events, gap_ms):
    """The independent oracle's sessions as ``sessions_of`` gives them: (user, start, end, count)."""
    return [(k, start, end, count) for k, start, end, count, _ in oracle.sessions(((e["user_id"], e["ts"], 0) for e in events), gap_ms)]


def conserved(records, late, produced) -> bool:
    """Every event produced counted once: in an emitted session, or as a late record."""
    sessions = [oracle.Session(user, start, end, count, 0) for user, start, end, count in sessions_of(records)]
    return oracle.conserved(sessions, late=len(late), produced=len(produced))


def generate(users=40, sessions=3, per_session=4, base=None):
    """Events spanning 3 s of event time: every arrival order is within a 3 s grace."""
    base = base or int(time.time() * 1000) - 1000
    rng = random.Random(7)
    events = []
    for u in range(users):
        for s in range(sessions):
            start = base + s * 1000 + rng.randrange(0, 200)
            for e in range(per_session):
                events.append({"user_id": f"user-{u}", "ts": start + e * 100, "type": rng.choice(["page", "cart", "pay"])})
    rng.shuffle(events)
    return events


def test_three_source_topics_give_one_record_per_user_session(app):
    sources = ["web", "mobile", "backend"]
    config_path = app.configure(session_body(app, sources, aggregates='types = { type = "count_by", field = "type" }'))
    create_topics([app.topic(s) for s in sources])
    events = generate()
    rng = random.Random(1)
    split = {s: [] for s in sources}
    for event in events:
        split[rng.choice(sources)].append(event)
    for source, items in split.items():
        produce(app.topic(source), items)  # unkeyed: spread over all source partitions
    # Produced before the service starts: a backlog of three topics read at
    # different speeds, which per-source watermarks keep on time.
    service = app.service().start()
    service.wait_started()

    reader = Reader([app.topic("sessions")])
    reader.wait_for(40 * 3, timeout=60, topic=app.topic("sessions"))
    reader.close()
    topics = [app.topic("sessions"), app.topic("late"), app.topic("dlq")]
    got = stop_and_read([service], topics)  # nothing more can come: one record per session
    assert got[app.topic("late")] == [] and got[app.topic("dlq")] == []

    expected = expected_of(events, 400)
    assert len(expected) == 120
    lines = [orjson.dumps(e) for e in events]
    offline = []
    process_lines(load_config(config_path), lines, lambda line: offline.append(orjson.loads(line)))
    assert sessions_of(r["value"] for r in offline if r["topic"] == app.topic("sessions")) == expected
    records = got[app.topic("sessions")]
    assert sessions_of(records) == expected
    assert conserved(records, got[app.topic("late")], events)
    # aggregates travel too: every session's types add up to its events
    for record in records:
        value = record.json()["value"]
        assert sum(value["types"].values()) == value["event_count"], value


def test_quiet_users_session_closes_on_the_wall_clock_with_no_further_event(app):
    app.configure(session_body(app, ["web"], gap="1s", grace="500ms"))
    create_topics([app.topic("web")])
    service = app.service().start()
    service.wait_started()
    started = time.monotonic()
    now = int(time.time() * 1000)
    events = [{"user_id": "quiet", "ts": now + i * 100} for i in range(3)]
    produce(app.topic("web"), events, key=by_user)
    reader = Reader([app.topic("sessions")])
    (record,) = reader.wait_for(1, timeout=60)  # a barrier; the bounds below are the promise
    waited = time.monotonic() - started
    reader.close()
    value = record.json()
    assert value["user_id"] == "quiet" and value["value"]["event_count"] == 3
    assert record.key == b"quiet"
    # Not before gap + grace of silence after the last event: the sources' wall-clock
    # bounds (read after ``started``) pass the session's close time only then.
    assert waited >= 1.5, waited
    # And soon after (docs/semantics.md, "Closing latency"): the source is quiet idle_timeout (2 s,
    # tests/integration/conftest.py) after its last record, then its bound (the wall clock minus
    # END_MARGIN_MS, 1 s) passes the close time (the last event, 200 ms in, + gap + grace = 1.7 s)
    # within a request interval (punctuate_interval, 200 ms) and the report's commit (commit_interval,
    # 100 ms), read by the window task after its own commit. The tolerance, 2 s, covers producing the
    # events and the broker's round trips on a loaded machine.
    promised = 0.2 + max(1.5, 2.0) + END_MARGIN_MS / 1000 + 2 * 0.2 + 2 * 0.1
    assert waited <= promised + 2.0, f"closed {waited:.2f} s after the first event; promised about {promised:.2f} s"
    topics = [app.topic("sessions"), app.topic("late")]
    got = stop_and_read([service], topics)
    assert sessions_of(got[app.topic("sessions")]) == expected_of(events, 1000)  # and nothing more
    assert conserved(got[app.topic("sessions")], got[app.topic("late")], events)


def test_late_event_goes_to_the_late_topic_with_its_reason(app):
    app.configure(session_body(app, ["web"], gap="1s", grace="1s"))
    create_topics([app.topic("web")])
    service = app.service().start()
    service.wait_started()
    base = int(time.time() * 1000)
    on_time = {"user_id": "u", "ts": base + 10_000}
    late = {"user_id": "u", "ts": base, "note": "late"}
    produce(app.topic("web"), [on_time, late], key=by_user)  # same key: same partition, this order
    reader = Reader([app.topic("late"), app.topic("sessions")])
    (record,) = reader.wait_for(1, timeout=30, topic=app.topic("late"))
    assert orjson.loads(record.value) == late
    assert record.key == b"u"
    assert b"more than grace" in record.headers["sessionizer.reason"]
    assert record.headers["sessionizer.reason_code"] == b"behind_watermark"
    assert record.headers["sessionizer.event_time_ms"] == str(base).encode()
    assert record.headers["sessionizer.pipeline"] == b"sessions"
    # The on-time event's session closes on the wall clock once the sources are quiet; then nothing more can come.
    reader.wait_for(1, timeout=60, topic=app.topic("sessions"))
    reader.close()
    topics = [app.topic("sessions"), app.topic("late")]
    got = stop_and_read([service], topics)
    assert [r.value for r in got[app.topic("late")]] == [orjson.dumps(late)]
    assert sessions_of(got[app.topic("sessions")]) == [("u", base + 10_000, base + 10_000, 1)]
    assert conserved(got[app.topic("sessions")], got[app.topic("late")], [on_time, late])


def test_unusable_records_go_to_the_dead_letter_topic_and_the_service_carries_on(app):
    app.configure(session_body(app, ["web"], gap="500ms", grace="500ms", aggregates='stake = { type = "sum", field = "stake" }'))
    create_topics([app.topic("web")], partitions=1)
    service = app.service().start()
    service.wait_started()
    now = int(time.time() * 1000) + AHEAD_MS  # on time however long the produce takes
    bad = [
        (b"{not json", "invalid JSON", "invalid_json"),
        (b"[1, 2]", "expected a JSON object", "not_an_object"),
        (orjson.dumps({"ts": now}), "no key", "no_key"),
        (orjson.dumps({"user_id": "u", "ts": "yesterday"}), "bad timestamp", "bad_timestamp"),
        (orjson.dumps({"user_id": {"id": 1}, "ts": now}), "key field 'user_id' has type dict", "bad_key"),
        (orjson.dumps({"user_id": "u", "ts": now, "stake": "ten"}), "wrong type", "wrong_type"),
    ]
    produce(app.topic("web"), [raw for raw, _, _ in bad] + [orjson.dumps({"user_id": "ok", "ts": now, "stake": 5})])
    reader = Reader([app.topic("dlq"), app.topic("sessions")])
    dead = reader.wait_for(len(bad), timeout=30, topic=app.topic("dlq"))
    dead.sort(key=lambda r: int(r.headers["sessionizer.offset"]))  # unkeyed: spread over partitions
    assert [r.value for r in dead] == [raw for raw, _, _ in bad]
    for record, (_, reason, code) in zip(dead, bad):
        assert reason in record.headers["sessionizer.error"].decode()
        assert record.headers["sessionizer.reason_code"] == code.encode()
        assert record.headers["sessionizer.topic"] == app.topic("web").encode()
        assert record.headers["sessionizer.partition"] == b"0"
    assert [int(r.headers["sessionizer.offset"]) for r in dead] == list(range(len(bad)))
    (session,) = reader.wait_for(1, timeout=30, topic=app.topic("sessions"))
    assert session.json()["value"]["stake"] == 5
    service.assert_alive()
    reader.close()
    got = stop_and_read([service], [app.topic("dlq"), app.topic("sessions"), app.topic("late")])
    dead = sorted(got[app.topic("dlq")], key=lambda r: int(r.headers["sessionizer.offset"]))
    assert [r.value for r in dead] == [raw for raw, _, _ in bad]  # each once, nothing more
    assert sessions_of(got[app.topic("sessions")]) == [("ok", now, now, 1)]
    assert got[app.topic("late")] == []


def test_two_pipelines_in_one_service(app):
    rolling = pipeline([app.topic("web")], {"type": "tumbling", "size": "1s", "grace": "500ms"}, output=app.topic("rolling"))
    body = session_body(app, ["web"], gap="500ms", grace="1s") + config_toml({"rolling": rolling})
    app.configure(body)
    create_topics([app.topic("web")])
    service = app.service().start()
    service.wait_started()
    # A whole second, so the events share one tumbling window; ahead of the wall clock, so they are on
    # time whenever they are written: the empty source, found quiet, has the wall clock for its watermark.
    second = (int(time.time()) + AHEAD_MS // 1000) * 1000
    produce(app.topic("web"), [{"user_id": "u", "ts": second + i * 100} for i in range(5)], key=by_user)
    reader = Reader([app.topic("sessions"), app.topic("rolling")])
    (session,) = reader.wait_for(1, timeout=30, topic=app.topic("sessions"))
    (window,) = reader.wait_for(1, timeout=30, topic=app.topic("rolling"))
    assert session.json()["value"]["event_count"] == 5
    assert window.json()["event"] == "session_summary"
    assert window.json()["value"] == {"window_start_ms": second, "window_end_ms": second + 1000, "event_count": 5}
    reader.close()


#: The capped and hopping pipelines' settings (test_session_caps_and_hopping_windows_end_to_end).
CAP_GAP_MS, CAP_EVENTS, CAP_DURATION_MS = 1_000, 3, 2_000
HOP_SIZE_MS, HOP_ADVANCE_MS = 2_000, 500


def capped_split(times: list[int], gap_ms: int, max_events: int | None = None, max_duration_ms: int | None = None) -> list[tuple[int, int, int]]:
    """(start, end, count) of one key's sessions over events in time order: a new session where the gap is
    wider than ``gap_ms``, or where the event would break a cap (docs/semantics.md: in-order input gives the
    sorted split, with splits at the caps). Written the plainest way, sharing nothing with the service."""
    out: list[list[int]] = []
    for t in sorted(times):
        last = out[-1] if out else None
        if (
            last is not None
            and t - last[1] <= gap_ms
            and (max_events is None or last[2] < max_events)
            and (max_duration_ms is None or t - last[0] <= max_duration_ms)
        ):
            last[1], last[2] = t, last[2] + 1
        else:
            out.append([t, t, 1])
    return [(start, end, count) for start, end, count in out]


def hopping_counts(times: list[int], size_ms: int, advance_ms: int) -> list[tuple[int, int]]:
    """(window start, events) of one key's hopping windows: [start, start + size), starts at multiples of advance."""
    counts: Counter[int] = Counter()
    for t in times:
        start = t - t % advance_ms
        while start > t - size_ms:
            counts[start] += 1
            start -= advance_ms
    return sorted(counts.items())


def test_session_caps_and_hopping_windows_end_to_end(app):
    """Sessions capped by ``max_events``, sessions capped by ``max_duration`` and hopping windows, three
    pipelines over one topic of the broker: each emits exactly the windows the plain reference above
    computes, and offline mode agrees. Each user's events are in one partition, in time order (keyed,
    produced sorted): with caps, arrival order matters, and in order the result is the sorted split."""
    web = app.topic("web")
    window = {"type": "session", "gap": f"{CAP_GAP_MS}ms", "grace": "500ms"}
    amount = 'amount = { type = "sum", field = "amount" }'
    pipelines = {
        "by_events": pipeline([web], window | {"max_events": CAP_EVENTS}, output=app.topic("by-events"), aggregates=amount),
        "by_duration": pipeline([web], window | {"max_duration": f"{CAP_DURATION_MS}ms"}, output=app.topic("by-duration"), aggregates=amount),
        "hopping": pipeline(
            [web], {"type": "hopping", "size": f"{HOP_SIZE_MS}ms", "advance": f"{HOP_ADVANCE_MS}ms", "grace": "500ms"}, output=app.topic("hopping")
        ),
    }
    config_path = app.configure(config_toml(pipelines))
    create_topics([web])
    rng = random.Random(24)
    base = (int(time.time()) - 600) * 1000  # ten minutes ago: every window closes once the sources are quiet
    times: dict[str, list[int]] = {}
    for u in range(25):
        clock = base + rng.randrange(0, 5_000)
        times[f"user-{u}"] = stamps = []
        for _ in range(rng.randrange(4, 16)):
            clock += rng.choice([100, 200, 300, 450, 700, 900, CAP_GAP_MS + 500])
            stamps.append(clock)
    events = sorted(({"user_id": user, "ts": t, "amount": t % 7} for user, stamps in times.items() for t in stamps), key=lambda e: e["ts"])
    produce(web, events, key=by_user)

    amounts = {(e["user_id"], e["ts"]): e["amount"] for e in events}

    def with_amounts(user: str, split: list[tuple[int, int, int]]) -> list[tuple]:
        stamps = times[user]
        return [(user, start, end, count, sum(amounts[user, t] for t in stamps if start <= t <= end)) for start, end, count in split]

    expected = {
        "by-events": sorted(s for user, stamps in times.items() for s in with_amounts(user, capped_split(stamps, CAP_GAP_MS, max_events=CAP_EVENTS))),
        "by-duration": sorted(
            s for user, stamps in times.items() for s in with_amounts(user, capped_split(stamps, CAP_GAP_MS, max_duration_ms=CAP_DURATION_MS))
        ),
        "hopping": sorted(
            (user, start, start + HOP_SIZE_MS, count) for user, stamps in times.items() for start, count in hopping_counts(stamps, HOP_SIZE_MS, HOP_ADVANCE_MS)
        ),
    }
    # The caps cut: without them the sessions would be fewer (the test exercises them, whatever the seed).
    uncapped = sum(len(capped_split(stamps, CAP_GAP_MS)) for stamps in times.values())
    assert len(expected["by-events"]) > uncapped and len(expected["by-duration"]) > uncapped
    assert max(s[3] for s in expected["by-events"]) == CAP_EVENTS
    assert max(s[2] - s[1] for s in expected["by-duration"]) <= CAP_DURATION_MS

    def read_as(name: str, records: list) -> list[tuple]:
        out = []
        for record in records:
            value = record if isinstance(record, dict) else record.json()
            v = value["value"]
            if name == "hopping":
                assert value["event"] == "session_summary"
                out.append((value["user_id"], v["window_start_ms"], v["window_end_ms"], v["event_count"]))
            else:
                assert v["duration_ms"] == v["session_end_ms"] - v["session_start_ms"]
                out.append((value["user_id"], v["session_start_ms"], v["session_end_ms"], v["event_count"], v["amount"]))
        return sorted(out)

    offline: dict[str, list[dict]] = {name: [] for name in expected}
    process_lines(load_config(config_path), [orjson.dumps(e) for e in events], lambda line: collect_offline(offline, app, line))
    for name, windows in expected.items():
        assert read_as(name, offline[name]) == windows, f"offline mode, {name}"

    service = app.service().start()
    service.wait_started()
    reader = Reader([app.topic(name) for name in expected])
    try:
        for name, windows in expected.items():
            reader.wait_for(len(windows), timeout=120, topic=app.topic(name))
    finally:
        reader.close()
    got = stop_and_read([service], [app.topic(name) for name in expected] + [app.topic("late"), app.topic("dlq")])
    assert got[app.topic("late")] == [] and got[app.topic("dlq")] == []
    for name, windows in expected.items():
        assert read_as(name, got[app.topic(name)]) == windows, name  # each exactly once, nothing else


def collect_offline(into: dict[str, list[dict]], app, line: bytes) -> None:
    """Offline mode's output line, by the name of its topic (one of ``into``'s)."""
    record = orjson.loads(line)
    name = record["topic"].removeprefix(f"{app.id}-")
    if name in into:
        into[name].append(record["value"])


def test_repartitioning_puts_each_key_where_a_java_producer_would(app):
    # No purge while the test runs: the repartition topic is read whole at the end.
    app.configure(session_body(app, ["web", "mobile"]), partitions=4, topics_extra='purge_interval = "1h"')
    create_topics([app.topic("web"), app.topic("mobile")], partitions=4)
    now = int(time.time() * 1000)
    users = [f"user_{i}" for i in range(30)]
    events = [{"user_id": u, "ts": now} for u in users]
    produce(app.topic("web"), events)  # unkeyed, before the service starts: a backlog spread over the partitions
    produce(app.topic("mobile"), events)
    service = app.service().start()
    service.wait_started()
    reader = Reader([app.topic("sessions")])
    reader.wait_for(len(users), timeout=60)
    reader.close()
    repartition = f"{app.id}-sessions-repartition"
    got = stop_and_read([service], [repartition, app.topic("sessions"), app.topic("late")])
    # events travel packed, with watermark reports between them (service.runtime.frames)
    placed = [(key, record.partition) for record in got[repartition] for key, *_ in framed([record])]
    assert len(placed) == 60  # each event once
    for key, partition in placed:
        assert partition == partition_for(key, 4), key
    # both topics' events of a user met in one partition, and in one session
    partitions = {}
    for key, partition in placed:
        partitions.setdefault(key, set()).add(partition)
    assert all(len(p) == 1 for p in partitions.values())
    assert sessions_of(got[app.topic("sessions")]) == expected_of(events * 2, 400)
    assert conserved(got[app.topic("sessions")], got[app.topic("late")], events * 2)


def stable_offsets(admin: AdminClient, group: str, partitions: list[TopicPartition], timeout: float = 30) -> dict[int, int]:
    """The group's committed offset of each partition, read once no transaction's offsets are pending for it.

    The broker answers UNSTABLE_OFFSET_COMMIT for a partition whose offsets a
    committed transaction has not finished writing, and the admin client does
    not retry it: this does, as a read_committed consumer's OffsetFetch does.
    """
    request = ConsumerGroupTopicPartitions(group, partitions)
    deadline = time.monotonic() + timeout
    while True:
        answer = admin.list_consumer_group_offsets([request], require_stable=True)[group].result(timeout)
        errors = [tp.error for tp in answer.topic_partitions if tp.error is not None]
        if not errors:
            return {tp.partition: max(tp.offset, 0) for tp in answer.topic_partitions}
        assert time.monotonic() < deadline, f"offsets still unstable after {timeout} s: {errors}"
        time.sleep(0.05)


def test_consumed_repartition_records_are_purged(app):
    """Consumed repartition records are deleted, never one the group has not committed past,
    and the sessions still come out exactly.

    A live stream of 30,000 events (about 20 s) with a purge every second.
    Throughout, each repartition partition's low watermark (where deletion
    has reached) is read first, then the group's committed offset, and the low
    watermark is never ahead. The order of the two reads makes a false alarm
    impossible: both only grow, so a low watermark read first is at most the
    one of the moment the offset is read. The offset is read stable
    (``require_stable``), as the service's read_committed consumer reads it: a
    transaction's offsets are decided when ``commit_transaction`` returns (and
    purging may follow), but the group shows them only once the coordinator
    has written its markers; until then an unstable read answers the previous
    offset (seen under load).

    That purging goes on while the stream does is shown at points of the
    stream the test picks, not by counting samples on a timer: production
    stops at each quarter, the end of each repartition partition is read, and
    the deletion must reach it before production goes on. Each of the three
    ends is beyond the one before (records were written between), so that is
    three purges of each partition at least, with the stream still to come.
    """
    app.configure(pipeline_body(app), topics_extra='purge_interval = "1s"')
    events = 30_000
    workload = Workload(app, events=events, users=1_000, rate=1_500, seed=6)
    quarters = [workload.hold(events * k // 4) for k in (1, 2, 3)]
    workload.create_topics()
    service = app.service().start()
    service.wait_started()
    repartition = f"{app.id}-sessions-repartition"
    partitions = [TopicPartition(repartition, p) for p in range(3)]
    admin = AdminClient({"bootstrap.servers": bootstrap()})
    probe = Consumer({"bootstrap.servers": bootstrap(), "group.id": unique("probe")})

    def lows_checked() -> list[int]:
        """Each partition's low watermark, checked against the group's committed offset read after it."""
        lows = [probe.get_watermark_offsets(tp, timeout=10, cached=False)[0] for tp in partitions]
        committed = stable_offsets(admin, app.id, partitions)
        for p, low in enumerate(lows):
            assert low <= committed[p], f"partition {p}: records up to {low} deleted, the group committed only {committed[p]}"
        return lows

    def deleted_up_to(ends: list[int]) -> list[int] | None:
        """The low watermarks once every partition's has reached its end in ``ends``; else None."""
        lows = lows_checked()
        return lows if all(low >= end for low, end in zip(lows, ends)) else None

    reached: list[list[int]] = []  # per quarter, the low watermarks once deletion reached that quarter's ends
    try:
        workload.start()
        for gate in quarters:
            while workload.held_at is None:  # the stream runs: check as often as the broker answers
                assert workload.running, "the workload ended before its hold"
                lows_checked()
                time.sleep(0.1)
            ends = [probe.get_watermark_offsets(tp, timeout=10, cached=False)[1] for tp in partitions]
            what = f"deletion to reach the repartition ends {ends} with the stream held at {workload.held_at} events"
            reached.append(wait_until(lambda ends=ends: deleted_up_to(ends), 120, what))
            gate.set()
        while workload.running:
            lows_checked()
            time.sleep(0.1)
    finally:
        probe.close()
    workload.join(timeout=600)
    for p in range(3):
        assert 0 < reached[0][p] < reached[1][p] < reached[2][p], f"partition {p}: three purges, each further: {reached}"
    expected = expected_sessions(app.config_path, workload.produced)
    got = collect(app, [service], len(expected))
    assert_exact(app, got, expected, len(workload.produced))
