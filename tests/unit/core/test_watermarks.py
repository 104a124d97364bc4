"""Per-source watermarks: stream time is the slowest source's, and a quiet source's watermark is its wall-clock bound.

The property at the end is issue 11's promise without Kafka: however the
sources' records interleave (one source read far ahead of another, as on a
backlog), when each source's own disorder is within grace nothing is late and
the sessions equal the sorted split.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.core.watermarks import Watermarks, source_id, source_parts
from tests.helpers import Harness, session_config
from tests.unit.core.windows.test_sessions_properties import GAP, GRACE, sorted_split

A, B, C = source_id(0, 0), source_id(0, 1), source_id(1, 0)


def test_source_ids_round_trip():
    assert source_parts(source_id(3, 17)) == (3, 17)
    assert len({source_id(t, p) for t in range(3) for p in range(6)}) == 18


def test_stream_time_is_unknown_until_every_source_has_a_watermark():
    marks = Watermarks([A, B])
    marks.advance(A, 1_000)
    assert marks.stream_time() is None  # B may still hold anything
    marks.report(B, None)  # B has read nothing yet: still nothing known
    assert marks.stream_time() is None
    marks.advance(B, 400)
    assert marks.stream_time() == 400


def test_stream_time_is_the_slowest_sources_watermark():
    marks = Watermarks([A, B, C])
    for source, t in [(A, 5_000), (B, 1_000), (C, 3_000), (A, 4_000), (B, 1_500)]:
        marks.advance(source, t)
    assert marks.marks == {A: 5_000, B: 1_500, C: 3_000}
    assert marks.stream_time() == 1_500


def test_a_quiet_sources_wall_clock_bound_holds_stream_time_like_any_watermark():
    """Idleness bounds a source, it never removes it: a quiet source whose reader
    stops reporting holds stream time at its last bound."""
    marks = Watermarks([A, B])
    marks.advance(A, 9_000)
    marks.report(B, 2_000)  # B is quiet: read to its end at 3 s on the wall clock, minus the margin
    assert marks.stream_time() == 2_000
    marks.report(B, 8_000)  # six seconds on, still quiet
    assert marks.stream_time() == 8_000
    marks.advance(A, 20_000)  # B's reader dies: no more reports from it
    assert marks.stream_time() == 8_000


def test_a_source_never_goes_back_and_unknown_sources_join():
    marks = Watermarks([A])
    marks.advance(A, 5_000)
    marks.advance(A, 4_000)  # a new reader starting from an older offset
    assert marks.marks[A] == 5_000
    marks.report(C, None)  # a partition added to a source topic
    assert marks.stream_time() is None
    marks.report(C, 100)
    assert marks.stream_time() == 100


def test_watermarks_are_kept_with_the_state():
    marks = Watermarks([A, B])
    marks.advance(A, 10)
    marks.report(B, 20)
    assert marks.take_changed() and not marks.take_changed()
    restored = Watermarks([A, B])
    restored.load(marks.dump())
    assert restored.marks == {A: 10, B: 20}
    assert restored.stream_time() == 10


# -- the property -----------------------------------------------------------------

SOURCES = [A, B, C]
KEYS = ["a", "b", "c"]


@st.composite
def backlog(draw):
    """Per source, events in arrival order with disorder within grace; then any interleaving of the sources."""
    per_source = {}
    for source in SOURCES:
        items = draw(st.lists(st.tuples(st.sampled_from(KEYS), st.integers(0, 3_000), st.integers(0, GRACE)), max_size=25))
        # within one source: sorted by time + delay, so each event is at most grace behind its predecessors
        per_source[source] = sorted(items, key=lambda e: e[1] + e[2])
    order = draw(st.lists(st.sampled_from(SOURCES), min_size=sum(map(len, per_source.values())), max_size=80))
    cursors = {s: 0 for s in SOURCES}
    arrival = []
    for source in order:
        if cursors[source] < len(per_source[source]):
            arrival.append((source, per_source[source][cursors[source]]))
            cursors[source] += 1
    for source in SOURCES:  # whatever the drawn order did not reach
        arrival += [(source, item) for item in per_source[source][cursors[source] :]]
    batches = draw(st.sets(st.integers(0, 80), max_size=10))
    return arrival, batches


@given(backlog())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_interleaving_of_sources_within_their_grace_is_never_late(case):
    arrival, batch_ends = case
    config = session_config(gap=f"{GAP}ms", grace=f"{GRACE}ms", time_format="epoch_ms")
    tmp = Path(tempfile.mkdtemp())
    harness = Harness(config, tmp / "store")
    marks = Watermarks(SOURCES)
    try:
        for i, (source, (key, time, _delay)) in enumerate(arrival):
            watermark = marks.advance(source, time)
            harness.send({"user_id": key, "ts": time}, watermark=watermark)
            if i in batch_ends:  # the task moves stream time and commits between batches
                harness.processor.advance(marks.stream_time())
                harness.commit()
        harness.finish()
        assert harness.late() == []
        got = sorted(
            (e["user_id"], e["value"]["session_start_ms"], e["value"]["session_end_ms"], e["value"]["event_count"])
            for e in harness.emitted()
        )
        assert got == sorted_split([item for _, item in arrival])
    finally:
        harness.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_source_beyond_its_own_grace_is_late_whatever_the_others_do():
    config = session_config(gap=f"{GAP}ms", grace=f"{GRACE}ms", time_format="epoch_ms")
    tmp = Path(tempfile.mkdtemp())
    harness = Harness(config, tmp / "store")
    marks = Watermarks([A, B])
    try:
        harness.send({"user_id": "k", "ts": 1_000}, watermark=marks.advance(A, 1_000))
        # B is far behind A: on time, because B's own watermark is what counts
        harness.send({"user_id": "k", "ts": 200}, watermark=marks.advance(B, 200))
        # A's own disorder exceeds grace: late, though stream time (B's 200) is far behind
        harness.send({"user_id": "k", "ts": 1_000 - GRACE - 1}, watermark=marks.advance(A, 1_000 - GRACE - 1))
        (late,) = harness.late()
        headers = dict(late.headers)
        assert headers["sessionizer.watermark_ms"] == b"1000"
        assert headers["sessionizer.reason_code"] == b"behind_watermark"
        assert harness.processor.stream_time is None  # nothing moved it yet
        assert harness.processor.counters.late_reasons == {"behind_watermark": 1}
    finally:
        harness.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_an_event_on_time_for_its_source_but_behind_stream_time_is_late_behind_stream_time():
    """Stream time is never above a source's watermark, except for a source that joins late
    (a partition added to a source topic): it is judged against the stream time the others made."""
    config = session_config(gap=f"{GAP}ms", grace=f"{GRACE}ms", time_format="epoch_ms")
    tmp = Path(tempfile.mkdtemp())
    harness = Harness(config, tmp / "store")
    marks = Watermarks([A])
    try:
        harness.send({"user_id": "k", "ts": 5_000}, watermark=marks.advance(A, 5_000))
        harness.processor.advance(marks.stream_time())
        assert harness.processor.stream_time == 5_000
        marks.report(B, None)  # B joins: a partition added while the service runs
        # B's first event, far behind: on time for B, not for stream time
        harness.send({"user_id": "k", "ts": 1_000}, watermark=marks.advance(B, 1_000))
        # and one beyond B's own grace as well: B's own disorder is the reason
        harness.send({"user_id": "k", "ts": 1_000 - GRACE - 1}, watermark=marks.advance(B, 1_000 - GRACE - 1))
        codes = [dict(r.headers)["sessionizer.reason_code"] for r in harness.late()]
        assert codes == [b"behind_stream_time", b"behind_watermark"]
        assert harness.processor.counters.late == 2
        assert harness.processor.counters.late_reasons == {"behind_stream_time": 1, "behind_watermark": 1}
    finally:
        harness.close()
        shutil.rmtree(tmp, ignore_errors=True)
