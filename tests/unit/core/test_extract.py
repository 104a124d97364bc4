from __future__ import annotations

import pytest

from service.core.extract import BadRecord, KeyExtractor, TimeExtractor, parse_event


@pytest.mark.parametrize(
    "value,expected",
    [
        (1678886400, 1678886400000),
        (1678886400.25, 1678886400250),
        (1678886400123, 1678886400123),
        ("1678886400", 1678886400000),
        ("2023-03-15T13:20:00Z", 1678886400000),
        ("2023-03-15T13:20:00", 1678886400000),
        ("2023-03-15 14:20:00.5+01:00", 1678886400500),
    ],
)
def test_time_formats(value, expected):
    assert TimeExtractor("ts")({"ts": value}, None) == expected


def test_missing_time_field_falls_back_to_record_timestamp():
    assert TimeExtractor("ts")({}, 42) == 42


@pytest.mark.parametrize("value", ["yesterday", True, [1], {"a": 1}])
def test_bad_timestamps(value):
    with pytest.raises(BadRecord, match="bad timestamp"):
        TimeExtractor("ts")({"ts": value}, 0)


def test_explicit_formats():
    assert TimeExtractor("ts", "epoch_ms")({"ts": 5}, None) == 5
    assert TimeExtractor("ts", "epoch_s")({"ts": 1678886400123}, None) == 1678886400123000
    with pytest.raises(BadRecord):
        TimeExtractor("ts", "iso8601")({"ts": 5}, None)


def test_dotted_and_composite_keys():
    assert KeyExtractor(("user.id",))({"user": {"id": 7}}) == b"7"
    key = KeyExtractor(("user1", "user2"))
    raw = key({"user1": "a|b", "user2": "c"})
    assert key.fields(raw) == {"user1": "a|b", "user2": "c"}


@pytest.mark.parametrize("event,message", [({}, "no key"), ({"user_id": ""}, "empty"), ({"user_id": [1]}, "type list")])
def test_bad_keys(event, message):
    with pytest.raises(BadRecord, match=message):
        KeyExtractor(("user_id",))(event)


@pytest.mark.parametrize("raw,message", [(b"{", "invalid JSON"), (b"[1]", "JSON object"), (None, "tombstone")])
def test_bad_values(raw, message):
    with pytest.raises(BadRecord, match=message):
        parse_event(raw)
