"""Promises of docs/semantics.md that had no test of their own, checked over the fake clients.

A TaskManager drives real RocksDB stores over ``tests.fakes``, with the
instance's own wall clock (``Instance.now``): nothing sleeps. Pipeline ``s``
reads the two partitions of ``events`` through a two-partition repartition
topic, so every window task has two sources, ``S0`` and ``S1``. Sessions close
10 minutes after their last event, with a minute of grace.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from service.core.partitioner import partition_for
from service.core.watermarks import source_id
from service.runtime.ends import END_MARGIN_MS
from service.runtime.frames import DATA, DATA_FRAME, IDLE, LEGACY_FRAME, PACK_ENTRY, PACK_HEAD, PACKED, REPORT_FRAME, report
from service.runtime.tasks import DirectTask, TaskState, WindowTask
from tests.fakes import FakeAdmin, FakeCluster, FakeMessage, FetchingConsumer, Produced, eof
from tests.helpers import framed, is_report, pipeline, session_window
from tests.unit.runtime.instances import MOBILE, WEB, Instance, Instances, direct_instance, event

SOURCE = "events"
REPARTITION = "sessionizer-s-repartition"
CHANGELOG = "sessionizer-s-changelog"
OUTPUT = "out"
LATE = "sessionizer-late"
DEAD = "sessionizer-dead-letter"

T0 = 1_700_000_000_000
SECOND = 1_000
MINUTE = 60_000
#: The two sources of every window task: partitions 0 and 1 of ``events``.
S0, S1 = source_id(0, 0), source_id(0, 1)

ABORTABLE = KafkaError(KafkaError.INVALID_TXN_STATE, "transaction must be aborted", txn_requires_abort=True)


#: Sessions of ``user_id`` in ``events``, closed 10 minutes after their last event, with a minute of grace.
PIPELINE = pipeline(
    [SOURCE], session_window("10m", "1m"), output=OUTPUT, time_format="epoch_ms", aggregates='total = { type = "sum", field = "amount" }'
)
PARTITIONS = {SOURCE: 2, REPARTITION: 2, CHANGELOG: 2}


class RecordingAdmin(FakeAdmin):
    """Remembers, with every deletion asked for, the group's committed offset at that moment."""

    def __init__(self, cluster: FakeCluster) -> None:
        super().__init__(cluster=cluster)
        #: (topic, partition, delete before, the group's committed offset then)
        self.asked: list[tuple[str, int, int, int | None]] = []

    def delete_records(self, offsets: list[TopicPartition], **kwargs: Any) -> Any:
        for tp in offsets:
            self.asked.append((tp.topic, tp.partition, tp.offset, self.cluster.group_offsets.get((tp.topic, tp.partition))))
        return super().delete_records(offsets, **kwargs)


#: The admin client the ``instance`` fixture gives every instance here (``conftest.py``).
ADMIN = RecordingAdmin


def data(
    partition: int, offset: int, user: str, at_ms: int, source: int = S0, watermark: int | None = None, body: bytes | None = None
) -> FakeMessage:
    """A framed event in repartition ``partition`` from ``source``, carrying that source's watermark (its own time by default)."""
    frame = DATA_FRAME.pack(DATA, at_ms, at_ms if watermark is None else watermark, source)
    return FakeMessage(REPARTITION, partition, offset, key=user.encode(), value=frame + (body or event(user, at_ms)), timestamp_ms=at_ms)


def said(partition: int, offset: int, source: int, watermark: int | None, idle: bool = True) -> FakeMessage:
    """A watermark report of ``source`` read from repartition ``partition``."""
    return FakeMessage(REPARTITION, partition, offset, key=None, value=report(watermark, source, idle))


def sessions(records: Iterable[Produced]) -> list[tuple[bytes | None, int, int, int]]:
    """(key, start, end, count) of each output record."""
    out = []
    for r in records:
        assert r.value is not None
        value = orjson.loads(r.value)["value"]
        out.append((r.key, value["session_start_ms"], value["session_end_ms"], value["event_count"]))
    return out


# -- 1. stream time and watermarks come back from the changelog, per partition -------------------


