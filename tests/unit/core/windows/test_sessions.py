"""Session windows: seed 004's AllOfR story, merges, caps, lateness and idle closing."""

from __future__ import annotations

import pytest

from tests.helpers import at, session_config


def bounds(records: list[dict]) -> list[tuple[int, int, int]]:
    return [(r["value"]["session_start_ms"], r["value"]["session_end_ms"], r["value"]["event_count"]) for r in records]


@pytest.fixture
def harness(make):
    """A harness over pipeline ``s`` (see ``session_config``), closed after the test."""
    return lambda **kwargs: make(session_config(**kwargs))


ALLOFR = ["14:30", "14:34", "15:03", "15:07", "15:16", "15:29", "15:37"]


def test_allofr_gives_three_sessions(harness):
    h = harness(gap="10m", grace="15m")
    for hhmm in ALLOFR:
        h.send({"user_id": "AllOfR", "ts": at(hhmm)})
    h.finish()
    assert bounds(h.emitted()) == [
        (at("14:30"), at("14:34"), 2),
        (at("15:03"), at("15:16"), 3),
        (at("15:29"), at("15:37"), 2),
    ]


def test_allofr_late_event_merges_the_last_two_sessions(harness):
    h = harness(gap="10m", grace="15m", aggregates='checkouts = { type = "count_by", field = "type" }')
    for hhmm in ALLOFR:
        h.send({"user_id": "AllOfR", "ts": at(hhmm), "type": "checkout" if hhmm in ("14:34", "15:37") else "x"})
        h.commit()
    h.send({"user_id": "AllOfR", "ts": at("15:25"), "type": "put-item-in-cart"})
    h.finish()
    records = h.emitted()
    assert bounds(records) == [
        (at("14:30"), at("14:34"), 2),
        (at("15:03"), at("15:37"), 6),
    ]
    # The merged session's aggregate is the merge of both halves' aggregates.
    assert records[1]["value"]["checkouts"] == {"x": 4, "checkout": 1, "put-item-in-cart": 1}
    assert h.late() == []


def test_first_session_closes_once_stream_time_passes_end_plus_gap_plus_grace(harness):
    h = harness(gap="10m", grace="2m")
    h.send({"user_id": "u", "ts": at("14:30")})
    h.send({"user_id": "other", "ts": at("14:42")})  # stream time = end + gap + grace: not yet
    h.commit()
    assert h.emitted() == []
    h.send({"user_id": "other", "ts": at("14:43")})
    h.commit()
    assert bounds(h.emitted()) == [(at("14:30"), at("14:30"), 1)]


def test_gap_is_inclusive(harness):
    h = harness(gap="10m")
    h.send({"user_id": "u", "ts": at("14:30")})
    h.send({"user_id": "u", "ts": at("14:40")})
    h.send({"user_id": "u", "ts": at("14:50")})
    h.finish()
    assert bounds(h.emitted()) == [(at("14:30"), at("14:50"), 3)]


def test_gap_is_inclusive_before_a_session_too(harness):
    """An event exactly gap before the key's one open session joins it, and one a millisecond earlier starts another."""
    h = harness(gap="10m", grace="15m")
    h.send({"user_id": "u", "ts": at("14:40")})
    h.send({"user_id": "u", "ts": at("14:30")})
    h.send({"user_id": "v", "ts": at("14:40")})
    h.send({"user_id": "v", "ts": at("14:30") - 1})
    h.finish()
    assert sorted(bounds(h.emitted())) == [
        (at("14:30") - 1, at("14:30") - 1, 1),
        (at("14:30"), at("14:40"), 2),
        (at("14:40"), at("14:40"), 1),
    ]


def test_event_more_than_grace_behind_stream_time_is_late_and_never_reopens_a_session(harness):
    h = harness(gap="10m", grace="2m")
    h.send({"user_id": "u", "ts": at("14:30")})
    h.send({"user_id": "u", "ts": at("14:50")})
    h.commit()
    assert bounds(h.emitted()) == [(at("14:30"), at("14:30"), 1)]
    # 14:35 would touch the emitted 14:30 session: Kafka Streams can emit a
    # second "final" record here; we send it to the late topic.
    h.send({"user_id": "u", "ts": at("14:35")})
    h.finish()
    late = h.late()
    assert len(late) == 1 and late[0].topic == "sessionizer-late"
    assert dict(late[0].headers)["sessionizer.reason"].startswith(b"event time")
    assert dict(late[0].headers)["sessionizer.reason_code"] == b"behind_watermark"  # one source: its watermark is stream time
    assert bounds(h.emitted()) == [(at("14:30"), at("14:30"), 1), (at("14:50"), at("14:50"), 1)]


