"""The demo producer's stories give the sessions the docs promise, through the real pipelines (offline)."""

from __future__ import annotations

import random
from collections import Counter
from itertools import islice

import orjson

from service.commands.process import process_lines
from tests.helpers import load_script, sample_config

demo = load_script("demo_events")


def sessions(config, events) -> list[dict]:
    out = []
    process_lines(config, [orjson.dumps(e) for e in events], lambda line: out.append(orjson.loads(line)))
    return [r["value"] for r in out if r["topic"] == "xp-session-events"]


def test_allofr_story_with_the_compose_grace_merges_her_last_two_sessions():
    end = 1_700_000_000_000
    events = [e for _, e in demo.allofr_events(end)]
    assert max(e["timestamp"] for e in events) == end
    assert events[-1]["type"] == "put-item-in-cart" and events[-1]["timestamp"] == end - 12 * 60_000  # 3:25
    config = sample_config({"SESSIONIZER__PIPELINES__SESSIONS__WINDOW__GRACE": "15m"})
    found = sorted((s["value"]["session_start_ms"], s["value"]["event_count"]) for s in sessions(config, events))
    assert found == [(end - 67 * 60_000, 2), (end - 34 * 60_000, 6)]  # 2:30-2:34, and 3:03-3:37 merged


def test_seed_000_moves_to_now_unless_asked_to_keep_its_times():
    kept = demo.seed000_events(True, 0)
    assert [e["timestamp"] for _, e in kept] == [1678886400, 1678886401, 1678886405, 1678886410, 1678886412]
    moved = demo.seed000_events(False, 1_700_000_000_000)
    assert [e["timestamp"] - 1_700_000_000_000 for _, e in moved] == [0, 1000, 5000, 10_000, 12_000]
    assert {topic for topic, _ in moved} == {demo.WEB, demo.MOBILE, demo.BACKEND}
    (session,) = sessions(sample_config(), [e for _, e in moved])
    assert session["value"]["event_count"] == 5
    assert session["value"]["event_types"] == {"page_viewed": 3, "item_added_to_cart": 1, "payment_processed": 1}


def test_random_visitors_make_one_session_per_visit():
    rng = random.Random(3)
    generated = list(islice(demo.random_events(rng, 10, 13 * 60_000, 40 * 60_000, clock=lambda: 1_700_000_000_000), 2000))
    events = []
    for due, topic, event in generated:
        assert topic in (demo.WEB, demo.MOBILE, demo.BACKEND)
        events.append({**event, "timestamp": due})
    assert [e["timestamp"] for e in events] == sorted(e["timestamp"] for e in events)
    # a visit starts when a user comes back after more than gap + grace (10m + 2m)
    visits = Counter()
    last: dict[str, int] = {}
    for event in events:
        user = event["user_id"]
        if user not in last or event["timestamp"] - last[user] > 12 * 60_000:
            visits[user] += 1
        else:
            assert event["timestamp"] - last[user] <= 20_000
        last[user] = event["timestamp"]
    emitted = Counter(s["user_id"] for s in sessions(sample_config(), events))
    assert emitted == visits


def test_avro_demo_events_decode_to_what_the_json_ones_say(monkeypatch):
    """``--format avro``: every story's events fit DEMO_EVENT_SCHEMA and decode as the service reads them."""
    fastavro = __import__("pytest").importorskip("fastavro", reason="the registry extra is not installed")
    from service.runtime.formats import avro
    from service.runtime.formats.registry import Fetched, Registry

    class Client:
        def register_schema(self, subject, schema):
            return 7

    monkeypatch.setattr("confluent_kafka.schema_registry.SchemaRegistryClient", lambda conf: Client())
    frame = demo.AvroFramer("http://registry")
    registry = Registry(None)
    registry.seed({7: Fetched(7, "AVRO", orjson.dumps(demo.DEMO_EVENT_SCHEMA).decode())})
    decode = avro.decoder(registry)
    rng = random.Random(4)
    stories = demo.allofr_events(1_700_000_000_000) + demo.seed000_events(False, 1_700_000_000_000)
    stories += [(topic, event) for _, topic, event in islice(demo.random_events(rng, 5, 60_000, 120_000, clock=lambda: 0), 200)]
    for topic, event in stories:
        event.setdefault("timestamp", 0)
        decoded = decode(frame(topic, event))
        assert {k: v for k, v in decoded.items() if v is not None} == {
            k: ({**{"page": None, "item_id": None, "order_id": None}, **v} if k == "details" else v) for k, v in event.items()
        }
    assert fastavro  # the Avro writer the demo uses
    assert demo.parse_args(["--format", "avro"]).format == "avro"
