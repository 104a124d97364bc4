"""Rules, flags, pairing and custom aggregates against the real broker, exactly once."""

from __future__ import annotations

import shutil
import time

import orjson

from service.commands.process import process_lines
from service.config import load_config
from tests.helpers import CART, PAY, SEED_000, calls_pipeline, config_toml, pipeline, rule, session_window
from tests.integration.harness import Reader, create_topics, produce, wait_until


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


def test_seed_000_stream_yields_exactly_one_purchase_completed(app):
    # The two topics may reach the window stage in either order: a grace above the stream's 12 s keeps every order on time.
    app.configure(shop_body(app, gap="10s", grace="15s"))
    create_topics([app.topic("web"), app.topic("mobile")])
    service = app.service().start()
    service.wait_started()
    produce(app.topic("web"), SEED_000[:3], key=by_user)
    produce(app.topic("mobile"), SEED_000[3:], key=by_user)
    reader = Reader([app.topic("purchases")])
    (record,) = reader.wait_for(1, timeout=30)
    reader.poll(2)  # nothing more may come
    assert len(reader.records) == 1
    value = record.json()
    assert record.key == b"user_123"
    assert value["event"] == "purchase_completed"
    assert value["value"]["first"] == {"event_id": "evt_ghi", "details": {"item_id": "prod_xyz"}}
    assert value["value"]["then"] == {"event_id": "evt_mno", "details": {"order_id": "ord_789"}}
    reader.close()


def test_abandoned_cart_yields_one_abandonment_and_a_completed_one_none(app):
    config_path = app.configure(shop_body(app))
    create_topics([app.topic("web"), app.topic("mobile")])
    service = app.service().start()
    service.wait_started()
    now = int(time.time() * 1000)
    events = [
        {"user_id": "abandoner", "timestamp": now, "type": "page_viewed", "details": {"page": "/home"}},
        {"user_id": "abandoner", "timestamp": now + 100, "type": "item_added_to_cart", "event_id": "c1"},
        {"user_id": "buyer", "timestamp": now, "type": "item_added_to_cart", "event_id": "c2"},
        {"user_id": "buyer", "timestamp": now + 100, "type": "payment_processed", "details": {"page": "/pay"}},
    ]
    produce(app.topic("web"), events, key=by_user)
    reader = Reader([app.topic(t) for t in ("sessions", "coupons", "nudges", "purchases")])
    reader.wait_for(2, timeout=30, topic=app.topic("sessions"))  # both sessions closed on the idle clock
    reader.poll(2)
    (coupon,) = reader.of(app.topic("coupons"))
    assert coupon.key == b"abandoner"
    assert coupon.json()["value"]["first"]["event_id"] == "c1"
    assert coupon.json()["value"]["session"]["has_checkout"] is False
    (nudge,) = reader.of(app.topic("nudges"))
    assert nudge.json()["value"]["first"] == {"event_id": "c1"}
    (purchase,) = reader.of(app.topic("purchases"))
    assert purchase.key == b"buyer"
    sessions = {r.key: r.json()["value"] for r in reader.of(app.topic("sessions"))}
    assert sessions[b"buyer"]["has_checkout"] is True
    assert sessions[b"abandoner"]["top_pages"] == [["/home", 1]]

    # Offline mode over the same events derives the same records.
    offline = []
    process_lines(load_config(config_path), [orjson.dumps(e) for e in events], lambda line: offline.append(orjson.loads(line)))
    derived = sorted((r["topic"], r["key"]) for r in offline if r["topic"] != app.topic("sessions"))
    online = sorted((r.topic, r.key.decode()) for r in reader.records if r.topic != app.topic("sessions"))
    assert online == derived
    reader.close()


def test_purchases_survive_a_crash_and_a_restore_from_the_changelog_exactly_once(app):
    """Carts are committed, the instance is killed and its local state deleted; payments still match once."""
    app.configure(shop_body(app, gap="20s", grace="5s"))
    create_topics([app.topic("web"), app.topic("mobile")])
    service = app.service().start()
    service.wait_started()
    now = int(time.time() * 1000)
    users = [f"user_{i}" for i in range(20)]
    produce(app.topic("web"), [{"user_id": u, "timestamp": now, "type": "item_added_to_cart", "event_id": f"c-{u}"} for u in users], key=by_user)
    changelog = Reader([f"{app.id}-shop-changelog"])

    def carts_committed():
        changelog.poll(0.3)
        return {r.key for r in changelog.records if r.key.startswith(b"w")} >= {b"w" + u.encode() for u in users}

    wait_until(carts_committed, 30, "every cart in the changelog")
    changelog.close()
    service.kill()
    shutil.rmtree(app.state_dir)  # the restart must rebuild rule state from the changelog
    produce(app.topic("mobile"), [{"user_id": u, "timestamp": now + 1000, "type": "payment_processed", "event_id": f"p-{u}"} for u in users], key=by_user)
    service.start()
    reader = Reader([app.topic("purchases")])
    reader.wait_for(len(users), timeout=60)
    reader.poll(2)
    got = sorted((r.key.decode(), r.json()["value"]["first"]["event_id"], r.json()["value"]["then"]["event_id"]) for r in reader.records)
    assert got == sorted((u, f"c-{u}", f"p-{u}") for u in users)
    reader.close()


def calls_body(app) -> str:
    return config_toml({"calls": calls_pipeline(app.topic("analytics"), app.topic("metrics"), app.topic("calls"), gap="1s", grace="3s")})


def test_seed_003_pairing_of_two_topics(app):
    app.configure(calls_body(app))
    create_topics([app.topic("analytics"), app.topic("metrics")])
    service = app.service().start()
    service.wait_started()
    now = int(time.time() * 1000)

    def analytics(pair, ts, data):
        return {"user1": pair[0], "user2": pair[1], "timestamp": ts, "analytics": data}

    def metrics(pair, ts, data):
        return {"user1": pair[0], "user2": pair[1], "timestamp": ts, "metrics": data}

    # both events; analytics only; and a pair whose later event reaches the window stage first
    produce(app.topic("analytics"), [analytics(("a", "b"), now, "a1"), analytics(("c", "d"), now + 50, "a2")])
    produce(app.topic("metrics"), [metrics(("a", "b"), now + 400, "m1"), metrics(("e", "f"), now + 900, "m3")])
    repartition = Reader([f"{app.id}-calls-repartition"])
    repartition.wait_for(4, timeout=30)
    repartition.close()
    produce(app.topic("analytics"), [analytics(("e", "f"), now + 600, "a3")])  # well within grace

    reader = Reader([app.topic("calls")])
    reader.wait_for(3, timeout=30)
    reader.poll(2)  # one record per call, never a lone one besides a combined one
    calls = {tuple(orjson.loads(r.key)): (r.json(), r.headers["sessionizer.sources"]) for r in reader.records}
    assert len(reader.records) == 3
    ab, ab_sources = calls[("a", "b")]
    assert ab == {"user1": "a", "user2": "b", "analytics": "a1", "metrics": "m1", "ts": now}
    assert ab_sources == f"{app.topic('analytics')},{app.topic('metrics')}".encode()
    cd, cd_sources = calls[("c", "d")]
    assert cd == {"user1": "c", "user2": "d", "analytics": "a2", "ts": now + 50}
    assert cd_sources == app.topic("analytics").encode()
    ef, _ = calls[("e", "f")]
    assert ef == {"user1": "e", "user2": "f", "metrics": "m3", "analytics": "a3", "ts": now + 600}
    reader.close()