def test_with_two_open_sessions_an_event_joins_the_one_it_reaches_or_merges_both(harness):
    """A key holding two open sessions (its previous one not yet closed): an event exactly gap after
    the newer, or exactly gap before it, joins that one; one between them within gap of both merges them,
    and one beyond gap of both starts a third."""
    h = harness(gap="10m", grace="30m")
    for user in ("after", "before", "both", "apart"):
        h.send({"user_id": user, "ts": at("14:00")})
        h.send({"user_id": user, "ts": at("14:30")})
    h.send({"user_id": "after", "ts": at("14:40")})  # gap after the newer
    h.send({"user_id": "before", "ts": at("14:20")})  # gap before the newer, 20 min after the older
    h.send({"user_id": "both", "ts": at("14:10")})  # gap after the older, 20 min before the newer
    h.send({"user_id": "both", "ts": at("14:20")})  # now within gap of both: merges them
    h.send({"user_id": "apart", "ts": at("14:40") + 1})  # a millisecond beyond gap after the newer
    h.finish()
    assert sorted((r["user_id"], *b) for r, b in zip(h.emitted(), bounds(h.emitted()), strict=True)) == [
        ("after", at("14:00"), at("14:00"), 1),
        ("after", at("14:30"), at("14:40"), 2),
        ("apart", at("14:00"), at("14:00"), 1),
        ("apart", at("14:30"), at("14:30"), 1),
        ("apart", at("14:40") + 1, at("14:40") + 1, 1),
        ("before", at("14:00"), at("14:00"), 1),
        ("before", at("14:20"), at("14:30"), 2),
        ("both", at("14:00"), at("14:30"), 4),
    ]


def test_event_exactly_grace_behind_is_accepted(harness):
    h = harness(gap="1m", grace="2m")
    h.send({"user_id": "u", "ts": at("14:30")})
    h.send({"user_id": "v", "ts": at("14:32")})
    h.send({"user_id": "w", "ts": at("14:30")})
    h.finish()
    assert h.late() == []
    assert len(h.emitted()) == 3


def test_max_events_closes_the_session_at_once(harness):
    h = harness(gap="10m", extra_window="max_events = 3")
    for minute in (0, 1, 2, 3, 4):
        h.send({"user_id": "u", "ts": at(f"14:0{minute}")})
    h.commit()
    assert bounds(h.emitted()) == [(at("14:00"), at("14:02"), 3)]
    h.finish()
    assert bounds(h.emitted())[1] == (at("14:03"), at("14:04"), 2)


def test_max_duration_splits_a_long_session(harness):
    h = harness(gap="10m", extra_window='max_duration = "15m"')
    for hhmm in ("14:00", "14:08", "14:15", "14:16", "14:24"):
        h.send({"user_id": "u", "ts": at(hhmm)})
    h.finish()
    assert bounds(h.emitted()) == [(at("14:00"), at("14:15"), 3), (at("14:16"), at("14:24"), 2)]


def test_duration_capped_session_closes_before_its_gap_expires(harness):
    h = harness(gap="10m", extra_window='max_duration = "5m"')
    h.send({"user_id": "u", "ts": at("14:00")})
    h.send({"user_id": "v", "ts": at("14:06")})  # stream time passes 14:00 + 5m
    h.commit()
    assert bounds(h.emitted()) == [(at("14:00"), at("14:00"), 1)]


def test_idle_advance_closes_a_quiet_users_session(harness):
    h = harness(gap="10m", grace="1m")
    h.send({"user_id": "u", "ts": at("14:00")})
    h.commit()
    assert h.emitted() == []
    h.processor.advance(at("14:11") + 1)
    h.commit()
    assert bounds(h.emitted()) == [(at("14:00"), at("14:00"), 1)]