def test_each_partitions_stream_time_and_watermarks_are_restored_from_the_changelog_into_an_empty_state_dir(instance, cluster):
    a = instance("a")
    a.assign((REPARTITION, 0), (REPARTITION, 1))
    # Partition 0: S1 is the slower source, stream time T0 + 1m.
    a.tasks.route([data(0, 0, "u1", T0 + 4 * MINUTE, S0), data(0, 1, "u2", T0 + MINUTE, S1)])
    # Partition 1: S0 is the slower one, stream time T0 + 7m.
    a.tasks.route([data(1, 0, "u3", T0 + 7 * MINUTE, S0), data(1, 1, "u4", T0 + 9 * MINUTE, S1)])
    assert (a.window(0).store.stream_time, a.window(1).store.stream_time) == (T0 + MINUTE, T0 + 7 * MINUTE)
    a.tasks.commit()
    assert {r.partition for r in cluster.visible(CHANGELOG)} == {0, 1}

    b = instance("b")  # another instance, with nothing on its disk
    b.assign((REPARTITION, 0), (REPARTITION, 1))
    tasks = [b.window(0), b.window(1)]
    assert [t.state for t in tasks] == [TaskState.RESTORING, TaskState.RESTORING]
    assert [t.store.stream_time for t in tasks] == [None, None]
    b.restore_consumer.feed(
        *cluster.messages(CHANGELOG), eof(CHANGELOG, 0, cluster.end((CHANGELOG, 0))), eof(CHANGELOG, 1, cluster.end((CHANGELOG, 1)))
    )
    b.tasks.restore()

    assert [t.state for t in tasks] == [TaskState.RUNNING, TaskState.RUNNING]
    assert [t.store.stream_time for t in tasks] == [T0 + MINUTE, T0 + 7 * MINUTE]
    assert [t.watermarks.marks for t in tasks] == [
        {S0: T0 + 4 * MINUTE, S1: T0 + MINUTE},
        {S0: T0 + 7 * MINUTE, S1: T0 + 9 * MINUTE},
    ]
    # Stream time goes on from them: S1 moves to T0 + 5m on partition 0, and S0's restored
    # T0 + 4m is now the slowest (without it, stream time would wait for S0; with partition 1's, T0 + 7m).
    b.tasks.route([data(0, 2, "u5", T0 + 5 * MINUTE, S1)])
    assert b.window(0).store.stream_time == T0 + 4 * MINUTE


def test_a_store_ahead_of_the_changelogs_stable_offset_is_kept_while_its_commits_markers_are_pending(instance, cluster):
    """A commit returns once the broker has logged it, before its markers are written (for longer when
    the broker stops then): the changelog's stable offset is still before records the store's checkpoint
    holds. A restore then keeps the store. Rebuilt up to the stable offset, it lost that commit's state
    while its output and offsets stood, and its sessions were emitted twice (seen in the broker-restart test)."""
    a = instance("a")
    a.assign((REPARTITION, 0), (REPARTITION, 1))
    a.tasks.route([data(0, 0, "u1", T0), data(0, 1, "u1", T0 + MINUTE), said(0, 2, S1, T0 + MINUTE, idle=False)])
    a.tasks.commit()
    cluster.hold_markers = True
    # Stream time passes u1's close (its last event, 10 minutes, a minute of grace): this commit emits it.
    a.tasks.route([data(0, 3, "u2", T0 + 30 * MINUTE), said(0, 4, S1, T0 + 30 * MINUTE, idle=False)])
    a.tasks.commit()
    checkpoint = a.window(0).store.checkpoint
    assert checkpoint is not None and cluster.stable_end((CHANGELOG, 0)) < checkpoint <= cluster.end((CHANGELOG, 0))
    a.close()

    b = instance("a")  # the same instance started again, its stores on disk
    for partition in (0, 1):  # the restore consumer reads read_committed: up to the stable offset
        b.restore_consumer.watermarks[(CHANGELOG, partition)] = (0, cluster.stable_end((CHANGELOG, partition)))
    b.assign((REPARTITION, 0), (REPARTITION, 1))
    b.tasks.restore()
    assert b.window(0).state == TaskState.RUNNING
    assert b.window(0).store.checkpoint == checkpoint
    cluster.hold_markers = False
    cluster.write_markers()
    b.tasks.route([data(0, 5, "u3", T0 + 60 * MINUTE), said(0, 6, S1, T0 + 60 * MINUTE, idle=False)])
    b.tasks.commit()
    assert sorted(sessions(cluster.visible(OUTPUT))) == [(b"u1", T0, T0 + MINUTE, 2), (b"u2", T0 + 30 * MINUTE, T0 + 30 * MINUTE, 1)]


def test_a_store_past_the_changelogs_log_end_does_not_fit_and_is_rebuilt(instance, cluster):
    """Past the log end itself (the changelog topic was recreated), the checkpoint does not fit."""
    a = instance("a")
    a.assign((REPARTITION, 0), (REPARTITION, 1))
    a.tasks.route([data(0, 0, "u1", T0), data(0, 1, "u1", T0 + MINUTE)])
    a.tasks.commit()
    assert a.window(0).store.checkpoint == 2
    a.close()

    b = instance("a")
    b.admin.ends[(CHANGELOG, 0)] = 1  # the log end, read_uncommitted
    b.restore_consumer.watermarks[(CHANGELOG, 0)] = (0, 1)
    b.assign((REPARTITION, 0), (REPARTITION, 1))
    assert b.window(0).state == TaskState.RESTORING
    assert b.window(0).store.checkpoint is None


def run(a: Instance, seconds: int) -> None:
    """``a``'s loop for ``seconds`` of its clock, a second a round: poll what the cluster holds, restore, punctuate, commit."""
    for _ in range(seconds):
        a.now += 1
        messages = a.consumer.consume(1_000, 0)
        if messages:
            a.tasks.route(messages)
        if a.tasks.restoring:
            a.tasks.restore()
        a.tasks.punctuate(a.now)
        a.tasks.commit()


