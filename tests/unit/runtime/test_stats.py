"""The loop's own statistics: cumulative buckets, emit delays, and when to sample."""

from __future__ import annotations

import time

from service.runtime.stats import Buckets, LoopStats, TaskCounts


def test_buckets_are_cumulative_with_le_semantics():
    buckets = Buckets((1.0, 2.0))
    for value in (0.5, 1.0, 1.5, 9.0):
        buckets.observe(value)
    assert buckets.cumulative() == [(1.0, 2), (2.0, 3), (float("inf"), 4)]
    assert buckets.sum == 12.0


def test_emit_delay_of_a_window_closing_in_the_future_counts_as_zero():
    stats = LoopStats()
    observe = stats.emit_observer("p")
    observe(int(time.time() * 1000) + 60_000)
    assert stats.emit_delay["p"].sum == 0.0 and stats.emit_delay["p"].counts[0] == 1


def test_tick_marks_the_loop_alive_and_asks_for_a_sample_once_a_second():
    stats = LoopStats()
    due = [stats.tick(100.0), stats.tick(100.5), stats.tick(101.1)]
    assert stats.running and stats.last_iteration == 101.1
    assert due == [True, False, True]
    stats.rebalances += 1  # a new assignment is sampled at once
    assert stats.tick(101.2)


def test_task_counts_add_up_by_reason_too():
    total = TaskCounts(late=1, late_reasons={"behind_watermark": 1})
    total.add(TaskCounts(late=2, late_reasons={"behind_watermark": 1, "behind_stream_time": 1}, dead_letter_reasons={"no_key": 3}))
    assert total.late == 3
    assert total.late_reasons == {"behind_watermark": 2, "behind_stream_time": 1}
    assert total.dead_letter_reasons == {"no_key": 3}
