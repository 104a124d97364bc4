"""Tumbling and hopping windows."""

from __future__ import annotations

import tomllib

from tests.helpers import Harness, config_toml, pipeline


def fixed_config(window: str) -> str:
    """Pipeline ``r`` over ``events`` summing ``amount``, with the window table written in TOML."""
    total = 'total = { type = "sum", field = "amount" }'
    table = pipeline(["events"], tomllib.loads(window), time_format="epoch_ms", aggregates=total)
    return config_toml({"r": table})


def windows(h: Harness) -> list[tuple[int, int, int, float]]:
    return [
        (r["value"]["window_start_ms"], r["value"]["window_end_ms"], r["value"]["event_count"], r["value"]["total"])
        for r in h.emitted()
    ]


def test_tumbling_windows_sum_per_window(make):
    h = make(fixed_config('type = "tumbling"\nsize = "100ms"'))
    for ts, amount in [(5, 1), (99, 2), (100, 4), (250, 8)]:
        h.send({"user_id": "u", "ts": ts, "amount": amount})
    h.finish()
    assert windows(h) == [(0, 100, 2, 3), (100, 200, 1, 4), (200, 300, 1, 8)]
    assert h.emitted()[0]["event"] == "session_summary"


def test_tumbling_window_closes_when_stream_time_passes_end_plus_grace(make):
    h = make(fixed_config('type = "tumbling"\nsize = "100ms"\ngrace = "50ms"'))
    h.send({"user_id": "u", "ts": 10, "amount": 1})
    h.send({"user_id": "v", "ts": 150, "amount": 1})
    h.commit()
    assert windows(h) == []
    h.send({"user_id": "v", "ts": 151, "amount": 1})
    h.commit()
    assert windows(h) == [(0, 100, 1, 1)]


def test_event_for_a_closed_tumbling_window_goes_to_the_late_topic(make):
    h = make(fixed_config('type = "tumbling"\nsize = "100ms"\ngrace = "10ms"'))
    h.send({"user_id": "u", "ts": 10, "amount": 1})
    h.send({"user_id": "u", "ts": 200, "amount": 1})
    h.commit()
    h.send({"user_id": "u", "ts": 50, "amount": 5})
    h.finish()
    assert [r.topic for r in h.late()] == ["sessionizer-late"]
    assert windows(h) == [(0, 100, 1, 1), (200, 300, 1, 1)]


def test_hopping_event_counts_in_every_window_containing_it(make):
    h = make(fixed_config('type = "hopping"\nsize = "100ms"\nadvance = "50ms"'))
    h.send({"user_id": "u", "ts": 60, "amount": 1})
    h.finish()
    assert windows(h) == [(0, 100, 1, 1), (50, 150, 1, 1)]


def test_hopping_late_event_still_counts_in_its_open_windows(make):
    h = make(fixed_config('type = "hopping"\nsize = "100ms"\nadvance = "50ms"'))
    h.send({"user_id": "u", "ts": 60, "amount": 1})
    h.send({"user_id": "u", "ts": 120, "amount": 1})  # closes [0, 100)
    h.commit()
    h.send({"user_id": "u", "ts": 70, "amount": 10})  # [0,100) closed, [50,150) open
    h.finish()
    assert len(h.late()) == 1
    assert windows(h) == [(0, 100, 1, 1), (50, 150, 3, 12), (100, 200, 1, 1)]
