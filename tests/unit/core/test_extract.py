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


# -- the epoch seconds / milliseconds boundary (1e11) -----------------------------------------------

LAST_SECONDS = 99_999_999_999  # the largest number read as seconds: the year 5138
FIRST_MS = 100_000_000_000  # the smallest read as milliseconds: 1973-03-03


# A top-level field takes the per-event fast path for ints; a nested one goes the general way.
@pytest.mark.parametrize("path", ["ts", "t.ts"])
@pytest.mark.parametrize(
    "value,expected",
    [
        (LAST_SECONDS, LAST_SECONDS * 1000),
        (FIRST_MS, FIRST_MS),
        (float(LAST_SECONDS), LAST_SECONDS * 1000),
        (LAST_SECONDS + 0.5, LAST_SECONDS * 1000 + 500),
        (float(FIRST_MS), FIRST_MS),
        ("99999999999", LAST_SECONDS * 1000),
        ("99999999999.25", LAST_SECONDS * 1000 + 250),
        ("100000000000", FIRST_MS),
        (" 100000000000 ", FIRST_MS),
        ("1e11", FIRST_MS),
        # Negative times (before 1970) are judged by their size (the code compares abs(value) with 1e11).
        (-1, -1000),
        (-1.5, -1500),
        ("-1", -1000),
        (-LAST_SECONDS, -LAST_SECONDS * 1000),
        (-FIRST_MS, -FIRST_MS),
        ("-100000000000", -FIRST_MS),
        ("1969-12-31T23:59:59Z", -1000),
        ("1969-12-31T23:59:59.5", -500),
    ],
)
def test_auto_reads_numbers_below_1e11_as_seconds_and_from_1e11_on_as_milliseconds(path, value, expected):
    event = {"ts": value} if path == "ts" else {"t": {"ts": value}}
    result = TimeExtractor(path)(event, None)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize("path", ["ts", "t.ts"])
@pytest.mark.parametrize(
    "fmt,value,expected",
    [
        ("epoch_s", FIRST_MS, FIRST_MS * 1000),
        ("epoch_s", float(FIRST_MS), FIRST_MS * 1000),
        ("epoch_s", "100000000000", FIRST_MS * 1000),
        ("epoch_s", -FIRST_MS, -FIRST_MS * 1000),
        ("epoch_s", LAST_SECONDS, LAST_SECONDS * 1000),
        ("epoch_ms", LAST_SECONDS, LAST_SECONDS),
        ("epoch_ms", float(LAST_SECONDS), LAST_SECONDS),
        ("epoch_ms", "99999999999", LAST_SECONDS),
        ("epoch_ms", -1, -1),
        ("epoch_ms", FIRST_MS, FIRST_MS),
    ],
)
def test_epoch_s_and_epoch_ms_override_the_boundary(path, fmt, value, expected):
    event = {"ts": value} if path == "ts" else {"t": {"ts": value}}
    result = TimeExtractor(path, fmt)(event, None)
    assert result == expected
    assert type(result) is int
