"""Rules, flags, pairing and custom aggregates against the real broker, exactly once.

No test here depends on the machine's speed. Either every event waits in the
topics before the service starts (a backlog: per-source watermarks keep each
on time, whatever order the partitions are read in), or the run that sees
events arrive in several steps has its wall clock held back (its first
punctuation an hour away, so no source is ever found quiet and stream time
moves with events alone), so the wall clock cannot make an event late while
the test waits for a barrier. Every test then stops the service, reads every
topic it writes to its end, and compares all of it with offline mode, and the
sessions with the independent oracle.
"""

from __future__ import annotations

import shutil
import time

import orjson

from service.commands.process import process_lines
from service.config import load_config
from tests import oracle
from tests.helpers import CART, PAY, SEED_000, calls_pipeline, config_toml, framed, pipeline, rule, session_window
from tests.integration.backlog import Backlog
from tests.integration.harness import Reader, create_topics, produce, stop_and_read, wait_until
from tests.integration.test_operations import HOLD_THE_WALL_CLOCK

SHOP_TOPICS = ("sessions", "purchases", "coupons", "nudges", "late", "dlq")


def shop_body(app, *, gap="1s", grace="500ms") -> str:
    rules = {
        "purchase_completed": rule("sequence", CART, PAY, app.topic("purchases"), within="5m", keep=["event_id", "details"]),
        "abandoned_cart": rule("absence", CART, PAY, app.topic("coupons")),
        "slow_checkout": rule("absence", CART, PAY, app.topic("nudges"), within="300ms", keep=["event_id"]),
    }
    aggregates = """
has_checkout = { type = "any", field = "type", equals = "payment_processed" }
top_pages = { type = "custom", class = "examples.aggregates:TopValues", params = { field = "details.page", n = 2 } }
"""
    sources = [app.topic("web"), app.topic("mobile")]
    shop = pipeline(sources, session_window(gap, grace), time="timestamp", output=app.topic("sessions"), aggregates=aggregates, rules=rules)
    return config_toml({"shop": shop})


def by_user(value):
    return value["user_id"].encode()


def canonical(topic: str, key: bytes | str | None, value: object) -> tuple:
    key_text = key.decode() if isinstance(key, bytes) else key
    return (topic, key_text, orjson.dumps(value, option=orjson.OPT_SORT_KEYS))


def offline(config_path, backlog: Backlog) -> list[tuple]:
    """Every record ``sessionizer process --wrapped`` makes of the same events, canonical and sorted."""
    out: list[dict] = []
    process_lines(load_config(config_path, {}), backlog.wrapped_lines(), lambda line: out.append(orjson.loads(line)), wrapped=True)
    return sorted(canonical(r["topic"], r["key"], r["value"]) for r in out)


def online(got: dict) -> list[tuple]:
    return sorted(canonical(r.topic, r.key, r.json()) for records in got.values() for r in records)


def check_sessions(app, got: dict, backlog: Backlog, gap_ms: int) -> None:
    """The sessions are the oracle's, and every event is counted once: in a session or on the late topic."""
    emitted = sorted(
        oracle.Session(v["user_id"], v["value"]["session_start_ms"], v["value"]["session_end_ms"], v["value"]["event_count"], 0)
        for v in (r.json() for r in got[app.topic("sessions")])
    )
    events = [(e["user_id"], e["timestamp"] if e["timestamp"] > 10**11 else e["timestamp"] * 1000, 0) for e in backlog.events]
    assert emitted == oracle.sessions(events, gap_ms)
    assert oracle.conserved(emitted, late=len(got[app.topic("late")]), produced=len(backlog))


def test_seed_000_stream_yields_exactly_one_purchase_completed(app):
    """Seed 000's five events over two topics, all waiting before the service starts."""
    config_path = app.configure(shop_body(app, gap="10s", grace="1s"))
    web, mobile = app.topic("web"), app.topic("mobile")
    create_topics([web, mobile])
    backlog = Backlog({web: SEED_000[:3], mobile: SEED_000[3:]})
    for topic, events in backlog.by_topic.items():
        produce(topic, events, key=by_user)
    service = app.service().start()
    service.wait_started()  # the output topics exist
    reader = Reader([app.topic("sessions")])
    reader.wait_for(1, timeout=60, topic=app.topic("sessions"))  # closed on the wall clock, the sources quiet
    reader.close()
    topics = [app.topic(t) for t in SHOP_TOPICS]
    got = stop_and_read([service], topics)
    (record,) = got[app.topic("purchases")]  # exactly one, and nothing more can come
    value = record.json()
    assert record.key == b"user_123"
    assert value["event"] == "purchase_completed"
    assert value["value"]["first"] == {"event_id": "evt_ghi", "details": {"item_id": "prod_xyz"}}
    assert value["value"]["then"] == {"event_id": "evt_mno", "details": {"order_id": "ord_789"}}
    assert got[app.topic("late")] == [] and got[app.topic("dlq")] == []
    check_sessions(app, got, backlog, 10_000)
    assert online(got) == offline(config_path, backlog)


