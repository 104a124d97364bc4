"""The output record exactly as docs/semantics.md "Output" shows it: the Kafka key, and the whole JSON value, keys in order."""

from __future__ import annotations

import time
import tomllib
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from service.core.pipeline import OutputRecord, format_utc
from tests.helpers import Harness, at, config_toml, pipeline, session_window

CHECKOUTS = 'checkouts = { type = "count_by", field = "type" }'
TOTAL = 'total = { type = "sum", field = "amount" }'


def config(key: str | list[str] = "user_id", window: dict[str, Any] | None = None, aggregates: str = CHECKOUTS, **output: str) -> str:
    """Pipeline ``s`` over ``events``, epoch-ms or auto times in ``ts``; ``output`` fills the output table."""
    table = pipeline(["events"], window or session_window("10m"), key=key, aggregates=aggregates)
    if output:
        table["output"] = {"topic": "out", **output}
    return config_toml({"s": table})


def outputs(h: Harness) -> list[OutputRecord]:
    return [r for r in h.out if r.topic == "out"]


def assert_json(raw: bytes | None, expected: dict[str, Any]) -> None:
    """The whole value, and its keys in the documented order (at the top and in ``value``)."""
    assert raw is not None
    value = orjson.loads(raw)
    assert value == expected
    assert list(value) == list(expected)
    if isinstance(expected.get("value"), dict):
        assert list(value["value"]) == list(expected["value"])


# AllOfR's session of seed 001, as docs/semantics.md shows it.
ALLOFR = [("15:03", "x"), ("15:10", "x"), ("15:16", "put-item-in-cart"), ("15:25", "x"), ("15:30", "checkout"), ("15:37", "x")]


def play_allofr(h: Harness) -> None:
    for hhmm, kind in ALLOFR:
        h.send({"user_id": "AllOfR", "ts": at(hhmm), "type": kind})
    h.finish()


def test_the_default_envelope_is_seed_001s_shape(make):
    h = make(config())
    play_allofr(h)
    [record] = outputs(h)
    assert record.key == b"AllOfR"
    assert record.headers == ()
    assert_json(
        record.value,
        {
            "event": "session",
            "user_id": "AllOfR",
            "timestamp": "2017-07-05 15:03:00",
            "value": {
                "session_start_ms": 1499266980000,
                "session_end_ms": 1499269020000,
                "event_count": 6,
                "duration_ms": 2040000,
                "checkouts": {"x": 4, "checkout": 1, "put-item-in-cart": 1},
            },
            "user_attributes": {},
        },
    )


def test_the_timestamp_is_the_start_in_utc_to_the_second_or_the_end_with_output_timestamp_end(make):
    start, end = at("23:59") + 59_999, at("23:59") + 60_001  # 23:59:59.999 and 00:00:00.001 the next day
    for moment, text in [("start", "2017-07-05 23:59:59"), ("end", "2017-07-06 00:00:00")]:
        h = make(config(aggregates="", timestamp=moment))
        h.send({"user_id": "u1", "ts": start})
        h.send({"user_id": "u1", "ts": end})
        h.finish()
        [record] = outputs(h)
        assert_json(
            record.value,
            {
                "event": "session",
                "user_id": "u1",
                "timestamp": text,
                "value": {"session_start_ms": start, "session_end_ms": end, "event_count": 2, "duration_ms": 2},
                "user_attributes": {},
            },
        )


def test_the_flat_format_puts_the_values_at_the_top_level(make):
    h = make(config(format="flat", event="visit"))
    play_allofr(h)
    [record] = outputs(h)
    assert record.key == b"AllOfR"
    assert_json(
        record.value,
        {
            "event": "visit",
            "user_id": "AllOfR",
            "timestamp": "2017-07-05 15:03:00",
            "session_start_ms": 1499266980000,
            "session_end_ms": 1499269020000,
            "event_count": 6,
            "duration_ms": 2040000,
            "checkouts": {"x": 4, "checkout": 1, "put-item-in-cart": 1},
        },
    )


