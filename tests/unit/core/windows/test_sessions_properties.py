"""Properties of session windows under arbitrary arrival order.

Arrival orders are built so that every event arrives at most ``grace`` behind
stream time: each event gets a delay in [0, grace] and events arrive sorted by
time + delay. Any event that arrives before it then has time <= its time + grace.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.core.windows.session import Session, SessionWindows
from tests.helpers import session_config, temporary_harness

GAP = 100
GRACE = 60
KEYS = ["a", "b", "c"]

events = st.lists(
    st.tuples(st.sampled_from(KEYS), st.integers(0, 3_000), st.integers(0, GRACE)),
    min_size=1,
    max_size=60,
)
commit_points = st.sets(st.integers(0, 60), max_size=10)


def arrival_order(items):
    # sort by arrival time; ties keep generation order (stable sort)
    return sorted(items, key=lambda e: e[1] + e[2])


def sorted_split(items, gap=GAP, max_events=None, max_duration=None):
    """The reference: per key, events sorted by time, split at gaps larger than ``gap`` (and at caps)."""
    out = []
    by_key: dict[str, list[int]] = {}
    for key, time, _ in items:
        by_key.setdefault(key, []).append(time)
    for key, times in by_key.items():
        times.sort()
        start = end = times[0]
        count = 1
        for t in times[1:]:
            too_far = t - end > gap
            full = max_events is not None and count + 1 > max_events
            too_long = max_duration is not None and t - start > max_duration
            if too_far or full or too_long:
                out.append((key, start, end, count))
                start, count = t, 0
            end = t
            count += 1
        out.append((key, start, end, count))
    return sorted(out)


def run(items, commits, extra_window=""):
    config = session_config(gap=f"{GAP}ms", grace=f"{GRACE}ms", extra_window=extra_window, time_format="epoch_ms")
    with temporary_harness(config) as h:
        h.play((({"user_id": key, "ts": time}, 0) for key, time, _ in items), commits)
        late = h.late()
        sessions = [
            (r["user_id"], r["value"]["session_start_ms"], r["value"]["session_end_ms"], r["value"]["event_count"])
            for r in h.emitted()
        ]
        return sessions, late


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(events, commit_points)
def test_any_arrival_within_grace_equals_the_sorted_split(items, commits):
    sessions, late = run(arrival_order(items), commits)
    assert late == []
    assert sorted(sessions) == sorted_split(items)


@SETTINGS
@given(events, commit_points, st.integers(1, 5), st.integers(0, 300))
def test_caps_count_every_event_once_and_are_never_exceeded(items, commits, max_events, max_duration):
    extra = f'max_events = {max_events}\nmax_duration = "{max_duration + 1}ms"'
    sessions, late = run(arrival_order(items), commits, extra)
    assert late == []
    for key in KEYS:
        assert sum(s[3] for s in sessions if s[0] == key) == sum(1 for e in items if e[0] == key)
    for _, start, end, count in sessions:
        assert count <= max_events
        assert end - start <= max_duration + 1


@SETTINGS
@given(events, commit_points, st.integers(1, 5), st.integers(0, 300))
def test_caps_with_in_order_input_give_the_sorted_split(items, commits, max_events, max_duration):
    in_order = sorted(items, key=lambda e: e[1])
    extra = f'max_events = {max_events}\nmax_duration = "{max_duration + 1}ms"'
    sessions, late = run(in_order, commits, extra)
    assert late == []
    assert sorted(sessions) == sorted_split(items, max_events=max_events, max_duration=max_duration + 1)


spans = st.lists(st.tuples(st.integers(-10_000, 10_000), st.integers(0, 500), st.integers(1, 6)), min_size=1, max_size=4)


@given(spans, st.sampled_from([(None, None), (3, None), (None, 200), (2, 100)]))
def test_next_close_is_the_earliest_close_time_capped_or_not(rows, caps):
    # Uncapped sessions take a shortcut (earliest end + gap + grace); it must agree with close_time.
    max_events, max_duration = caps
    kind = SessionWindows(GAP, GRACE, max_duration_ms=max_duration, max_events=max_events)
    sessions = [Session(start, start + length, count, []) for start, length, count in rows]
    assert kind.next_close(sessions) == min(kind.close_time(s) for s in sessions)