def test_stream_time_the_wall_clock_moved_is_restored_from_the_changelog(cluster, tmp_path):
    """Once the wall-clock bounds of quiet sources have moved stream time past every event time, that
    stream time, and each source's watermark, is state like any other: an instance on an empty disk
    restores both from the changelog, exactly as they were committed, before any source reports again."""
    made = Instances(cluster, tmp_path, PIPELINE, PARTITIONS, admin=RecordingAdmin, consumer=FetchingConsumer)
    try:
        a = made("a")
        a.assign((SOURCE, 0), (SOURCE, 1), (REPARTITION, 0), (REPARTITION, 1))
        for partition in (0, 1):  # one event in each source partition, at T0; nothing after it
            cluster.records.append(Produced(SOURCE, partition, cluster.append((SOURCE, partition)), None, event(f"u{partition}", T0)))
        idle = a.config.idle_timeout_ms // 1000
        run(a, idle + 5)  # both sources seen quiet, their bounds reported and read by the window tasks
        tasks = [a.window(0), a.window(1)]
        moved = [t.store.stream_time for t in tasks]
        marks = [t.watermarks.marks for t in tasks]
        assert all(st is not None and st > T0 + (idle - 2) * SECOND for st in moved), (moved, "the wall clock moved stream time")
        assert all(m[S0] > T0 and m[S1] > T0 for m in marks), marks

        b = made("b")  # another instance, nothing on its disk, reading no source: nothing reports again
        b.assign((REPARTITION, 0), (REPARTITION, 1))
        restored = [b.window(0), b.window(1)]
        assert [t.store.stream_time for t in restored] == [None, None]
        for _ in range(10):  # the changelog reader, between polls that hand nothing over
            b.tasks.restore()
        assert [t.state for t in restored] == [TaskState.RUNNING, TaskState.RUNNING]
        assert [t.store.stream_time for t in restored] == moved
        assert [t.watermarks.marks for t in restored] == marks
    finally:
        made.close()


# -- 2. quiet sources and the wall clock -------------------------------------------------------------


class Feed:
    """What the window task of repartition partition 0 reads next, at consecutive offsets."""

    def __init__(self, a: Instance, offset: int = 0) -> None:
        self.a = a
        self.offset = offset

    def reports(self, *marks: tuple[int, int]) -> None:
        """A quiet report per ``(source, watermark)``, then the partition's end."""
        batch = []
        for source, watermark in marks:
            batch.append(said(0, self.offset, source, watermark))
            self.offset += 1
        self.a.tasks.route([*batch, eof(REPARTITION, 0, self.offset)])


def started(a: Instance) -> tuple[WindowTask, Feed]:
    """u1's event from S0 and u2's from S1, both at T0, read and committed: stream time T0."""
    a.assign((REPARTITION, 0))
    window = a.window()
    a.tasks.route([data(0, 0, "u1", T0, S0), data(0, 1, "u2", T0, S1)])
    a.tasks.commit()
    assert window.store.stream_time == T0
    return window, Feed(a, 2)


def test_a_quiet_report_moves_stream_time_as_a_frame_would_and_silence_holds_it(instance):
    """A quiet source's report carries its wall-clock bound as its watermark: stream time is the
    smaller of the two. No idle clock runs in the window task, and no report goes stale: when the
    reports stop (a reader that died, or moves), stream time stays where they left it."""
    a = instance()
    window, feed = started(a)
    feed.reports((S0, T0 + 5 * SECOND), (S1, T0 + 3 * SECOND))
    a.tick()
    assert window.store.stream_time == T0 + 3 * SECOND
    feed.reports((S1, T0 + 9 * SECOND))
    assert window.store.stream_time == T0 + 5 * SECOND
    a.tick(times=600)  # ten minutes with no report from anyone
    assert window.store.stream_time == T0 + 5 * SECOND


def test_a_report_read_again_after_a_rewind_counts_as_it_did(instance, cluster):
    """A watermark is a fact about what was read before it was written, not a claim about the
    present: read again after a rewind or a restart, it is as true as the first time."""
    a = instance()
    window, feed = started(a)
    feed.reports((S0, T0 + 5 * SECOND), (S1, T0 + 4 * SECOND))
    assert window.store.stream_time == T0 + 4 * SECOND
    a.producer.fail("commit_transaction", ABORTABLE)
    a.tasks.commit()
    assert len(cluster.aborted) == 1
    assert window.store.stream_time == T0, "rolled back to the committed stream time"
    assert window.watermarks.marks == {S0: T0, S1: T0}
    a.tick(times=60)  # a minute of outage and rewinding
    feed.offset = 2  # rewound to the committed offset, the same reports read again
    feed.reports((S0, T0 + 5 * SECOND), (S1, T0 + 4 * SECOND))
    assert window.store.stream_time == T0 + 4 * SECOND


def source_reports(cluster: FakeCluster, source: int = S0) -> list[tuple[int, int, int]]:
    """(repartition partition, watermark, flags) of each report of ``source`` visible so far."""
    out = []
    for r in cluster.visible(REPARTITION):
        if is_report(r):
            _, watermark, sent_by, flags = REPORT_FRAME.unpack(r.value)
            if sent_by == source:
                out.append((r.partition, watermark, flags))
    return out