def test_abandoned_cart_yields_one_abandonment_and_a_completed_one_none(app):
    config_path = app.configure(shop_body(app))
    web = app.topic("web")
    create_topics([web, app.topic("mobile")])
    now = int(time.time() * 1000)
    events = [
        {"user_id": "abandoner", "timestamp": now, "type": "page_viewed", "details": {"page": "/home"}},
        {"user_id": "abandoner", "timestamp": now + 100, "type": "item_added_to_cart", "event_id": "c1"},
        {"user_id": "buyer", "timestamp": now, "type": "item_added_to_cart", "event_id": "c2"},
        {"user_id": "buyer", "timestamp": now + 100, "type": "payment_processed", "details": {"page": "/pay"}},
    ]
    backlog = Backlog({web: events, app.topic("mobile"): []})
    produce(web, events, key=by_user)  # waiting before the service starts
    service = app.service().start()
    service.wait_started()  # the output topics exist
    reader = Reader([app.topic("sessions")])
    reader.wait_for(2, timeout=60)  # both sessions closed on the wall clock, the sources quiet
    reader.close()
    got = stop_and_read([service], [app.topic(t) for t in SHOP_TOPICS])
    (coupon,) = got[app.topic("coupons")]
    assert coupon.key == b"abandoner"
    assert coupon.json()["value"]["first"]["event_id"] == "c1"
    assert coupon.json()["value"]["session"]["has_checkout"] is False
    (nudge,) = got[app.topic("nudges")]
    assert nudge.json()["value"]["first"] == {"event_id": "c1"}
    (purchase,) = got[app.topic("purchases")]
    assert purchase.key == b"buyer"
    sessions = {r.key: r.json()["value"] for r in got[app.topic("sessions")]}
    assert sessions[b"buyer"]["has_checkout"] is True
    assert sessions[b"abandoner"]["top_pages"] == [["/home", 1]]
    check_sessions(app, got, backlog, 1_000)
    # Offline mode over the same events derives the same records, byte for byte.
    assert online(got) == offline(config_path, backlog)


def test_purchases_survive_a_crash_and_a_restore_from_the_changelog_exactly_once(app):
    """Carts are committed, the instance is killed and its local state deleted; payments still match once.

    The first run's wall clock is held back, so the carts' stream time stays
    at their event time however long the barrier takes; the payments wait in
    their topic before the second run starts.
    """
    config_path = app.configure(shop_body(app, gap="2s", grace="1s"))
    web, mobile = app.topic("web"), app.topic("mobile")
    create_topics([web, mobile])
    service = app.service().start(env=HOLD_THE_WALL_CLOCK)
    service.wait_started()
    now = int(time.time() * 1000)
    users = [f"user_{i}" for i in range(20)]
    carts = [{"user_id": u, "timestamp": now, "type": "item_added_to_cart", "event_id": f"c-{u}"} for u in users]
    produce(web, carts, key=by_user)
    changelog = Reader([f"{app.id}-shop-changelog"])

    def carts_committed():
        changelog.poll(0.3)
        return {r.key for r in changelog.records if r.key.startswith(b"w")} >= {b"w" + u.encode() for u in users}

    wait_until(carts_committed, 60, "every cart in the changelog")
    changelog.close()
    service.kill()
    assert app.state_dir.exists()
    shutil.rmtree(app.state_dir)  # the restart must rebuild rule state from the changelog
    payments = [{"user_id": u, "timestamp": now + 1000, "type": "payment_processed", "event_id": f"p-{u}"} for u in users]
    produce(mobile, payments, key=by_user)
    service.start()
    reader = Reader([app.topic("sessions")])
    reader.wait_for(len(users), timeout=60)  # every session closed: its purchase is out too
    reader.close()
    got = stop_and_read([service], [app.topic(t) for t in SHOP_TOPICS])
    purchases = sorted((r.key.decode(), r.json()["value"]["first"]["event_id"], r.json()["value"]["then"]["event_id"]) for r in got[app.topic("purchases")])
    assert purchases == sorted((u, f"c-{u}", f"p-{u}") for u in users)
    assert got[app.topic("late")] == [] and got[app.topic("dlq")] == []
    backlog = Backlog({web: carts, mobile: payments})
    check_sessions(app, got, backlog, 2_000)
    assert online(got) == offline(config_path, backlog)


