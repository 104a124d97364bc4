"""The source stage: one decode per record, one key and time (or dead letter) per reading pipeline."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from service.config import ConfigError, parse_config
from service.core.pipeline import OutputRecord, Pipeline, compile_pipelines
from service.core.source import Route, SourceStage
from tests.fakes import FakeMessage


def pipeline(sources: list[str], key: str, dead_letter_topic: str, window: dict[str, str]) -> dict[str, Any]:
    """A pipeline table with epoch-ms times in ``ts``; what the stage cares about is a parameter."""
    return {
        "sources": sources,
        "key": key,
        "time": "ts",
        "time_format": "epoch_ms",
        "output": "out",
        "dead_letter_topic": dead_letter_topic,
        "window": window,
    }


SESSION = {"type": "session", "gap": "10m"}
#: visits reads both topics; accounts and mobile_only read mobile, with their own and a shared dead-letter topic.
PIPELINES = {
    "visits": pipeline(["web", "mobile"], "user_id", "dlq-shared", SESSION),
    "accounts": pipeline(["mobile"], "account", "dlq-accounts", {"type": "tumbling", "size": "1m"}),
    "mobile_only": pipeline(["mobile"], "user_id", "dlq-shared", SESSION),
}


def compile_tables(tables: dict[str, Any]) -> tuple[Pipeline, ...]:
    problems: list[str] = []
    config = parse_config({"pipelines": tables}, problems)
    if problems:
        raise ConfigError(problems)
    return compile_pipelines(config.pipelines)


class Sink:
    """Collects what the stage forwards and rejects."""

    def __init__(self) -> None:
        self.forwarded: list[tuple[str, int, bytes, int, dict[str, Any], bytes]] = []
        self.rejected: list[OutputRecord] = []

    def forward(self, route: Route, key: bytes, time_ms: int, event: dict[str, Any], raw: bytes) -> None:
        self.forwarded.append((route.pipeline.name, route.index, key, time_ms, event, raw))

    def reject(self, record: OutputRecord) -> None:
        self.rejected.append(record)

    def run(self, stage: SourceStage, topic: str, raw: bytes | None, record_ms: int | None = None, **origin: Any) -> None:
        # The origin stands for a ``confluent_kafka.Message``: the stage asks it through methods.
        at = FakeMessage(topic, origin.get("partition", 0), origin.get("offset", 0), key=origin.get("key"))
        stage.process(stage.routes(topic), raw, record_ms, at, self.forward, self.reject)


@pytest.fixture
def stage() -> SourceStage:
    return SourceStage(compile_tables(PIPELINES))


def headers(record: OutputRecord) -> dict[str, bytes]:
    return dict(record.headers)


def test_routes_are_the_reading_pipelines_with_the_topics_index(stage):
    assert [(r.pipeline.name, r.index) for r in stage.routes("web")] == [("visits", 0)]
    assert [(r.pipeline.name, r.index) for r in stage.routes("mobile")] == [
        ("visits", 1),
        ("accounts", 0),
        ("mobile_only", 0),
    ]
    assert stage.routes("mobile") is stage.routes("mobile")
    assert stage.routes("nobody") == []
    assert stage.topics == ["web", "mobile"]


def test_a_topic_listed_twice_routes_the_record_once():
    visits = pipeline(["web", "mobile", "web"], "user_id", "dlq-shared", SESSION)
    stage = SourceStage(compile_tables({"visits": visits}))
    assert [(r.pipeline.name, r.index) for r in stage.routes("web")] == [("visits", 0)]


def test_one_record_goes_to_every_pipeline_reading_its_topic(stage):
    sink = Sink()
    raw = orjson.dumps({"user_id": "u1", "account": "a9", "ts": 1_000})
    sink.run(stage, "mobile", raw)
    event = orjson.loads(raw)
    assert sink.forwarded == [
        ("visits", 1, b"u1", 1_000, event, raw),
        ("accounts", 0, b"a9", 1_000, event, raw),
        ("mobile_only", 0, b"u1", 1_000, event, raw),
    ]
    assert sink.rejected == []
    # Decoded once: every pipeline is handed the same event object.
    assert len({id(f[4]) for f in sink.forwarded}) == 1


def test_the_record_timestamp_stands_in_for_a_missing_time_field(stage):
    sink = Sink()
    sink.run(stage, "web", orjson.dumps({"user_id": "u1"}), record_ms=7_000)
    assert [(name, time_ms) for name, _, _, time_ms, _, _ in sink.forwarded] == [("visits", 7_000)]


def test_a_record_one_pipeline_cannot_use_is_dead_lettered_for_that_pipeline_only(stage):
    sink = Sink()
    raw = orjson.dumps({"user_id": "u1", "ts": 1_000})  # no "account"
    sink.run(stage, "mobile", raw, partition=2, offset=17, key=b"k")
    assert [f[0] for f in sink.forwarded] == ["visits", "mobile_only"]
    (dead,) = sink.rejected
    assert dead.topic == "dlq-accounts"
    assert (dead.key, dead.value) == (b"k", raw)
    assert headers(dead)["sessionizer.pipeline"] == b"accounts"
    assert b"account" in headers(dead)["sessionizer.error"]


def test_undecodable_bytes_give_one_dead_letter_per_distinct_dead_letter_topic(stage):
    sink = Sink()
    sink.run(stage, "mobile", b"{not json")
    assert sink.forwarded == []
    assert [r.topic for r in sink.rejected] == ["dlq-shared", "dlq-accounts"]
    for record in sink.rejected:
        assert record.value == b"{not json"
        assert headers(record)["sessionizer.error"].startswith(b"invalid JSON")
        assert "sessionizer.pipeline" not in headers(record)


@pytest.mark.parametrize(("raw", "error"), [(None, b"empty value (tombstone)"), (b"[1]", b"expected a JSON object, got list")])
def test_a_tombstone_or_a_non_object_is_no_pipelines(stage, raw, error):
    sink = Sink()
    sink.run(stage, "web", raw)
    assert [(r.topic, r.value, headers(r)["sessionizer.error"]) for r in sink.rejected] == [("dlq-shared", raw, error)]


def test_dead_letters_say_where_the_record_came_from(stage):
    sink = Sink()
    sink.run(stage, "web", b"nope", partition=3, offset=42, key=b"user-key")
    (dead,) = sink.rejected
    assert dead.key == b"user-key"
    where = headers(dead)
    assert where.pop("sessionizer.error").startswith(b"invalid JSON")
    assert where == {
        "sessionizer.reason_code": b"invalid_json",
        "sessionizer.topic": b"web",
        "sessionizer.partition": b"3",
        "sessionizer.offset": b"42",
    }


@pytest.mark.parametrize(
    ("topic", "raw", "key", "code"),
    [
        ("web", None, None, b"invalid_json"),  # a tombstone: no JSON at all
        ("web", b"{broken", None, b"invalid_json"),
        ("web", b'"text"', None, b"not_an_object"),
        ("web", b'{"ts": 1}', None, b"no_key"),
        ("web", b'{"user_id": null, "ts": 1}', None, b"no_key"),
        ("web", b'{"user_id": "", "ts": 1}', None, b"bad_key"),
        ("web", b'{"user_id": [1], "ts": 1}', None, b"bad_key"),
        ("web", b'{"user_id": "u"}', None, b"bad_timestamp"),  # no time field, no record timestamp
        ("web", b'{"user_id": "u", "ts": "soon"}', None, b"bad_timestamp"),
        ("web", b'{"user_id": "u", "ts": true}', None, b"bad_timestamp"),
    ],
)
def test_each_dead_letter_carries_its_reason_code(stage, topic, raw, key, code):
    sink = Sink()
    sink.run(stage, topic, raw, key=key)
    (dead,) = sink.rejected
    assert headers(dead)["sessionizer.reason_code"] == code
    assert headers(dead)["sessionizer.error"]  # the text still says the details


def test_a_non_number_for_a_numeric_aggregate_is_wrong_type():
    visits = pipeline(["web"], "user_id", "dlq", SESSION)
    visits["aggregates"] = {"spent": {"type": "sum", "field": "amount"}}
    stage = SourceStage(compile_tables({"visits": visits}))
    sink = Sink()
    sink.run(stage, "web", orjson.dumps({"user_id": "u", "ts": 1, "amount": "ten"}))
    (dead,) = sink.rejected
    assert headers(dead)["sessionizer.reason_code"] == b"wrong_type"


def test_reject_all_takes_the_callers_code_or_other(stage):
    sink = Sink()
    stage.reject_all(stage.routes("web"), "no topic", b"line", FakeMessage("-", 0, 4), sink.reject)
    stage.reject_all(stage.routes("web"), "bad", b"line", FakeMessage("-", 0, 5), sink.reject, "not_an_object")
    assert [headers(r)["sessionizer.reason_code"] for r in sink.rejected] == [b"other", b"not_an_object"]


def test_an_event_already_decoded_is_forwarded_with_the_given_bytes(stage):
    sink = Sink()
    event = {"user_id": "u1", "ts": 5}
    routes = stage.routes("web")
    stage.process_event(routes, event, b"re-encoded", None, FakeMessage("web", 0, 9), sink.forward, sink.reject)
    assert sink.forwarded == [("visits", 0, b"u1", 5, event, b"re-encoded")]


def test_reject_all_dead_letters_a_record_no_route_can_read(stage):
    sink = Sink()
    stage.reject_all(stage.routes("mobile"), "no topic", b"line", FakeMessage("-", 0, 4), sink.reject)
    assert [(r.topic, headers(r)["sessionizer.offset"]) for r in sink.rejected] == [("dlq-shared", b"4"), ("dlq-accounts", b"4")]
