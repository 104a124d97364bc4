"""Sequence and absence rules on the seeds' streams (000 and 004), and what survives a restart."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from service.core.pipeline import Pipeline
from service.core.processor import WindowProcessor
from service.state.store import WindowStore
from tests.fakes import FakeMessage
from tests.helpers import CART, PAY, SEED_000, Harness, config_from_toml, config_toml, pipeline, rule, session_window

T0 = 1678886400


def config(rules: dict | None = None, gap: str = "30m", grace: str = "2m", aggregates: str = "") -> str:
    """Pipeline ``shop``: sessions of ``user_id`` over web and mobile events, with ``rules``."""
    sources = ["web_events", "mobile_events"]
    shop = pipeline(sources, session_window(gap, grace), time="timestamp", output="sessions", aggregates=aggregates, rules=rules)
    return config_toml({"shop": shop})


def purchase(within: str = "5m") -> dict:
    return {"purchase_completed": rule("sequence", CART, PAY, "purchases", within=within, keep=["event_id", "details"])}


def slow(within: str | None = "5m") -> dict:
    return {"slow_checkout": rule("absence", CART, PAY, "nudges", within=within, keep=["event_id"])}


PURCHASE = purchase()
ABANDONED = {"abandoned_cart": rule("absence", CART, PAY, "coupons", event="cart_abandoned", keep=["event_id", "details"])}
SLOW = slow()


def ev(seconds: int, kind: str, event_id: str = "", user: str = "user_123") -> dict:
    return {"event_id": event_id or f"e{seconds}", "timestamp": T0 + seconds, "user_id": user, "type": kind}


def values(h: Harness, topic: str) -> list[dict]:
    return [record["value"] for record in h.emitted(topic)]


# -- sequence -----------------------------------------------------------------------


def test_seed_000_stream_derives_exactly_one_purchase_the_moment_the_payment_arrives(make):
    h = make(config(PURCHASE))
    for event in SEED_000[:-1]:
        h.send(event)
    assert h.emitted("purchases") == []
    h.send(SEED_000[-1])
    (record,) = h.emitted("purchases")  # before any commit or session close
    assert record["event"] == "purchase_completed"
    assert record["user_id"] == "user_123"
    assert record["timestamp"] == "2023-03-15 13:20:12"
    assert record["value"] == {
        "first": {"event_id": "evt_ghi", "details": {"item_id": "prod_xyz"}},
        "then": {"event_id": "evt_mno", "details": {"order_id": "ord_789"}},
        "first_time_ms": 1678886405000,
        "then_time_ms": 1678886412000,
    }
    assert [r.key for r in h.out] == [b"user_123"]
    h.finish()
    assert len(h.emitted("purchases")) == 1
    assert len(h.emitted("sessions")) == 1


def test_payment_more_than_t_after_the_cart_does_not_match(make):
    h = make(config(PURCHASE))
    h.send(ev(0, "item_added_to_cart"))
    h.send(ev(301, "payment_processed"))
    h.finish()
    assert h.emitted("purchases") == []


def test_match_is_inclusive_at_exactly_t_and_at_the_same_time(make):
    h = make(config(PURCHASE))
    h.send(ev(0, "item_added_to_cart", "c"))
    h.send(ev(300, "payment_processed", "p"))
    h.send(ev(1000, "item_added_to_cart", "c2"))
    h.send(ev(1000, "payment_processed", "p2"))
    h.finish()
    assert sorted((v["first"]["event_id"], v["then"]["event_id"]) for v in values(h, "purchases")) == [("c", "p"), ("c2", "p2")]


def test_payment_before_the_cart_does_not_match(make):
    h = make(config(PURCHASE))
    h.send(ev(0, "payment_processed"))
    h.send(ev(10, "item_added_to_cart"))
    h.finish()
    assert h.emitted("purchases") == []


def test_out_of_order_cart_within_grace_still_matches_when_it_arrives(make):
    h = make(config(PURCHASE, grace="2m"))
    h.send(ev(100, "payment_processed", "p"))
    h.send(ev(160, "page_viewed"))
    h.commit()
    assert h.emitted("purchases") == []
    h.send(ev(40, "item_added_to_cart", "c"))  # 2 minutes behind stream time: not late
    assert [(v["first"]["event_id"], v["then"]["event_id"]) for v in values(h, "purchases")] == [("c", "p")]
    assert h.late() == []


def test_late_cart_goes_to_the_late_topic_and_matches_nothing(make):
    h = make(config(PURCHASE, grace="1m"))
    h.send(ev(100, "payment_processed"))
    h.send(ev(200, "page_viewed"))
    h.send(ev(90, "item_added_to_cart"))  # 110 s behind: late
    h.finish()
    assert h.emitted("purchases") == []
    assert len(h.late()) == 1


def test_repeated_carts_and_payments_match_pairwise(make):
    """Every (cart, payment) pair within T matches once: two carts and a payment are two purchases."""
    h = make(config(PURCHASE))
    h.send(ev(0, "item_added_to_cart", "c1"))
    h.send(ev(10, "item_added_to_cart", "c2"))
    h.send(ev(20, "payment_processed", "p1"))
    assert sorted(v["first"]["event_id"] for v in values(h, "purchases")) == ["c1", "c2"]
    h.send(ev(30, "payment_processed", "p2"))
    h.finish()
    pairs = sorted((v["first"]["event_id"], v["then"]["event_id"]) for v in values(h, "purchases"))
    assert pairs == [("c1", "p1"), ("c1", "p2"), ("c2", "p1"), ("c2", "p2")]


def test_pair_brought_together_by_a_bridging_event_matches_at_the_merge(make):
    """T longer than the gap: cart and payment first sit in two sessions; a late event joins them."""
    h = make(config(purchase(within="15m"), gap="5m", grace="10m"))
    h.send(ev(0, "item_added_to_cart", "c"))
    h.send(ev(600, "payment_processed", "p"))  # 10 minutes later: a second session
    h.commit()
    assert h.emitted("purchases") == []
    h.send(ev(300, "page_viewed"))  # within the gap of both: one session now
    assert [(v["first"]["event_id"], v["then"]["event_id"]) for v in values(h, "purchases")] == [("c", "p")]
    h.finish()
    assert len(h.emitted("purchases")) == 1
    assert len(h.emitted("sessions")) == 1


def test_no_match_across_sessions(make):
    h = make(config(purchase(within="1h"), gap="5m"))
    h.send(ev(0, "item_added_to_cart"))
    h.send(ev(600, "payment_processed"))
    h.finish()
    assert h.emitted("purchases") == []
    assert len(h.emitted("sessions")) == 2


def test_rule_state_travels_in_the_changelog(tmp_path):
    """A cart committed by one instance matches a payment processed by another restored from the changelog."""
    pipeline_config = config_from_toml(config(PURCHASE)).pipelines[0]
    first = Harness(config_from_toml(config(PURCHASE)), tmp_path / "a")
    first.send(ev(0, "item_added_to_cart", "c"))
    first.processor.close_due()
    pending = first.store.prepare()
    first.store.apply(pending, checkpoint=None)
    first.close()

    pipeline = Pipeline(pipeline_config)
    store = WindowStore(tmp_path / "b", pipeline.window)
    store.restore([FakeMessage("changelog", 0, n, key=k, value=v) for n, (k, v) in enumerate(pending.changelog)], checkpoint=len(pending.changelog))
    out: list = []
    processor = WindowProcessor(pipeline, store, out)
    event = ev(60, "payment_processed", "p")
    processor.process(b"user_123", (T0 + 60) * 1000, event, orjson.dumps(event))
    (record,) = out
    assert record.topic == "purchases"
    assert orjson.loads(record.value)["value"]["first"]["event_id"] == "c"
    store.close()


def test_rolled_back_match_is_produced_again_after_the_retry(make):
    """An aborted transaction drops the derived record and the rule state together."""
    h = make(config(PURCHASE))
    h.send(ev(0, "item_added_to_cart", "c"))
    h.commit()
    h.send(ev(10, "payment_processed", "p"))
    assert len(h.emitted("purchases")) == 1
    h.store.rollback()
    h.out.clear()  # the runtime aborts the transaction that held the record
    h.send(ev(10, "payment_processed", "p"))
    h.finish()
    assert len(h.emitted("purchases")) == 1


# -- absence until close ---------------------------------------------------------------


def test_abandoned_cart_yields_exactly_one_event_with_the_session_summary(make):
    h = make(config(ABANDONED, aggregates='has_checkout = { type = "any", field = "type", equals = "payment_processed" }'))
    h.send(ev(0, "page_viewed"))
    h.send(ev(10, "item_added_to_cart", "c1"))
    h.send(ev(20, "item_added_to_cart", "c2"))
    h.send(ev(30, "page_viewed"))
    h.commit()
    assert h.emitted("coupons") == []  # only when the session closes
    h.finish()
    (record,) = h.emitted("coupons")
    assert record["event"] == "cart_abandoned"
    assert record["timestamp"] == "2023-03-15 13:20:30"  # the session's end
    value = record["value"]
    assert value["first"] == {"event_id": "c2"}
    assert value["first_time_ms"] == (T0 + 20) * 1000
    assert value["session"]["event_count"] == 4
    assert value["session"]["has_checkout"] is False


def test_completed_cart_yields_no_abandonment(make):
    h = make(config(ABANDONED))
    for event in SEED_000:
        h.send(event)
    h.finish()
    assert h.emitted("coupons") == []
    assert len(h.emitted("sessions")) == 1


def test_cart_after_the_checkout_is_abandoned_again(make):
    h = make(config(ABANDONED))
    h.send(ev(0, "item_added_to_cart", "c1"))
    h.send(ev(10, "payment_processed"))
    h.send(ev(20, "item_added_to_cart", "c2"))
    h.finish()
    assert [v["first"]["event_id"] for v in values(h, "coupons")] == ["c2"]


def test_abandonment_closes_with_the_session_on_the_idle_clock(make):
    h = make(config(ABANDONED, gap="10m", grace="1m"))
    h.send(ev(0, "item_added_to_cart"))
    h.commit()
    h.processor.advance((T0 + 11 * 60) * 1000)  # end + gap + grace: not yet
    h.commit()
    assert h.emitted("coupons") == []
    h.processor.advance((T0 + 11 * 60) * 1000 + 1)
    h.commit()
    assert len(h.emitted("coupons")) == 1


def test_seed_004_allofr_only_the_session_without_checkout_gets_a_coupon(make):
    def at(hhmm):
        hours, minutes = map(int, hhmm.split(":"))
        return int(datetime(2017, 7, 5, hours, minutes, tzinfo=UTC).timestamp())

    cart, checkout = {"field": "type", "equals": "put-item-in-cart"}, {"field": "type", "equals": "checkout"}
    rules = {"coupon": rule("absence", cart, checkout, "coupons")}
    h = make(config(rules, gap="10m", grace="15m", aggregates='has_checkout = { type = "any", field = "type", equals = "checkout" }'))
    story = [("14:30", "put-item-in-cart"), ("14:34", "checkout"), ("15:03", "put-item-in-cart"), ("15:07", "remove-item-from-cart"), ("15:16", "preview-item")]
    for hhmm, kind in story:
        h.send({"user_id": "AllOfR", "timestamp": at(hhmm), "type": kind})
    h.finish()
    (coupon,) = values(h, "coupons")
    assert coupon["first_time_ms"] == at("15:03") * 1000
    assert coupon["session"]["session_start_ms"] == at("15:03") * 1000
    assert [s["value"]["has_checkout"] for s in h.emitted("sessions")] == [True, False]


# -- absence within T ------------------------------------------------------------------------


def test_absence_within_t_is_derived_once_stream_time_passes_cart_plus_t_plus_grace(make):
    h = make(config(SLOW, gap="30m", grace="1m"))
    h.send(ev(0, "item_added_to_cart", "c"))
    h.send(ev(360, "page_viewed", user="someone_else"))  # stream time = cart + 5m + 1m
    h.commit()
    assert h.emitted("nudges") == []
    h.send(ev(361, "page_viewed", user="someone_else"))
    h.commit()
    (record,) = h.emitted("nudges")
    assert record["value"] == {"first": {"event_id": "c"}, "first_time_ms": T0 * 1000, "deadline_ms": (T0 + 300) * 1000}
    assert record["timestamp"] == "2023-03-15 13:25:00"
    assert h.emitted("sessions") == []  # the session is still open
    h.finish()
    assert len(h.emitted("nudges")) == 1


def test_absence_within_t_answered_in_time_or_out_of_order(make):
    h = make(config(SLOW, grace="2m"))
    h.send(ev(0, "item_added_to_cart", "answered"))
    h.send(ev(300, "payment_processed"))
    h.send(ev(1000, "payment_processed"))
    h.send(ev(900, "item_added_to_cart", "answered_late"))  # arrives after its payment, within grace
    h.send(ev(2000, "item_added_to_cart", "unanswered"))
    h.send(ev(2301, "payment_processed"))  # 1 ms too late for it
    h.finish()
    assert [v["first"]["event_id"] for v in values(h, "nudges")] == ["unanswered"]


def test_absence_within_t_longer_than_the_session_is_decided_at_close(make):
    h = make(config(slow(within="1h"), gap="5m", grace="0s"))
    h.send(ev(0, "item_added_to_cart", "c"))
    h.send(ev(601, "payment_processed", user="someone_else"))  # the session closes at 5m + 0s
    h.commit()
    assert [v["first"]["event_id"] for v in values(h, "nudges")] == ["c"]
    h.send(ev(700, "payment_processed"))  # a new session: answers nothing
    h.finish()
    assert len(h.emitted("nudges")) == 1


def test_pipeline_without_rules_runs_the_plain_session_class(make):
    from service.core.windows.session import SessionWindows

    h = make(config())
    assert type(h.pipeline.window) is SessionWindows
    h2 = make(config(PURCHASE))
    assert type(h2.pipeline.window) is not SessionWindows


def test_adding_changing_and_removing_rules_keeps_the_open_sessions(tmp_path):
    """State written under one config loads under another: added rules start empty, removed ones are dropped."""
    path = tmp_path / "store"

    def run(text, events, finish=False):
        h = Harness(config_from_toml(text), path)
        for event in events:
            h.send(event)
        h.finish() if finish else h.commit()
        h.close()
        return h

    run(config(), [ev(0, "item_added_to_cart", "before_rules")])
    run(config(PURCHASE | SLOW), [ev(10, "item_added_to_cart", "c")])
    changed = PURCHASE | slow(within=None)  # slow_checkout becomes an until-close absence
    h = run(config(changed), [ev(20, "payment_processed", "p")])
    assert sorted(v["first"]["event_id"] for v in values(h, "purchases")) == ["c"]
    h = run(config(), [ev(30, "page_viewed")], finish=True)
    (session,) = h.emitted("sessions")
    assert session["value"]["event_count"] == 4
