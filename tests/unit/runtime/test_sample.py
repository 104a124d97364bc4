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


def test_a_topics_watermark_is_its_slowest_busy_partition():
    marks = Watermarks([source_id(WEB, 0), source_id(WEB, 1), source_id(MOBILE, 0)])
    marks.observe(source_id(WEB, 0), 5_000)
    marks.observe(source_id(WEB, 1), 3_000)
    marks.observe(source_id(MOBILE, 0), 9_000)
    assert topic_watermarks(task(marks), now=0) == {"web": 3_000, "mobile": 9_000}


def test_idle_partitions_do_not_hold_a_topic_back_and_an_all_idle_topic_shows_its_highest():
    marks = Watermarks([source_id(WEB, 0), source_id(WEB, 1), source_id(MOBILE, 0), source_id(MOBILE, 1)])
    marks.observe(source_id(WEB, 0), 5_000)
    marks.report(source_id(WEB, 1), 1_000, idle=True, now=0)  # far behind, but read to its end
    marks.report(source_id(MOBILE, 0), 2_000, idle=True, now=0)
    marks.report(source_id(MOBILE, 1), 4_000, idle=True, now=0)
    assert topic_watermarks(task(marks), now=0) == {"web": 5_000, "mobile": 4_000}


def test_a_topic_with_a_busy_partition_not_heard_from_has_no_watermark():
    marks = Watermarks([source_id(WEB, 0), source_id(WEB, 1), source_id(MOBILE, 0)])
    marks.observe(source_id(WEB, 0), 5_000)
    marks.observe(source_id(MOBILE, 0), 7_000)
    assert topic_watermarks(task(marks), now=0) == {"mobile": 7_000}