def calls_body(app) -> str:
    return config_toml({"calls": calls_pipeline(app.topic("analytics"), app.topic("metrics"), app.topic("calls"), gap="1s", grace="3s")})


def test_seed_003_pairing_of_two_topics(app):
    """One call with both events, one with analytics only, and one whose later event
    (metrics, 900 ms) reaches the window stage before its earlier one (analytics, 600 ms).

    The order is made, not hoped for: analytics' event is produced only once the
    metrics one is in the repartition topic, ahead of it in the same partition.
    The first run's wall clock is held back meanwhile, so however long that takes
    stream time stays at the events' times; a second run closes the calls.
    """
    analytics_topic, metrics_topic = app.topic("analytics"), app.topic("metrics")
    config_path = app.configure(calls_body(app))
    create_topics([analytics_topic, metrics_topic])
    service = app.service().start(env=HOLD_THE_WALL_CLOCK)
    service.wait_started()
    now = int(time.time() * 1000)

    def analytics(pair, ts, data):
        return {"user1": pair[0], "user2": pair[1], "timestamp": ts, "analytics": data}

    def metrics(pair, ts, data):
        return {"user1": pair[0], "user2": pair[1], "timestamp": ts, "metrics": data}

    backlog = Backlog(
        {
            analytics_topic: [analytics(("a", "b"), now, "a1"), analytics(("c", "d"), now + 50, "a2")],
            metrics_topic: [metrics(("a", "b"), now + 400, "m1"), metrics(("e", "f"), now + 900, "m3")],
        }
    )
    for topic, events in backlog.by_topic.items():
        produce(topic, events)
    repartition = Reader([f"{app.id}-calls-repartition"])

    def events_in(count: int):
        """(partition, (offset, place in its pack), key, event) of each event; reports carry none (service.runtime.frames)."""
        repartition.poll(0.3)
        placed = [(r.partition, (r.offset, n), key, body) for r in repartition.records for n, (key, *_, body) in enumerate(framed([r]))]
        return len(placed) >= count and placed

    wait_until(lambda: events_in(4), 60, "the four events in the repartition topic")
    late_first = analytics(("e", "f"), now + 600, "a3")  # well within grace
    backlog.by_topic[analytics_topic].append(late_first)
    produce(analytics_topic, [late_first])
    keyed = wait_until(lambda: events_in(5), 60, "the fifth event in the repartition topic")
    repartition.close()
    ef = [e for e in keyed if orjson.loads(e[2]) == ["e", "f"]]
    assert len({partition for partition, *_ in ef}) == 1 and [e[1] for e in ef] == sorted(e[1] for e in ef)
    assert [b"m3" in e[3] for e in ef] == [True, False], "metrics' event is ahead of analytics' in the partition"
    assert service.stop() == 0

    service.start()
    reader = Reader([app.topic("calls")])
    reader.wait_for(3, timeout=60)
    reader.close()
    got = stop_and_read([service], [app.topic("calls"), app.topic("late"), app.topic("dlq")])
    assert got[app.topic("late")] == [] and got[app.topic("dlq")] == []
    records = got[app.topic("calls")]
    assert len(records) == 3  # one record per call, never a lone one besides a combined one
    calls = {tuple(orjson.loads(r.key)): (r.json(), r.headers["sessionizer.sources"]) for r in records}
    ab, ab_sources = calls[("a", "b")]
    assert ab == {"user1": "a", "user2": "b", "analytics": "a1", "metrics": "m1", "ts": now}
    assert ab_sources == f"{analytics_topic},{metrics_topic}".encode()
    cd, cd_sources = calls[("c", "d")]
    assert cd == {"user1": "c", "user2": "d", "analytics": "a2", "ts": now + 50}
    assert cd_sources == analytics_topic.encode()
    ef_call, _ = calls[("e", "f")]
    assert ef_call == {"user1": "e", "user2": "f", "metrics": "m3", "analytics": "a3", "ts": now + 600}
    assert online(got) == offline(config_path, backlog)
