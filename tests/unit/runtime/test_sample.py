"""What the loop samples once a second from its tasks: stream time and each source topic's watermark."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from service.core.watermarks import Watermarks, source_id
from service.runtime.loop import topic_watermarks

WEB, MOBILE = 0, 1


def task(marks: Watermarks) -> Any:
    """What ``topic_watermarks`` reads of a window task: its watermarks and its pipeline's sources."""
    return SimpleNamespace(watermarks=marks, pipeline=SimpleNamespace(config=SimpleNamespace(sources=("web", "mobile"))))


def test_a_topics_watermark_is_its_slowest_partition():
    marks = Watermarks([source_id(WEB, 0), source_id(WEB, 1), source_id(MOBILE, 0)])
    marks.advance(source_id(WEB, 0), 5_000)
    marks.advance(source_id(WEB, 1), 3_000)
    marks.advance(source_id(MOBILE, 0), 9_000)
    assert topic_watermarks(task(marks)) == {"web": 3_000, "mobile": 9_000}


def test_a_quiet_partitions_wall_clock_bound_counts_as_its_watermark():
    marks = Watermarks([source_id(WEB, 0), source_id(WEB, 1), source_id(MOBILE, 0)])
    marks.advance(source_id(WEB, 0), 5_000)
    marks.report(source_id(WEB, 1), 8_000)  # quiet: its bound is ahead of web-0's events
    marks.report(source_id(MOBILE, 0), 4_000)
    assert topic_watermarks(task(marks)) == {"web": 5_000, "mobile": 4_000}


def test_a_topic_with_a_partition_not_heard_from_has_no_watermark():
    marks = Watermarks([source_id(WEB, 0), source_id(WEB, 1), source_id(MOBILE, 0)])
    marks.advance(source_id(WEB, 0), 5_000)
    marks.advance(source_id(MOBILE, 0), 7_000)
    assert topic_watermarks(task(marks)) == {"mobile": 7_000}