def reading_events_0(a: Instance, records: int = 1) -> None:
    """``a`` reads partition 0 of ``events``: ``records`` events at T0, then its end, which the broker confirms."""
    a.assign((SOURCE, 0))
    a.admin.ends = {(SOURCE, 0): records}
    a.tasks.route([*(FakeMessage(SOURCE, 0, n, value=event(f"u{n}", T0)) for n in range(records)), eof(SOURCE, 0, records)])
    a.tasks.commit()
    assert source_reports(a.cluster) == [(0, T0, 0), (1, T0, 0)], "its event-time watermark, to both partitions"


def test_a_source_is_quiet_once_the_broker_has_shown_it_read_to_its_end_for_the_idle_timeout(instance, cluster):
    """Then its reports carry its wall-clock bound: when the latest request for end offsets
    that found it at its end was sent, minus a second, flagged IDLE. Every second it moves on.

    Only what the answers saw counts: the idle timeout after the first request, the clock has
    run for it, but the latest answer taken is to the request sent a second before."""
    a = instance()
    reading_events_0(a)
    idle = a.config.idle_timeout_ms // 1000
    a.tick(0)  # the first request goes out at T0 on the wall clock
    a.tick(times=idle)
    a.tasks.commit()
    assert source_reports(cluster)[2:] == [], "seen quiet for less than the idle timeout: nothing new to say"
    a.tick()
    a.tasks.commit()
    bound = T0 + idle * SECOND - END_MARGIN_MS  # the answer taken is to the request sent a second ago
    assert source_reports(cluster)[2:] == [(0, bound, IDLE), (1, bound, IDLE)]
    a.tick()
    a.tasks.commit()
    assert source_reports(cluster)[4:] == [(0, bound + SECOND, IDLE), (1, bound + SECOND, IDLE)]
    assert a.admin.listed[0] == [(SOURCE, 0)]


