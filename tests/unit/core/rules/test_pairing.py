"""Seed 003: pairing an analytics and a metrics event per call, or emitting the lone one."""

from __future__ import annotations

import orjson

from tests.helpers import SEED_003_T0 as T0
from tests.helpers import Harness, analytics, calls_config, metrics

ANALYTICS, METRICS = 0, 1


def records(h: Harness) -> list[tuple[str, dict, dict]]:
    return [(r.topic, orjson.loads(r.value), dict(r.headers)) for r in h.out]


def test_both_events_give_one_combined_record_with_the_earlier_time(make):
    h = make(calls_config())
    h.send(analytics(10), ANALYTICS)
    h.send(metrics(40), METRICS)
    h.finish()
    ((topic, value, headers),) = records(h)
    assert topic == "outputTopic"
    assert value == {"user1": "id1", "user2": "id2", "analytics": "data1", "metrics": "data2", "ts": T0 + 10}
    assert headers["sessionizer.sources"] == b"analyticsTopic,metricsTopic"
    assert h.out[0].key == b'["id1","id2"]'


def test_pair_arriving_out_of_order_is_combined_once(make):
    h = make(calls_config())
    h.send(metrics(50), METRICS)  # the later event first
    h.send(analytics(20), ANALYTICS)
    h.commit()
    assert h.out == []
    h.finish()
    ((topic, value, _),) = records(h)
    assert topic == "outputTopic"
    assert value["ts"] == T0 + 20
    assert (value["analytics"], value["metrics"]) == ("data1", "data2")


def test_lone_event_is_emitted_once_t_plus_grace_has_passed(make):
    h = make(calls_config())
    h.send(analytics(0), ANALYTICS)
    h.processor.advance((T0 + 60 + 180) * 1000)  # T + grace after it: not yet
    h.commit()
    assert h.out == []
    h.processor.advance((T0 + 60 + 180) * 1000 + 1)
    h.commit()
    ((topic, value, headers),) = records(h)
    assert topic == "outputTopic"
    assert value == {"user1": "id1", "user2": "id2", "analytics": "data1", "ts": T0}
    assert headers["sessionizer.sources"] == b"analyticsTopic"


def test_a_call_never_yields_both_a_lone_and_a_combined_record(make):
    h = make(calls_config(grace="30s"))
    h.send(analytics(0), ANALYTICS)
    h.send(metrics(55), METRICS)  # partner within T, arriving while the lone one waits
    h.processor.advance((T0 + 55 + 60 + 30) * 1000 + 1)
    h.commit()
    h.finish()
    assert [(t, sorted(v)) for t, v, _ in records(h)] == [("outputTopic", ["analytics", "metrics", "ts", "user1", "user2"])]


def test_partner_more_than_t_apart_makes_two_lone_records(make):
    h = make(calls_config(lone_topic="loneTopic"))
    h.send(analytics(0), ANALYTICS)
    h.send(metrics(61), METRICS)
    h.finish()
    assert sorted((t, v["ts"]) for t, v, _ in records(h)) == [("loneTopic", T0), ("loneTopic", T0 + 61)]


def test_calls_of_different_user_pairs_and_consecutive_calls_stay_apart(make):
    h = make(calls_config())
    h.send(analytics(0), ANALYTICS)
    h.send(metrics(5, users=("id2", "id1")), METRICS)  # the reverse direction is another pair
    h.send(metrics(3), METRICS)
    h.send(analytics(200), ANALYTICS)  # the next call, more than 2T later
    h.send(metrics(230), METRICS)
    h.finish()
    got = sorted((r.key, v.get("ts"), "analytics" in v, "metrics" in v) for r, (_, v, _) in zip(h.out, records(h)))
    assert got == [
        (b'["id1","id2"]', T0, True, True),
        (b'["id1","id2"]', T0 + 200, True, True),
        (b'["id2","id1"]', T0 + 5, False, True),
    ]


def test_duplicate_event_of_one_source_keeps_the_earliest(make):
    h = make(calls_config())
    h.send(analytics(10, "second"), ANALYTICS)
    h.send(analytics(5, "first"), ANALYTICS)
    h.send(metrics(7), METRICS)
    h.finish()
    ((_, value, _),) = records(h)
    assert value["analytics"] == "first" and value["ts"] == T0 + 5


def test_time_field_name_is_configurable(make):
    h = make(calls_config(time_field="call_time"))
    h.send(analytics(1), ANALYTICS)
    h.finish()
    ((_, value, _),) = records(h)
    assert value["call_time"] == T0 + 1 and "ts" not in value and "timestamp" not in value
