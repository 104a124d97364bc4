"""Open-session queries answered in the loop thread: the inbox and what each partition says."""

from __future__ import annotations

import pytest

from service.core.partitioner import partition_for
from service.errors import ServiceStopping
from service.runtime.queries import LOCAL, REMOTE, RESTORING, Query, QueryInbox, answer
from tests.helpers import add_event


def test_a_local_key_gets_its_open_windows_with_close_times(running_tasks):
    config, pipeline, made = running_tasks
    partition = partition_for(b"AllOfR", 4)
    task = made[(pipeline.name, partition)]
    base = 1_499_265_000_000  # 2017-07-05 14:30 UTC, seed 004
    add_event(task, "AllOfR", base, "put-item-in-cart")
    add_event(task, "AllOfR", base + 4 * 60_000, "checkout")
    (part,) = answer(made, Query(b"AllOfR", [(pipeline, partition)]))
    assert part.status == LOCAL and part.stream_time_ms == base + 240_000
    (window,) = part.windows
    assert window["start_ms"] == base and window["end_ms"] == base + 240_000
    assert window["closes_at_ms"] == base + 240_000 + 600_000  # end + gap (+ grace 0)
    assert window["value"]["event_count"] == 2
    assert window["value"]["types"] == {"put-item-in-cart": 1, "checkout": 1}
    (nobody,) = answer(made, Query(b"nobody", [(pipeline, partition)]))
    assert nobody.status == LOCAL and nobody.windows == []


def test_a_partition_elsewhere_or_restoring_is_said_so(running_tasks):
    config, pipeline, made = running_tasks
    del made[(pipeline.name, 1)]
    made[(pipeline.name, 2)].restoring()
    parts = answer(made, Query(b"k", [(pipeline, 1), (pipeline, 2)]))
    assert [p.status for p in parts] == [REMOTE, RESTORING]


def test_the_inbox_is_answered_by_the_loop_and_closes(running_tasks):
    config, pipeline, made = running_tasks
    inbox = QueryInbox()
    future = inbox.submit(Query(b"k", [(pipeline, 0)]))
    assert not future.done()
    inbox.serve(made)  # what the loop does once per iteration
    assert future.result(0)[0].status == LOCAL
    pending = inbox.submit(Query(b"k", [(pipeline, 0)]))
    inbox.close()
    with pytest.raises(ServiceStopping):
        pending.result(0)
    with pytest.raises(ServiceStopping):
        inbox.submit(Query(b"k", [(pipeline, 0)])).result(0)