def test_fixed_windows_give_their_bounds_and_count_as_a_session_summary(make):
    hour = 3_600_000
    window = {"type": "tumbling", "size": "1h"}
    for moment, shown in [("start", "2017-07-05 15:00:00"), ("end", "2017-07-05 16:00:00")]:
        h = make(config(window=window, aggregates=TOTAL, **({"timestamp": moment} if moment == "end" else {})))
        for hhmm, amount in [("15:03", 2), ("15:59", 3)]:
            h.send({"user_id": "u1", "ts": at(hhmm), "amount": amount})
        h.finish()
        [record] = outputs(h)
        assert record.key == b"u1"
        assert_json(
            record.value,
            {
                "event": "session_summary",
                "user_id": "u1",
                "timestamp": shown,
                "value": {"window_start_ms": at("15:00"), "window_end_ms": at("15:00") + hour, "event_count": 2, "total": 5},
                "user_attributes": {},
            },
        )


def test_a_composite_key_is_a_json_array_of_texts_and_each_field_is_in_the_envelope(make):
    h = make(config(key=["user_id", "shop"], aggregates=""))
    h.send({"user_id": 'say "hi"', "shop": 7, "ts": at("15:03")})
    h.finish()
    [record] = outputs(h)
    assert record.key == b'["say \\"hi\\"","7"]'
    assert orjson.loads(record.key) == ['say "hi"', "7"]
    assert_json(
        record.value,
        {
            "event": "session",
            "user_id": 'say "hi"',
            "shop": "7",
            "timestamp": "2017-07-05 15:03:00",
            "value": {"session_start_ms": at("15:03"), "session_end_ms": at("15:03"), "event_count": 1, "duration_ms": 0},
            "user_attributes": {},
        },
    )


def test_a_composite_key_of_nested_fields_names_each_by_its_path(make):
    h = make(config(key=["user.id", "shop"], aggregates="", format="flat"))
    h.send({"user": {"id": "u1"}, "shop": "s1", "ts": at("15:03")})
    h.finish()
    [record] = outputs(h)
    assert record.key == b'["u1","s1"]'
    assert_json(
        record.value,
        {
            "event": "session",
            "user.id": "u1",
            "shop": "s1",
            "timestamp": "2017-07-05 15:03:00",
            "session_start_ms": at("15:03"),
            "session_end_ms": at("15:03"),
            "event_count": 1,
            "duration_ms": 0,
        },
    )


def test_the_record_key_is_named_key_in_the_envelope(make):
    h = make(config(key="@key", aggregates=""))
    for hhmm in ("15:03", "15:05"):
        event = {"ts": at(hhmm), "user_id": "not the key"}
        key, time_ms = h.pipeline.extract(event, None, b"rk-1")
        h.processor.process(key, time_ms, event, orjson.dumps(event))
    h.finish()
    [record] = outputs(h)
    assert record.key == b"rk-1"
    assert_json(
        record.value,
        {
            "event": "session",
            "key": "rk-1",
            "timestamp": "2017-07-05 15:03:00",
            "value": {"session_start_ms": at("15:03"), "session_end_ms": at("15:05"), "event_count": 2, "duration_ms": 120_000},
            "user_attributes": {},
        },
    )


@given(st.integers(min_value=-(10**14), max_value=253_402_300_799_999))  # to the last millisecond of 9999
def test_format_utc_is_strftime_of_gmtime_to_the_second(ms):
    assert format_utc(ms) == time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms // 1000))


KEY_PATHS = ["user_id", "event", "timestamp", "value", "user.id", "@key"]


@given(
    st.sampled_from(KEY_PATHS),
    st.binary(max_size=12) | st.text(max_size=8).map(str.encode),
    st.sampled_from(["session", "page_views"]),
    st.integers(min_value=0, max_value=2**45),
    st.dictionaries(st.sampled_from(["event_count", "value", "total", "timestamp"]), st.integers(-(2**63), 2**63 - 1), max_size=3),
)
def test_the_envelope_built_in_one_display_is_the_one_built_step_by_step(path, key, event, moment_ms, values):
    """A one-field key's envelope is one dict display; the same bytes as the general steps (composite keys, flat),
    even for a key field named like an envelope field (one place, the later value) and a record key of any bytes."""
    from service.config import parse_config
    from service.core.pipeline import Pipeline

    if path != "@key":
        key = key.decode(errors="replace").encode()  # a field's key is text; only a record key is any bytes
    parsed = parse_config(tomllib.loads(config(key=path, aggregates="")), [])
    envelope = Pipeline(parsed.pipelines[0]).envelope
    assert envelope._key_field is not None
    fast = envelope.render_event(key, event, moment_ms, dict(values))
    envelope._key_field = None  # the step-by-step branch, as for a key of several fields
    assert fast == envelope.render_event(key, event, moment_ms, dict(values))