@pytest.mark.parametrize("what", ["record", "behind its end", "no answer", "a failed answer", "a rewind"])
def test_a_record_an_answer_behind_the_end_no_answer_or_a_rewind_start_the_count_again(instance, cluster, what):
    a = instance()
    reading_events_0(a)
    idle = a.config.idle_timeout_ms // 1000
    a.tick(0)
    a.tick(times=idle // 2)
    if what == "record":
        a.admin.ends = {(SOURCE, 0): 2}
        a.tasks.route([FakeMessage(SOURCE, 0, 1, value=event("u9", T0 + SECOND))])
    elif what == "behind its end":
        a.admin.ends = {(SOURCE, 0): 2}  # a record the consumer has not handed over yet
        a.tick()
        a.admin.ends = {(SOURCE, 0): 1}  # (say it was an aborted transaction's)
    elif what == "no answer":
        a.admin.hold_answers = True  # a broker that does not answer within the patience
        a.tick(times=int(a.tasks.ends.patience) + 1)
        a.admin.hold_answers = False
    elif what == "a failed answer":
        a.admin.ends_error = KafkaError(KafkaError._TRANSPORT, "broker down")
        a.tick(times=2)
        a.admin.ends_error = None
    else:
        a.tasks.abort_and_rewind()  # a failed commit or produce, a broker outage
        assert a.consumer.seeks[-1] == (SOURCE, 0, 1)
    restarted = a.now
    while a.now - restarted < idle:
        a.tick()
        a.tasks.commit()
        assert not [r for r in source_reports(cluster) if r[2] & IDLE], f"{a.now - restarted:.0f} s after the {what}"
    a.tick(times=2)
    a.tasks.commit()
    assert [r for r in source_reports(cluster) if r[2] & IDLE], "quiet again, an idle timeout after it"


def test_an_answer_to_a_request_sent_before_a_record_is_not_taken_for_quiet(instance, cluster):
    """The broker's end may have been asked for before the record came: the record's own end is not known."""
    a = instance()
    reading_events_0(a)
    idle = a.config.idle_timeout_ms // 1000
    a.tick(0)
    a.tick(times=idle - 2)
    a.admin.hold_answers = True
    a.tick()  # a request goes out, unanswered yet
    a.admin.ends = {(SOURCE, 0): 2}
    a.tasks.route([FakeMessage(SOURCE, 0, 1, value=event("u9", T0 + SECOND)), eof(SOURCE, 0, 2)])
    a.admin.answer()  # it answers "2", the end the record made, after the record
    a.admin.hold_answers = False
    a.tick(times=3)
    a.tasks.commit()
    assert not [r for r in source_reports(cluster) if r[2] & IDLE]


def test_a_loop_that_stalled_counts_no_time_it_did_not_see(instance, cluster):
    """The loop stalls between two requests for end offsets (a long pause of the process, a slow
    commit) for as long as the idle timeout. Meanwhile nothing watched the partition: records could
    have come, and the consumer not handed them over yet. That time does not count, however long the
    clock ran: the partition is not quiet when the loop comes back, and the count starts again at
    the first answer after the stall (a gap of more than three request intervals), so it is quiet an
    idle timeout of answers later."""
    a = instance()
    reading_events_0(a)
    idle = a.config.idle_timeout_ms // 1000
    start = a.now  # T0 on the wall clock
    a.tick(0)
    a.tick(times=idle // 2)  # seen at its end for a while
    a.tick(idle)  # the loop comes back from a stall as long as the idle timeout, and punctuates once
    a.tasks.commit()
    assert not [r for r in source_reports(cluster) if r[2] & IDLE], "the stall was not seen: it does not count"
    resumed = a.now  # a request went out as the loop came back: the first one the count starts from
    while a.now < resumed + idle:
        a.tick()
        a.tasks.commit()
        assert not [r for r in source_reports(cluster) if r[2] & IDLE], f"{a.now - resumed:.0f} s after the stall"
    a.tick()  # takes the answer to the request sent an idle timeout after the stall
    a.tasks.commit()
    bound = T0 + round((resumed + idle - start) * SECOND) - END_MARGIN_MS
    assert [r for r in source_reports(cluster) if r[2] & IDLE] == [(0, bound, IDLE), (1, bound, IDLE)]


# -- 3. purging repartition records --------------------------------------------------------------


def deletions_past_committed(a: Instance) -> list[tuple[str, int, int, int | None]]:
    return [asked for asked in a.admin.asked if asked[3] is None or asked[2] > asked[3]]


def test_purging_offers_only_committed_repartition_records_and_sessions_still_close_after_it(instance, cluster):
    a = instance()
    a.assign((REPARTITION, 0), (REPARTITION, 1))
    a.purge_due()
    a.tasks.route([data(0, 0, "u1", T0), data(0, 1, "u1", T0 + MINUTE), eof(REPARTITION, 0, 2)])
    a.tasks.commit()
    assert a.admin.deleted == [(REPARTITION, 0, 2)]

    # Consumed, not committed: nothing is offered, even with the purge due.
    second = [data(0, 2, "u2", T0 + 2 * MINUTE), data(0, 3, "u2", T0 + 3 * MINUTE)]
    a.tasks.route([*second, data(1, 0, "u3", T0)])
    a.purge_due()
    assert a.admin.deleted == [(REPARTITION, 0, 2)]
    # The commit fails: still nothing new is purged, now or at the next commit of another partition.
    a.producer.fail("commit_transaction", ABORTABLE)
    a.tasks.commit()
    assert a.admin.deleted == [(REPARTITION, 0, 2)]
    assert a.tasks.checkpoint.purgeable == {}
    a.tasks.route([data(1, 0, "u3", T0)])  # partition 1 is read again first
    a.purge_due()
    a.tasks.commit()
    assert a.admin.deleted == [(REPARTITION, 0, 2), (REPARTITION, 1, 1)]

    # After the purges, partition 0's later records still close sessions.
    a.tasks.route([*second, data(0, 4, "u4", T0 + 30 * MINUTE), said(0, 5, S1, T0 + 30 * MINUTE, idle=False)])
    a.purge_due()
    a.tasks.commit()
    assert a.admin.deleted[-1] == (REPARTITION, 0, 6)
    assert sorted(sessions(cluster.visible(OUTPUT))) == [(b"u1", T0, T0 + MINUTE, 2), (b"u2", T0 + 2 * MINUTE, T0 + 3 * MINUTE, 2)]
    assert deletions_past_committed(a) == []


def test_at_least_once_does_not_purge_past_an_offset_commit_that_failed(instance, cluster, monkeypatch):
    a = instance(guarantee="at_least_once")
    a.assign((REPARTITION, 0))
    a.tasks.route([data(0, 0, "u1", T0)])
    a.tasks.commit()
    assert cluster.group_offsets == {(REPARTITION, 0): 1}

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise KafkaException(KafkaError(KafkaError.REBALANCE_IN_PROGRESS, "rebalance in progress"))

    monkeypatch.setattr(a.consumer, "commit", refuse)
    a.tasks.route([data(0, 1, "u1", T0 + MINUTE), data(0, 2, "u1", T0 + 2 * MINUTE)])
    a.purge_due()
    a.tasks.commit()
    assert cluster.group_offsets == {(REPARTITION, 0): 1}  # the offset commit did fail
    assert deletions_past_committed(a) == []


# -- 4. what a frame says -------------------------------------------------------------------------


def test_a_frame_carries_its_sources_watermark_and_an_out_of_order_event_is_judged_by_it(instance, cluster):
    """A data frame carries its event's time and its source partition's watermark: the largest event
    time read from the partition so far, which for an event out of order is not its own. The window
    task judges the event against it: exactly grace behind it is on time, more is late (behind its
    watermark), though stream time is still unknown (the other source has said nothing)."""
    a = instance()
    a.assign((SOURCE, 0))
    produced = [("u1", T0 + 10 * MINUTE), ("u2", T0 + 9 * MINUTE), ("u3", T0 + 8 * MINUTE), ("u4", T0 + 11 * MINUTE)]
    a.tasks.route([FakeMessage(SOURCE, 0, n, value=event(user, at)) for n, (user, at) in enumerate(produced)])
    a.tasks.commit()
    assert [f[:4] for f in framed(cluster.visible(REPARTITION))] == [
        (b"u1", T0 + 10 * MINUTE, T0 + 10 * MINUTE, S0),
        (b"u2", T0 + 9 * MINUTE, T0 + 10 * MINUTE, S0),
        (b"u3", T0 + 8 * MINUTE, T0 + 10 * MINUTE, S0),
        (b"u4", T0 + 11 * MINUTE, T0 + 11 * MINUTE, S0),
    ]

    a.assign((REPARTITION, 0), (REPARTITION, 1))
    a.tasks.route(cluster.messages(REPARTITION))
    a.tasks.commit()
    [late] = cluster.visible(LATE)
    assert (late.key, late.value) == (b"u3", event("u3", T0 + 8 * MINUTE))
    assert list(late.headers) == [
        ("sessionizer.reason", too_late(T0 + 8 * MINUTE, MINUTE, T0 + 10 * MINUTE)),
        ("sessionizer.pipeline", b"s"),
        ("sessionizer.event_time_ms", str(T0 + 8 * MINUTE).encode()),
        ("sessionizer.watermark_ms", str(T0 + 10 * MINUTE).encode()),
        ("sessionizer.reason_code", b"behind_watermark"),
    ]
    windows = {user: a.window(partition_for(user.encode(), 2)).store.peek(user.encode()) for user in ("u1", "u2", "u4")}
    assert {user: [(w.start, w.end, w.count) for w in found] for user, found in windows.items()} == {
        "u1": [(T0 + 10 * MINUTE, T0 + 10 * MINUTE, 1)],
        "u2": [(T0 + 9 * MINUTE, T0 + 9 * MINUTE, 1)],
        "u4": [(T0 + 11 * MINUTE, T0 + 11 * MINUTE, 1)],
    }
    assert [a.window(p).store.stream_time for p in (0, 1)] == [None, None], "S1 has said nothing"


def legacy(offset: int, user: str, at_ms: int) -> FakeMessage:
    """A frame as versions before watermarks wrote it: event time, source topic index, the event."""
    return FakeMessage(REPARTITION, 0, offset, key=user.encode(), value=LEGACY_FRAME.pack(at_ms, 0) + event(user, at_ms))


def test_frames_written_before_watermarks_are_read_after_an_upgrade_judged_by_stream_time_alone(instance, cluster):
    """A repartition topic can still hold frames of a version before watermarks when the service is
    upgraded (docs/semantics.md, Limitations). The new version reads them: their events count, judged
    against the task's stream time alone, so one more than grace behind it is late behind stream
    time; they move no source's watermark and no stream time."""
    a = instance("a")
    a.assign((REPARTITION, 0))
    a.tasks.route([data(0, 0, "u1", T0 + 10 * MINUTE, S0), data(0, 1, "u2", T0 + 5 * MINUTE, S1)])
    a.tasks.commit()

    b = instance("b")  # the upgraded process, on an empty disk: its state comes from the changelog
    b.assign((REPARTITION, 0))
    b.restore_consumer.feed(*cluster.messages(CHANGELOG), eof(CHANGELOG, 0, cluster.end((CHANGELOG, 0))))
    b.tasks.restore()
    window = b.window()
    assert window.store.stream_time == T0 + 5 * MINUTE
    b.tasks.route(
        [
            legacy(2, "u3", T0 + 4 * MINUTE),  # exactly grace behind stream time: on time
            legacy(3, "u4", T0 + 3 * MINUTE),  # more than grace behind: late
            legacy(4, "u5", T0 + 30 * MINUTE),  # ahead of everything: on time, and moves nothing
        ]
    )
    b.tasks.commit()
    [late] = cluster.visible(LATE)
    assert (late.key, late.value) == (b"u4", event("u4", T0 + 3 * MINUTE))
    assert list(late.headers) == [
        ("sessionizer.reason", too_late(T0 + 3 * MINUTE, MINUTE, T0 + 5 * MINUTE)),
        ("sessionizer.pipeline", b"s"),
        ("sessionizer.event_time_ms", str(T0 + 3 * MINUTE).encode()),
        ("sessionizer.stream_time_ms", str(T0 + 5 * MINUTE).encode()),
        # All a frame of before watermarks says of its source: it got as far as this event.
        ("sessionizer.watermark_ms", str(T0 + 3 * MINUTE).encode()),
        ("sessionizer.reason_code", b"behind_stream_time"),
    ]
    assert window.counts().late_reasons == {"behind_stream_time": 1}
    assert [(w.start, w.count) for w in window.store.peek(b"u3")] == [(T0 + 4 * MINUTE, 1)]
    assert [(w.start, w.count) for w in window.store.peek(b"u5")] == [(T0 + 30 * MINUTE, 1)]
    assert window.store.stream_time == T0 + 5 * MINUTE
    assert window.watermarks.marks == {S0: T0 + 10 * MINUTE, S1: T0 + 5 * MINUTE}


# -- 5. late records -----------------------------------------------------------------------------


def too_late(time_ms: int, grace_ms: int, limit: int) -> bytes:
    """A session window's reason; ``limit`` is the later of the source's watermark and stream time."""
    return f"event time {time_ms} is more than grace ({grace_ms} ms) behind stream time {limit}".encode()


def test_a_late_record_is_the_original_bytes_with_every_header_exact(instance, cluster):
    a = instance()
    a.assign((REPARTITION, 0))
    # S0 is at T0 + 10m, S1 at T0 + 5m: stream time T0 + 5m.
    a.tasks.route([data(0, 0, "u1", T0 + 10 * MINUTE, S0), data(0, 1, "u2", T0 + 5 * MINUTE, S1)])
    # An event of S0 at T0 + 8m: within grace of stream time, but 2 minutes behind its own source's watermark.
    body = b'{ "ts": 1700000480000,  "user_id":"u3", "note": "caf\\u00e9" }'
    a.tasks.route([data(0, 2, "u3", T0 + 8 * MINUTE, S0, watermark=T0 + 10 * MINUTE, body=body)])
    a.tasks.commit()

    [late] = cluster.visible(LATE)
    assert late.key == b"u3"
    assert late.value == body
    assert list(late.headers) == [
        ("sessionizer.reason", too_late(T0 + 8 * MINUTE, MINUTE, T0 + 10 * MINUTE)),
        ("sessionizer.pipeline", b"s"),
        ("sessionizer.event_time_ms", str(T0 + 8 * MINUTE).encode()),
        ("sessionizer.stream_time_ms", str(T0 + 5 * MINUTE).encode()),
        ("sessionizer.watermark_ms", str(T0 + 10 * MINUTE).encode()),
        ("sessionizer.reason_code", b"behind_watermark"),
    ]
    assert a.window().store.peek(b"u3") == []


def test_a_late_records_stream_time_header_is_absent_while_stream_time_is_unknown(instance, cluster):
    a = instance()
    a.assign((REPARTITION, 0))
    a.tasks.route([data(0, 0, "u1", T0 + 10 * MINUTE, S0)])  # S1 has said nothing: no stream time
    body = b'{"user_id" : "u2", "ts" : 1700000000000}'
    a.tasks.route([data(0, 1, "u2", T0, S0, watermark=T0 + 10 * MINUTE, body=body)])
    a.tasks.commit()
    assert a.window().store.stream_time is None
    [late] = cluster.visible(LATE)
    assert (late.key, late.value) == (b"u2", body)
    assert list(late.headers) == [
        ("sessionizer.reason", too_late(T0, MINUTE, T0 + 10 * MINUTE)),
        ("sessionizer.pipeline", b"s"),
        ("sessionizer.event_time_ms", str(T0).encode()),
        ("sessionizer.watermark_ms", str(T0 + 10 * MINUTE).encode()),
        ("sessionizer.reason_code", b"behind_watermark"),
    ]


# -- 6. dead letters -------------------------------------------------------------------------------


def dead_lettered(a: Instance, message: FakeMessage) -> Produced:
    """``message`` read on its partition, assigned for it, and committed: the one dead letter it made."""
    a.assign((message.topic(), message.partition()))
    a.tasks.route([message])
    a.tasks.commit()
    [dead] = a.cluster.visible(DEAD)
    return dead


def where(record: Produced) -> dict[str, bytes]:
    """The dead letter's headers but its error."""
    headers = dict(record.headers)
    assert len(headers) == len(record.headers), "a header appears twice"
    headers.pop("sessionizer.error")
    return headers


@pytest.mark.parametrize(
    ("value", "error", "code"),
    [
        (b"\xff\xfe{not json", b"invalid JSON", b"invalid_json"),
        (b'[1, "two"]', b"expected a JSON object", b"not_an_object"),
        (None, b"empty value (tombstone)", b"invalid_json"),
    ],
    ids=["not JSON", "not an object", "tombstone"],
)
def test_a_record_the_source_stage_cannot_decode_is_dead_lettered_as_it_was(instance, cluster, value, error, code):
    a = instance()
    dead = dead_lettered(a, FakeMessage(SOURCE, 1, 7, value=value, key=b"\x00k\xff", timestamp_ms=T0))
    assert (dead.key, dead.value) == (b"\x00k\xff", value)
    assert dict(dead.headers)["sessionizer.error"].startswith(error)
    assert where(dead) == {
        "sessionizer.topic": b"events",
        "sessionizer.partition": b"1",
        "sessionizer.offset": b"7",
        "sessionizer.reason_code": code,
    }


@pytest.mark.parametrize(
    ("value", "error", "code"),
    [
        (b'{"ts": 1700000000000,  "amount": 1}', b"no key: field 'user_id' is missing or null", b"no_key"),
        (b'{"user_id": ["u1"], "ts": 1700000000000}', b"key field 'user_id' has type list", b"bad_key"),
        (b'{"user_id": "", "ts": 1700000000000}', b"key field 'user_id' is empty", b"bad_key"),
        (b'{"user_id": "u1", "ts": "yesterday"}', b"bad timestamp in 'ts'", b"bad_timestamp"),
        (b'{"user_id": "u1", "ts": 1700000000000, "amount": "lots"}', b"wrong type: aggregate 'total' needs a number in 'amount', got str", b"wrong_type"),
    ],
    ids=["no key", "key of the wrong type", "empty key", "unreadable time", "non-number aggregate"],
)
def test_a_record_the_pipeline_cannot_use_is_dead_lettered_as_it_was_naming_the_pipeline(instance, cluster, value, error, code):
    a = instance()
    dead = dead_lettered(a, FakeMessage(SOURCE, 0, 12, value=value, key=b"record-key", timestamp_ms=T0))
    assert (dead.key, dead.value) == (b"record-key", value)
    assert dict(dead.headers)["sessionizer.error"].startswith(error)
    assert where(dead) == {
        "sessionizer.topic": b"events",
        "sessionizer.partition": b"0",
        "sessionizer.offset": b"12",
        "sessionizer.pipeline": b"s",
        "sessionizer.reason_code": code,
    }
    assert framed(cluster.visible(REPARTITION)) == []


@pytest.mark.parametrize(
    ("key", "value", "error"),
    [
        (b"u1", b"\x01\x02\x03", b"unreadable repartition record"),
        (b"u1", DATA_FRAME.pack(DATA, T0, T0, S0) + b"{not json", b"unreadable repartition record"),
        (b"u1", None, b"unreadable repartition record: no value"),
        (None, b"\x02\x00", b"unreadable repartition record"),
        (None, PACK_HEAD.pack(PACKED, S0) + PACK_ENTRY.pack(T0, T0, 2, 40) + b'u1{"user_id": "u1"}', b"unreadable repartition record"),
        (None, PACK_HEAD.pack(PACKED, S0) + PACK_ENTRY.pack(T0, T0, 2, 9) + b"u1{not json", b"unreadable repartition record"),
    ],
    ids=["short frame", "frame of bytes that are not JSON", "no value", "short report", "pack cut short", "pack of bytes that are not JSON"],
)
def test_an_unreadable_repartition_record_is_dead_lettered_as_it_was(instance, cluster, key, value, error):
    a = instance()
    dead = dead_lettered(a, FakeMessage(REPARTITION, 1, 4, value=value, key=key))
    assert (dead.key, dead.value) == (key, value)
    assert dict(dead.headers)["sessionizer.error"].startswith(error)
    assert where(dead) == {
        "sessionizer.topic": REPARTITION.encode(),
        "sessionizer.partition": b"1",
        "sessionizer.offset": b"4",
        "sessionizer.pipeline": b"s",
        "sessionizer.reason_code": b"unreadable_frame",
    }
    assert a.window(1).counts().processed == 0


# -- a pipeline read directly (key = "@key") --------------------------------------------------------


@pytest.fixture
def direct(tmp_path):
    """Pipeline ``s`` grouped by the record key over ``web`` and ``mobile``, read directly; partition 0 of both assigned."""
    made = direct_instance(tmp_path)
    made.assign((WEB, 0), (MOBILE, 0))
    assert isinstance(made.window(0), DirectTask)
    yield made
    made.close()


def key_in(partition: int) -> bytes:
    """A record key Kafka's default partitioner puts in ``partition`` of 2."""
    return next(k for k in (f"user-{n}".encode() for n in range(100)) if partition_for(k, 2) == partition)


def test_a_record_in_the_wrong_partition_of_a_direct_task_is_dead_lettered_as_it_was(direct):
    key = key_in(1)
    value = b'{ "ts" : 1700000000000, "page":"caf\\u00e9" }'
    direct.tasks.route([FakeMessage(MOBILE, 0, 5, value=value, key=key, timestamp_ms=T0)])
    direct.tasks.commit()
    [dead] = direct.cluster.visible(DEAD)
    assert (dead.key, dead.value) == (key, value)
    assert dict(dead.headers)["sessionizer.error"].startswith(b"wrong partition")
    assert where(dead) == {
        "sessionizer.topic": b"mobile",
        "sessionizer.partition": b"0",
        "sessionizer.offset": b"5",
        "sessionizer.pipeline": b"s",
        "sessionizer.reason_code": b"wrong_partition",
    }


def test_a_direct_tasks_late_record_is_the_original_bytes_with_its_inputs_watermark(direct):
    key = key_in(0)
    late_body = b'{"ts":1700000000000 , "x": 1}'
    direct.tasks.route([FakeMessage(WEB, 0, 0, value=orjson.dumps({"ts": T0 + 5 * SECOND}), key=key, timestamp_ms=T0)])
    direct.tasks.route([FakeMessage(MOBILE, 0, 0, value=orjson.dumps({"ts": T0 + 3 * SECOND}), key=key, timestamp_ms=T0)])
    direct.tasks.route([FakeMessage(WEB, 0, 1, value=late_body, key=key, timestamp_ms=T0)])  # 5 s behind web, grace 1 s
    direct.tasks.commit()
    [late] = direct.cluster.visible(LATE)
    assert (late.key, late.value) == (key, late_body)
    assert list(late.headers) == [
        ("sessionizer.reason", too_late(T0, SECOND, T0 + 5 * SECOND)),
        ("sessionizer.pipeline", b"s"),
        ("sessionizer.event_time_ms", str(T0).encode()),
        ("sessionizer.stream_time_ms", str(T0 + 3 * SECOND).encode()),
        ("sessionizer.watermark_ms", str(T0 + 5 * SECOND).encode()),
        ("sessionizer.reason_code", b"behind_watermark"),
    ]
