"""The service against the real broker: sessions, idle closing, late and dead-letter topics."""

from __future__ import annotations

import random
import time

import orjson

from service.commands.process import process_lines
from service.config import load_config
from tests.helpers import config_toml, pipeline, session_body
from tests.integration.harness import Reader, create_topics, murmur2_partition, produce, wait_until


def by_user(value):
    return value["user_id"].encode() if isinstance(value, dict) and "user_id" in value else None


def sessions_of(records):
    out = []
    for r in records:
        v = r.json() if hasattr(r, "json") else r
        out.append((v["user_id"], v["value"]["session_start_ms"], v["value"]["session_end_ms"], v["value"]["event_count"]))
    return sorted(out)


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

    reader = Reader([app.topic("sessions"), app.topic("late")])
    got = reader.wait_for(40 * 3, timeout=60, topic=app.topic("sessions"))
    reader.poll(2)  # nothing more may come: one record per session
    assert reader.of(app.topic("late")) == []

    lines = [orjson.dumps(e) for e in events]
    offline = []
    process_lines(load_config(config_path), lines, lambda line: offline.append(orjson.loads(line)))
    expected = sessions_of(r["value"] for r in offline if r["topic"] == app.topic("sessions"))
    assert sessions_of(reader.of(app.topic("sessions"))) == expected
    assert len(expected) == 120
    assert len(got) == 120
    # aggregates travel too
    sample = got[0].json()["value"]
    assert sum(sample["types"].values()) == sample["event_count"]
    reader.close()


def test_quiet_users_session_closes_on_the_wall_clock_with_no_further_event(app):
    app.configure(session_body(app, ["web"], gap="1s", grace="500ms"))
    create_topics([app.topic("web")])
    service = app.service().start()
    service.wait_started()
    now = int(time.time() * 1000)
    produce(app.topic("web"), [{"user_id": "quiet", "ts": now + i * 100} for i in range(3)], key=by_user)
    started = time.monotonic()
    reader = Reader([app.topic("sessions")])
    (record,) = reader.wait_for(1, timeout=30)
    waited = time.monotonic() - started
    value = record.json()
    assert value["user_id"] == "quiet" and value["value"]["event_count"] == 3
    assert record.key == b"quiet"
    # gap + grace after the last event (200 ms after the first), plus commit and punctuation slack
    assert 1.0 < waited < 10, waited
    reader.close()


def test_late_event_goes_to_the_late_topic_with_its_reason(app):
    app.configure(session_body(app, ["web"], gap="1s", grace="1s"))
    create_topics([app.topic("web")])
    service = app.service().start()
    service.wait_started()
    base = int(time.time() * 1000)
    on_time = {"user_id": "u", "ts": base + 10_000}
    late = {"user_id": "u", "ts": base, "note": "late"}
    produce(app.topic("web"), [on_time, late], key=by_user)  # same key: same partition, this order
    reader = Reader([app.topic("late")])
    (record,) = reader.wait_for(1, timeout=30)
    assert orjson.loads(record.value) == late
    assert record.key == b"u"
    assert b"more than grace" in record.headers["sessionizer.reason"]
    assert record.headers["sessionizer.reason_code"] == b"behind_watermark"
    assert record.headers["sessionizer.event_time_ms"] == str(base).encode()
    assert record.headers["sessionizer.pipeline"] == b"sessions"
    reader.close()


def test_unusable_records_go_to_the_dead_letter_topic_and_the_service_carries_on(app):
    app.configure(session_body(app, ["web"], gap="500ms", grace="500ms", aggregates='stake = { type = "sum", field = "stake" }'))
    create_topics([app.topic("web")], partitions=1)
    service = app.service().start()
    service.wait_started()
    now = int(time.time() * 1000)
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


def test_two_pipelines_in_one_service(app):
    rolling = pipeline([app.topic("web")], {"type": "tumbling", "size": "1s", "grace": "500ms"}, output=app.topic("rolling"))
    body = session_body(app, ["web"], gap="500ms", grace="1s") + config_toml({"rolling": rolling})
    app.configure(body)
    create_topics([app.topic("web")])
    service = app.service().start()
    service.wait_started()
    second = (int(time.time()) - 2) * 1000  # a whole second, so the events share one tumbling window
    produce(app.topic("web"), [{"user_id": "u", "ts": second + i * 100} for i in range(5)], key=by_user)
    reader = Reader([app.topic("sessions"), app.topic("rolling")])
    (session,) = reader.wait_for(1, timeout=30, topic=app.topic("sessions"))
    (window,) = reader.wait_for(1, timeout=30, topic=app.topic("rolling"))
    assert session.json()["value"]["event_count"] == 5
    assert window.json()["event"] == "session_summary"
    assert window.json()["value"] == {"window_start_ms": second, "window_end_ms": second + 1000, "event_count": 5}
    reader.close()


def test_repartitioning_puts_each_key_where_a_java_producer_would(app):
    app.configure(session_body(app, ["web", "mobile"]), partitions=4)
    create_topics([app.topic("web"), app.topic("mobile")], partitions=4)
    service = app.service().start()
    service.wait_started()
    now = int(time.time() * 1000)
    users = [f"user_{i}" for i in range(30)]
    produce(app.topic("web"), [{"user_id": u, "ts": now} for u in users])
    produce(app.topic("mobile"), [{"user_id": u, "ts": now} for u in users])
    repartition = f"{app.id}-sessions-repartition"
    reader = Reader([repartition])

    def events() -> list:
        reader.poll(0.3)
        # keyless records are the source partitions' watermark reports (service.runtime.frames)
        return [r for r in reader.records if r.key is not None]

    records = wait_until(lambda: len(events()) >= 60 and events(), 30, "60 repartitioned events")
    assert len(records) == 60
    for record in records:
        assert record.partition == murmur2_partition(record.key, 4), record.key
    # both topics' events of a user met in one partition
    partitions = {}
    for record in records:
        partitions.setdefault(record.key, set()).add(record.partition)
    assert all(len(p) == 1 for p in partitions.values())
    reader.close()


def test_consumed_repartition_records_are_purged(app):
    app.configure(session_body(app, ["web"]), topics_extra='purge_interval = "1s"')
    create_topics([app.topic("web")])
    service = app.service().start()
    service.wait_started()
    now = int(time.time() * 1000)
    produce(app.topic("web"), [{"user_id": f"u{i}", "ts": now} for i in range(60)], key=by_user)
    repartition = f"{app.id}-sessions-repartition"

    def purged() -> bool:
        from confluent_kafka import Consumer, TopicPartition

        from tests.integration.harness import bootstrap

        consumer = Consumer({"bootstrap.servers": bootstrap(), "group.id": "probe"})
        try:
            marks = [consumer.get_watermark_offsets(TopicPartition(repartition, p), timeout=10) for p in range(3)]
        finally:
            consumer.close()
        return sum(high for _, high in marks) >= 60 and all(low > 0 for low, high in marks if high > 1)

    wait_until(purged, 60, "the repartition topic's low watermarks to move past consumed records")
