"""TaskManager against fake Kafka clients and real RocksDB stores: commits, rebalances, failures.

One session pipeline reads ``events``; sessions close 10 minutes after their
last event (no grace). Every instance here shares one ``FakeCluster``, which
stands for the broker: its journal gives the order of the calls, its
transactions what became visible together.
"""

from __future__ import annotations

import orjson
from confluent_kafka import OFFSET_INVALID, KafkaError, KafkaException, Message
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.partitioner import partition_for
from service.core.watermarks import source_id
from service.runtime.ends import END_MARGIN_MS
from service.runtime.frames import DATA, DATA_FRAME, report
from service.runtime.tasks import SourceTask, TaskState, WindowTask
from tests.fakes import FakeMessage, eof
from tests.helpers import framed, is_report, pipeline, session_window
from tests.unit.runtime.instances import event

SOURCE = "events"
REPARTITION = "sessionizer-s-repartition"
CHANGELOG = "sessionizer-s-changelog"
OUTPUT = "out"

T0 = 1_700_000_000_000
MINUTE = 60_000

ABORTABLE = KafkaError(KafkaError.INVALID_TXN_STATE, "transaction must be aborted", txn_requires_abort=True)


#: Sessions of ``user_id`` in ``events``, closed 10 minutes after their last event (no grace).
PIPELINE = pipeline([SOURCE], session_window("10m", "0s"), output=OUTPUT, time_format="epoch_ms")
PARTITIONS = {SOURCE: 1, REPARTITION: 2, CHANGELOG: 2}


def source_record(offset: int, user: str, at_ms: int) -> FakeMessage:
    return FakeMessage(SOURCE, 0, offset, value=event(user, at_ms), timestamp_ms=at_ms)


def repartition_record(offset: int, user: str, at_ms: int) -> FakeMessage:
    return FakeMessage(
        REPARTITION, 0, offset, key=user.encode(), value=frame(at_ms, at_ms) + event(user, at_ms), timestamp_ms=at_ms
    )


def frame(at_ms: int, watermark: int) -> bytes:
    """A data frame from source partition 0 of the pipeline's only source."""
    return DATA_FRAME.pack(DATA, at_ms, watermark, source_id(0, 0))


def events(records):
    """The records that are not watermark reports (``service.runtime.frames``)."""
    return [r for r in records if not (r.topic == REPARTITION and is_report(r))]


def reports(records):
    return [r for r in records if r.topic == REPARTITION and is_report(r)]


def sessions(records) -> list[tuple[bytes, int, int, int]]:
    """(key, start, end, count) of each output record."""
    out = []
    for r in records:
        value = orjson.loads(r.value)["value"]
        out.append((r.key, value["session_start_ms"], value["session_end_ms"], value["event_count"]))
    return out


def journal_spy(task: WindowTask, journal: list[str], monkeypatch) -> None:
    """Write "store.apply" into the cluster's journal when the task writes a committed batch to its store.

    The task is spied on, not the store: ``bench/compiled.py`` compiles the store with mypyc, whose
    instances take no new attributes.
    """
    post_commit = task.post_commit

    def spy():
        if task._pending is not None:  # post_commit applies it
            journal.append("store.apply")
        post_commit()

    monkeypatch.setattr(task, "post_commit", spy)


# u1 has a session of two events; u2's event 20 minutes on closes it (10 minutes gap, no grace).
FIRST_BATCH = [
    repartition_record(0, "u1", T0),
    repartition_record(1, "u1", T0 + MINUTE),
    repartition_record(2, "u2", T0 + 20 * MINUTE),
]


# -- assignment and restoring ------------------------------------------------------


def test_assignment_makes_a_task_per_partition_and_restores_window_partitions_while_paused(instance):
    a = instance()
    a.assign((SOURCE, 0), (SOURCE, 1), (REPARTITION, 0), (REPARTITION, 1))

    assert set(a.tasks.source_tasks) == {(SOURCE, 0), (SOURCE, 1)}
    assert all(isinstance(t, SourceTask) for t in a.tasks.source_tasks.values())
    assert set(a.tasks.window_tasks) == {("s", 0), ("s", 1)}
    assert all(isinstance(t, WindowTask) for t in a.tasks.window_tasks.values())
    assert {(tp.topic, tp.partition) for tp in a.consumer.assignment()} == {
        (SOURCE, 0),
        (SOURCE, 1),
        (REPARTITION, 0),
        (REPARTITION, 1),
    }
    # Window partitions are paused for the restore; an empty changelog (watermarks 0, 0)
    # restores at once, and they are resumed. Source partitions are never paused.
    assert a.consumer.pauses == [(REPARTITION, 0), (REPARTITION, 1)]
    assert sorted(a.consumer.resumes) == [(REPARTITION, 0), (REPARTITION, 1)]
    assert a.consumer.paused == set()
    assert [t.state for t in a.tasks.window_tasks.values()] == [TaskState.RUNNING, TaskState.RUNNING]
    assert not a.tasks.restoring


def test_a_new_instance_restores_committed_state_from_the_changelog_before_processing(instance, cluster):
    a = instance("a")
    a.assign((REPARTITION, 0))
    a.tasks.route(FIRST_BATCH[:2])
    a.tasks.commit()
    assert len(cluster.visible(CHANGELOG)) == 3  # u1's sessions, stream time, the sources' watermarks

    b = instance("b")  # its own, empty state directory
    b.assign((REPARTITION, 0))
    task = b.window()
    assert task.state is TaskState.RESTORING
    assert b.consumer.paused == {(REPARTITION, 0)}
    assert [(tp.topic, tp.partition) for tp in b.restore_consumer.assignment()] == [(CHANGELOG, 0)]

    # A record fetched before the pause is not processed: its partition is sought back to it.
    b.tasks.route([repartition_record(2, "u2", T0 + 20 * MINUTE)])
    assert b.consumer.seeks == [(REPARTITION, 0, 2)]
    assert not b.tasks.checkpoint
    assert task.counts().processed == 0

    b.restore_consumer.feed(*cluster.messages(CHANGELOG), eof(CHANGELOG, 0, cluster.end((CHANGELOG, 0))))
    b.tasks.restore()

    assert task.state is TaskState.RUNNING
    assert b.consumer.paused == set()
    assert task.store.peek(b"u1") == a.window().store.peek(b"u1")
    assert len(task.store.peek(b"u1")) == 1
    assert task.store.stream_time == T0 + MINUTE
    assert task.counts().restored == 3  # u1's sessions, stream time, the sources' watermarks


# -- routing and committing ----------------------------------------------------------


def test_a_source_record_goes_to_the_repartition_topic_keyed_by_its_grouping_key_with_the_frame(instance, cluster):
    a = instance()
    a.assign((SOURCE, 0))
    a.tasks.route([source_record(7, "u1", T0)])
    a.tasks.commit()

    [transaction] = cluster.transactions
    [record] = events(transaction.records)
    assert record.topic == REPARTITION
    # Packed (service.runtime.frames): in the partition the producer would pick for the key.
    assert record.partition == partition_for(b"u1", PARTITIONS[REPARTITION])
    assert framed([record]) == [(b"u1", T0, T0, source_id(0, 0), event("u1", T0))]
    assert transaction.offsets == {(SOURCE, 0): 8}
    # In the same transaction, after the frame: the source's watermark, to every repartition partition.
    assert [(r.partition, r.value) for r in reports(transaction.records)] == [
        (p, report(T0, source_id(0, 0), idle=False)) for p in (0, 1)
    ]
    # Source offsets are never purged: the topic is not ours.
    assert a.tasks.checkpoint.purgeable == {}


def test_an_unreadable_source_record_goes_to_the_dead_letter_topic(instance, cluster):
    a = instance()
    a.assign((SOURCE, 0))
    a.tasks.route([FakeMessage(SOURCE, 0, 3, value=b"not json", key=b"k")])
    a.tasks.commit()
    [record] = events(cluster.transactions[0].records)
    assert record.topic == a.config.pipelines[0].dead_letter_topic
    assert (record.key, record.value) == (b"k", b"not json")
    assert dict(record.headers)["sessionizer.offset"] == b"3"
    assert dict(record.headers)["sessionizer.reason_code"] == b"invalid_json"
    assert cluster.group_offsets == {(SOURCE, 0): 4}
    assert a.stats.source_dead_letters == {(record.topic, "invalid_json"): 1}


def test_an_unreadable_repartition_record_is_an_unreadable_frame(instance, cluster):
    a = instance()
    a.assign((REPARTITION, 0))
    a.tasks.route([FakeMessage(REPARTITION, 0, 0, key=b"u1", value=b"\x01short")])
    a.tasks.commit()
    [record] = [r for r in events(cluster.transactions[0].records) if r.topic == a.config.pipelines[0].dead_letter_topic]
    assert dict(record.headers)["sessionizer.reason_code"] == b"unreadable_frame"
    counts = a.tasks.task_counts()[("s", 0)]
    assert (counts.dead_lettered, counts.dead_letter_reasons) == (1, {"unreadable_frame": 1})


def test_a_commit_sends_closed_sessions_changelog_and_offsets_in_one_transaction_in_order(instance, cluster, monkeypatch):
    a = instance()
    a.assign((REPARTITION, 0))
    task = a.window()
    journal_spy(task, cluster.journal, monkeypatch)

    a.tasks.route(FIRST_BATCH)
    assert cluster.records == []
    a.tasks.commit()

    [transaction] = cluster.transactions
    outputs = [r for r in transaction.records if r.topic == OUTPUT]
    changelog = [r for r in transaction.records if r.topic == CHANGELOG]
    assert sessions(outputs) == [(b"u1", T0, T0 + MINUTE, 2)]
    # One changelog record per changed key (u1 closed: a tombstone), then stream time and the sources' watermarks.
    assert [(r.key, r.value is None) for r in changelog] == [
        (b"wu1", True),
        (b"wu2", False),
        (b"mstream_time", False),
        (b"mwatermarks", False),
    ]
    assert transaction.offsets == {(REPARTITION, 0): 3}

    # The checkpoint docstring's order: output and changelog records, offsets, commit, then the store.
    journal = cluster.journal
    last_output = max(i for i, call in enumerate(journal) if call == f"produce {OUTPUT}")
    changelog_calls = [i for i, call in enumerate(journal) if call == f"produce {CHANGELOG}"]
    assert last_output < changelog_calls[0]
    assert changelog_calls[-1] < journal.index("send_offsets_to_transaction")
    assert journal.index("send_offsets_to_transaction") < journal.index("commit_transaction")
    assert journal.index("commit_transaction") < journal.index("store.apply")

    # The store holds the committed state, checkpointed at the changelog's last record.
    assert task.store.checkpoint == changelog[-1].offset + 1
    assert task.store.peek(b"u1") == []
    assert len(task.store.peek(b"u2")) == 1
    assert a.tasks.checkpoint.purgeable == {(REPARTITION, 0): 3}
    assert not a.tasks.checkpoint
    assert a.stats.commits == 1


def test_committed_state_is_on_disk_when_the_store_is_reopened(instance):
    a = instance()
    a.assign((REPARTITION, 0))
    path = a.window().state_manager.path
    a.tasks.route(FIRST_BATCH)
    a.tasks.commit()
    a.tasks.close()

    with a.reopened(path) as store:
        assert store.peek(b"u1") == []
        [session] = store.peek(b"u2")
        assert (session.start, session.end, session.count) == (T0 + 20 * MINUTE, T0 + 20 * MINUTE, 1)
        assert store.stream_time == T0 + 20 * MINUTE
        assert store.checkpoint == 4


def test_a_commit_with_nothing_new_writes_nothing(instance, cluster):
    a = instance()
    a.assign((SOURCE, 0), (REPARTITION, 0))
    a.tasks.commit()
    assert "commit_transaction" not in cluster.journal
    assert a.stats.commits == 0


def test_at_least_once_commits_offsets_after_the_records_and_the_state(instance, cluster, monkeypatch):
    a = instance(guarantee="at_least_once")
    a.assign((REPARTITION, 0))
    journal_spy(a.window(), cluster.journal, monkeypatch)
    a.tasks.route(FIRST_BATCH)
    a.tasks.commit()

    journal = cluster.journal
    assert journal.index("flush") < journal.index("store.apply") < journal.index("consumer.commit")
    assert "commit_transaction" not in journal
    assert sessions(cluster.visible(OUTPUT)) == [(b"u1", T0, T0 + MINUTE, 2)]
    assert cluster.group_offsets == {(REPARTITION, 0): 3}
    assert a.window().store.checkpoint == 4


def test_purging_deletes_committed_repartition_records(instance):
    a = instance()
    a.assign((SOURCE, 0), (REPARTITION, 0))
    a.purge_due()
    a.tasks.route([source_record(0, "u9", T0), *FIRST_BATCH])
    a.tasks.commit()
    assert a.admin.deleted == [(REPARTITION, 0, 3)]
    assert a.tasks.checkpoint.purgeable == {}


# -- failures --------------------------------------------------------------------------


def test_a_failed_commit_aborts_rolls_back_and_seeks_every_partition_to_its_committed_offset(instance, cluster):
    a = instance()
    a.assign((SOURCE, 0), (REPARTITION, 0))
    task = a.window()
    a.tasks.route(FIRST_BATCH)
    a.tasks.commit()
    assert cluster.group_offsets == {(REPARTITION, 0): 3}

    # u3 opens a session and u4's event 45 minutes on closes u2's and u3's: nothing of it commits.
    second = [repartition_record(3, "u3", T0 + 21 * MINUTE), repartition_record(4, "u4", T0 + 45 * MINUTE)]
    a.tasks.route([source_record(0, "u5", T0), *second])
    a.producer.fail("commit_transaction", ABORTABLE)
    a.tasks.commit()

    assert len(cluster.transactions) == 1
    assert len(cluster.aborted) == 1
    assert sessions(cluster.visible(OUTPUT)) == [(b"u1", T0, T0 + MINUTE, 2)]
    # The store is back at the last commit.
    assert task.store.peek(b"u3") == []
    assert task.store.peek(b"u4") == []
    assert len(task.store.peek(b"u2")) == 1
    assert task.store.stream_time == T0 + 20 * MINUTE
    assert task.store.checkpoint == 4
    assert not a.tasks.checkpoint
    # Every partition goes back to its committed offset (the source has none yet: where it started).
    assert sorted(a.consumer.seeks) == [(SOURCE, 0, 0), (REPARTITION, 0, 3)]
    assert a.stats.aborts == 1

    # Read again, the same records commit once.
    a.tasks.route([source_record(0, "u5", T0), *second])
    a.tasks.commit()
    assert sorted(sessions(cluster.visible(OUTPUT))) == [
        (b"u1", T0, T0 + MINUTE, 2),
        (b"u2", T0 + 20 * MINUTE, T0 + 20 * MINUTE, 1),
        (b"u3", T0 + 21 * MINUTE, T0 + 21 * MINUTE, 1),
    ]
    assert len(events(cluster.visible(REPARTITION))) == 1
    assert cluster.group_offsets == {(SOURCE, 0): 1, (REPARTITION, 0): 5}


def test_a_commit_that_hung_but_went_through_is_read_back_from_the_changelog(instance, cluster):
    """The broker committed, the answer never came: after the abort the store must hold that commit.

    Rolling back would lose its state changes while its output and offsets
    stand; so the task restores its changelog's tail before going on.
    """
    a = instance()
    a.assign((REPARTITION, 0))
    task = a.window()
    a.tasks.committer.commit_timeout = 0.01
    a.producer.hang_after_commit()
    a.tasks.route(FIRST_BATCH)
    a.tasks.commit()  # hangs after committing: CommitFailed, abort, producer replaced
    a.producers.made[0].release()
    assert len(cluster.transactions) == 1  # it did commit
    assert len(a.producers.made) == 2
    assert task.state is TaskState.RESTORING
    assert task.store.peek(b"u2") == []  # rolled back for now...
    a.restore_consumer.feed(*cluster.messages(CHANGELOG), eof(CHANGELOG, 0, cluster.end((CHANGELOG, 0))))
    a.tasks.restore()
    assert task.state is TaskState.RUNNING
    assert len(task.store.peek(b"u2")) == 1  # ...and read back from the changelog
    assert task.store.stream_time == T0 + 20 * MINUTE
    # The records it consumed are not read again: their offsets committed with them.
    assert a.consumer.seeks == [(REPARTITION, 0, 3)]


def test_a_rewind_without_committed_offsets_goes_back_to_where_reading_started(instance):
    """With auto.offset.reset = "latest" the first read is at the end: a failed first commit rewinds there, not to the start."""
    a = instance(kafka={"consumer": {"auto.offset.reset": "latest"}})
    a.assign((SOURCE, 0))
    # The consumer started at the end of the topic (offset 1000), as "latest" says.
    a.tasks.route([source_record(1000, "u1", T0)])
    a.producer.fail("commit_transaction", ABORTABLE)
    a.tasks.commit()
    [(topic, partition, offset)] = a.consumer.seeks
    assert (topic, partition) == (SOURCE, 0)
    assert offset == 1000, "rewound elsewhere than where the consumer started reading"


def test_committed_offsets_the_broker_does_not_give_are_left_to_the_consumer_by_assigning_again(instance, monkeypatch):
    """After a broker restart ``committed`` timed out for minutes while the loop, blocked on it, could
    not serve the rebalance the consumer waited for. Past its patience the rewind assigns the
    partitions again with no offset (the consumer then starts them at their committed offsets) and
    pauses again the ones held; the loop goes on."""
    a = instance()
    a.assign((SOURCE, 0), (REPARTITION, 0))
    a.tasks.route(FIRST_BATCH)
    a.tasks.alignment.hold([(REPARTITION, 0)], "ahead")

    def unreachable(partitions, timeout=None):
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "Failed to get committed offsets: Local: Timed out"))

    monkeypatch.setattr(a.consumer, "committed", unreachable)
    pauses = len(a.consumer.pauses)
    a.tasks.seek_to_committed(patience=0)

    assert a.consumer.seeks == []
    assert {(tp.topic, tp.partition) for tp in a.consumer.assignment()} == {(SOURCE, 0), (REPARTITION, 0)}
    assert a.consumer.pauses[pauses:] == [(REPARTITION, 0)], "a held partition stays paused"
    # Where the consumer will start is not known here: nothing it hands over is taken for a re-delivery.
    a.tasks.alignment.release([(REPARTITION, 0)], "ahead")
    a.tasks.route(FIRST_BATCH)
    assert a.stats.redelivered == 0
    counts = a.window().counts()
    assert counts.processed + counts.late == 6, "the batch was taken again (its state was not rolled back here: late now)"


def test_a_restore_asks_for_the_changelogs_offsets_again_while_the_broker_is_away(instance, monkeypatch):
    """A restore that began during a broker restart stopped the service: its offsets were asked for
    up to 30 s and only while the partition had no leader, not while the broker was unreachable
    (seen: ``_TRANSPORT``, ``_DESTROY_BROKER``). They are asked for again until the broker answers."""
    import service.runtime.changelog_reader as changelog_reader

    a = instance()
    failures = [KafkaError(KafkaError._TRANSPORT, "Connection refused"), KafkaError(KafkaError._DESTROY_BROKER, "destroyed")]
    answer = a.restore_consumer.get_watermark_offsets

    def away_then_back(partition, timeout=None, cached=False):
        if failures:
            raise KafkaException(failures.pop(0))
        return answer(partition, timeout, cached)

    monkeypatch.setattr(a.restore_consumer, "get_watermark_offsets", away_then_back)
    monkeypatch.setattr(changelog_reader.time, "sleep", lambda seconds: None)
    a.assign((REPARTITION, 0), (REPARTITION, 1))

    assert failures == []
    assert [t.state for t in a.tasks.window_tasks.values()] == [TaskState.RUNNING, TaskState.RUNNING]


def test_a_fatal_commit_error_replaces_the_producer_and_the_next_commit_goes_through(instance, cluster):
    a = instance()
    a.assign((REPARTITION, 0))
    a.tasks.route(FIRST_BATCH)
    a.producer.fail("commit_transaction", KafkaError(KafkaError._FENCED, "fenced", fatal=True))
    a.tasks.commit()
    assert len(a.producers.made) == 2
    assert cluster.records == []
    assert a.window().store.peek(b"u2") == []

    a.tasks.route(FIRST_BATCH)
    a.tasks.commit()
    assert sessions(cluster.visible(OUTPUT)) == [(b"u1", T0, T0 + MINUTE, 2)]


# -- rebalances ---------------------------------------------------------------------------


def test_revoking_commits_then_closes_the_revoked_tasks(instance, cluster):
    a = instance()
    a.assign((SOURCE, 0), (REPARTITION, 0), (REPARTITION, 1))
    path = a.window(0).state_manager.path
    a.tasks.route([source_record(0, "u9", T0), *FIRST_BATCH])

    a.revoke((SOURCE, 0), (REPARTITION, 0))

    [transaction] = cluster.transactions
    assert transaction.offsets == {(SOURCE, 0): 1, (REPARTITION, 0): 3}
    assert sessions(r for r in transaction.records if r.topic == OUTPUT) == [(b"u1", T0, T0 + MINUTE, 2)]
    assert set(a.tasks.source_tasks) == set()
    assert set(a.tasks.window_tasks) == {("s", 1)}
    # The revoked store was closed (RocksDB lets it be opened again) holding the commit.
    with a.reopened(path) as store:
        assert len(store.peek(b"u2")) == 1


def test_a_revoked_partitions_counts_are_kept_when_it_is_assigned_again(instance, cluster):
    a = instance()
    a.assign((REPARTITION, 0))
    a.tasks.route(FIRST_BATCH[:2])
    a.tasks.commit()
    assert a.tasks.task_counts()[("s", 0)].processed == 2

    a.revoke((REPARTITION, 0))
    assert a.tasks.window_tasks == {}
    assert a.tasks.task_counts()[("s", 0)].processed == 2

    a.assign((REPARTITION, 0))
    # The store is checkpointed at the changelog's last record; the commit marker follows.
    a.restore_consumer.feed(eof(CHANGELOG, 0, cluster.end((CHANGELOG, 0))))
    a.tasks.restore()
    assert a.window().state is TaskState.RUNNING
    assert a.tasks.task_counts()[("s", 0)].processed == 2

    a.tasks.route([FIRST_BATCH[2]])
    assert a.tasks.task_counts()[("s", 0)].processed == 3
    assert a.tasks.task_counts()[("s", 0)].emitted == 0
    a.tasks.commit()
    assert a.tasks.task_counts()[("s", 0)].emitted == 1


def test_a_partition_revoked_mid_restore_is_dropped(instance, cluster):
    a = instance("a")
    a.assign((REPARTITION, 0))
    a.tasks.route(FIRST_BATCH[:2])
    a.tasks.commit()

    b = instance("b")
    b.assign((REPARTITION, 0))
    assert b.tasks.restoring
    b.restore_consumer.feed(*cluster.messages(CHANGELOG)[:1])
    b.tasks.restore()
    assert b.tasks.restoring

    b.revoke((REPARTITION, 0))

    assert not b.tasks.restoring
    assert b.restore_consumer.assignment() == []
    assert b.tasks.window_tasks == {}
    assert b.tasks.task_counts()[("s", 0)].restored == 1
    assert len(cluster.transactions) == 1  # nothing new to commit


def test_a_commit_failing_on_revoke_rolls_back_and_still_closes_the_tasks(instance, cluster):
    a = instance()
    a.assign((SOURCE, 0), (REPARTITION, 0))
    path = a.window().state_manager.path
    a.tasks.route([source_record(0, "u9", T0), *FIRST_BATCH])
    a.producer.fail("commit_transaction", ABORTABLE)

    a.revoke((SOURCE, 0), (REPARTITION, 0))

    assert cluster.transactions == []
    assert len(cluster.aborted) == 1
    assert a.tasks.window_tasks == {} and a.tasks.source_tasks == {}
    assert not a.tasks.checkpoint
    with a.reopened(path) as store:
        assert store.peek(b"u2") == []
        assert store.checkpoint is None


def test_losing_partitions_aborts_without_committing(instance, cluster):
    a = instance()
    a.assign((SOURCE, 0), (REPARTITION, 0))
    path = a.window().state_manager.path
    a.tasks.route([source_record(0, "u9", T0), *FIRST_BATCH])

    a.lose((REPARTITION, 0))

    assert "commit_transaction" not in cluster.journal
    assert cluster.transactions == []
    assert len(cluster.aborted) == 1
    assert cluster.records == []
    assert a.tasks.window_tasks == {}
    assert set(a.tasks.source_tasks) == {(SOURCE, 0)}
    assert not a.tasks.checkpoint
    # The partition still held is read again from where it started (nothing is committed yet),
    # once out of the rebalance callback: the next batch, fetched before, is dropped for it.
    assert a.consumer.seeks == []
    a.tasks.route([source_record(1, "u8", T0)])
    assert a.consumer.seeks == [(SOURCE, 0, 0)]
    assert cluster.journal.count("produce sessionizer-s-repartition") == 1, "only the lost batch's frame, never the dropped one's"
    # Nothing of the lost batch reached the store; the task's counts are kept.
    assert a.tasks.task_counts()[("s", 0)].processed == 3
    with a.reopened(path) as store:
        assert store.peek(b"u1") == []
        assert store.stream_time is None


def test_a_commit_that_fails_in_a_revocation_rewinds_after_the_callback_never_inside_it(instance, cluster):
    """Reading committed offsets, or assigning partitions again when they cannot be read, inside a
    rebalance callback can hold the rebalance (and the loop) for minutes: the rewind waits for the next batch."""
    a = instance()
    a.assign((SOURCE, 0), (REPARTITION, 0))
    a.tasks.route([source_record(0, "u9", T0), *FIRST_BATCH])
    a.producer.fail("commit_transaction", ABORTABLE)
    asked: list[object] = []
    committed = a.consumer.committed
    a.consumer.committed = lambda partitions, timeout=None: asked.append(partitions) or committed(partitions, timeout)  # type: ignore[method-assign]
    a.revoke((REPARTITION, 0))
    assert len(cluster.aborted) == 1
    assert asked == [] and a.consumer.seeks == [], "nothing asked of the group coordinator inside the callback"
    a.tasks.route([source_record(1, "u8", T0)])  # fetched before the rewind: dropped
    assert len(asked) == 1
    assert a.consumer.seeks == [(SOURCE, 0, 0)]
    a.tasks.route([source_record(0, "u9", T0)])
    a.tasks.commit()
    assert cluster.group_offsets == {(SOURCE, 0): 1}


def test_records_handed_over_again_are_processed_once_and_a_partition_wholly_behind_is_sought_forward(instance, cluster):
    """librdkafka 2.16 re-delivered a partition from its start after a pause and resume near an assignment.

    Seen on a real broker (three source topics, alignment pausing a partition
    that had run ahead): without this, those records were counted twice.
    """
    a = instance()
    a.assign((SOURCE, 0), (REPARTITION, 0))
    window = a.window()
    a.tasks.route(FIRST_BATCH)
    a.tasks.route([source_record(0, "u5", T0), source_record(1, "u5", T0)])

    # The same records again, and a batch that straddles the position.
    a.tasks.route(FIRST_BATCH)
    assert a.consumer.seeks == [(REPARTITION, 0, 3)], "wholly behind: sought to where it should be"
    a.tasks.route([source_record(1, "u5", T0), source_record(2, "u6", T0)])
    a.tasks.route([repartition_record(3, "u3", T0 + 21 * MINUTE)])
    a.tasks.commit()

    assert window.counts().processed == 4
    assert a.stats.redelivered == 4
    assert cluster.group_offsets == {(SOURCE, 0): 3, (REPARTITION, 0): 4}
    # Source offsets 0, 1 and 2 went to the repartition topic once each.
    assert [f[0] for f in framed(events(cluster.visible(REPARTITION)))] == [b"u5", b"u5", b"u6"]
    assert sessions(cluster.visible(OUTPUT)) == [(b"u1", T0, T0 + MINUTE, 2)]


def test_a_seek_back_reads_the_records_again(instance, cluster):
    """Not every offset below the last one processed is a re-delivery: after a rewind they must be read."""
    a = instance()
    a.assign((REPARTITION, 0))
    a.tasks.route(FIRST_BATCH)
    a.producer.fail("commit_transaction", ABORTABLE)
    a.tasks.commit()  # aborted: sought back to 0 (nothing committed)
    a.tasks.route(FIRST_BATCH)
    a.tasks.commit()
    assert a.stats.redelivered == 0
    assert sessions(cluster.visible(OUTPUT)) == [(b"u1", T0, T0 + MINUTE, 2)]
    assert cluster.group_offsets == {(REPARTITION, 0): 3}


# -- end of partition and punctuation ------------------------------------------------------


def test_a_source_reports_at_once_when_it_goes_quiet_then_once_a_second_while_it_stays_quiet(instance, cluster):
    a = instance()
    a.assign((SOURCE, 0))
    a.admin.ends = {(SOURCE, 0): 8}
    a.tasks.route([source_record(7, "u1", T0), eof(SOURCE, 0, 8)])
    a.tasks.commit()  # with new data: the busy report (test_a_source_record_goes_to_the_repartition_topic_...)
    a.tick(0)
    a.tick(times=a.config.idle_timeout_ms // 1000 + 1)  # until the answer to the request sent idle_timeout after the first
    a.tasks.commit()
    bound = T0 + a.config.idle_timeout_ms - END_MARGIN_MS
    quiet = [(p, report(bound, source_id(0, 0), idle=True)) for p in (0, 1)]
    assert [(r.partition, r.value) for r in reports(cluster.transactions[-1].records)] == quiet, "at once, to every repartition partition"
    committed = len(cluster.transactions)
    a.now += 0.5
    a.tasks.commit()
    assert len(cluster.transactions) == committed, "nothing new to say within the second"
    a.tick(0.5)
    a.tasks.commit()
    quiet = [(p, report(bound + 1_000, source_id(0, 0), idle=True)) for p in (0, 1)]
    assert [(r.partition, r.value) for r in reports(cluster.transactions[-1].records)] == quiet, "a second on, its bound a second on"


def test_end_of_partition_events_mark_a_source_caught_up_until_more_records_come(instance):
    """For alignment only (an input read to its end does not hold the others); quiet is the broker's to say."""
    a = instance()
    a.assign((SOURCE, 0), (REPARTITION, 0))
    source = a.tasks.source_tasks[(SOURCE, 0)]
    assert not source.caught_up

    a.tasks.route([eof(SOURCE, 0, 0), eof(REPARTITION, 0, 0)])
    assert source.caught_up

    a.tasks.route([source_record(0, "u1", T0), repartition_record(0, "u1", T0)])
    assert not source.caught_up

    # In one batch, the end follows the records: it is applied after them.
    a.tasks.route([source_record(1, "u1", T0), eof(SOURCE, 0, 2)])
    assert source.caught_up


def test_a_quiet_sources_reports_close_a_quiet_users_session_on_the_wall_clock(instance, cluster):
    a = instance()
    a.assign((SOURCE, 0), (REPARTITION, 0))
    window = a.window()
    a.admin.ends = {(SOURCE, 0): 0}
    a.tasks.route([repartition_record(0, "u1", T0), eof(REPARTITION, 0, 1), eof(SOURCE, 0, 0)])
    a.tick(0)
    a.tick(times=a.config.idle_timeout_ms // 1000 - 1)
    a.tasks.commit()
    assert reports(cluster.visible(REPARTITION)) == [], "not quiet for the idle timeout yet: nothing to say"
    assert window.store.stream_time == T0

    delivered = 1

    def deliver() -> None:
        """The window task reads what the source task reported to repartition partition 0."""
        nonlocal delivered
        new = [r for r in reports(cluster.visible(REPARTITION)) if r.partition == 0][delivered - 1 :]
        batch = [FakeMessage(REPARTITION, 0, delivered + n, key=None, value=r.value) for n, r in enumerate(new)]
        delivered += len(new)
        a.tasks.route([*batch, eof(REPARTITION, 0, delivered)])

    for _ in range(11 * 60):  # the source stays quiet; its reports reach the window task
        a.tick()
        a.tasks.commit()
        deliver()
    a.tick(0)
    assert window.store.stream_time == T0 + (11 * 60 + a.config.idle_timeout_ms // 1000 - 2) * 1000 - END_MARGIN_MS
    a.tasks.commit()
    assert sessions(cluster.visible(OUTPUT)) == [(b"u1", T0, T0, 1)]

    # The reports stop (the source's reader died): stream time stays where they left it.
    before = window.store.stream_time
    a.lose((SOURCE, 0))
    a.tick(times=60)
    assert window.store.stream_time == before


def test_a_quiet_users_session_closes_within_the_promised_delay_after_its_close_time(instance, cluster):
    """docs/semantics.md, "Closing latency": when the whole stream is quiet, a session closes at
    most the bound's margin (END_MARGIN_MS) plus a request interval and the report's commit
    after its close time, and never before it. The clock is the test's, so the bound is exact.
    """
    a = instance()
    a.assign((SOURCE, 0), (REPARTITION, 0))
    a.admin.ends = {(SOURCE, 0): 0}
    a.tasks.route([repartition_record(0, "u1", T0), eof(REPARTITION, 0, 1), eof(SOURCE, 0, 0)])
    close_ms = T0 + 10 * 60_000  # the last event, plus gap (10 minutes), plus grace (none)
    interval_ms = a.config.punctuate_interval_ms
    delivered = 1
    emitted_at = None
    for _ in range(12 * 60):
        a.tick(interval_ms / 1000)
        a.tasks.commit()
        new = [r for r in reports(cluster.visible(REPARTITION)) if r.partition == 0][delivered - 1 :]
        batch = [FakeMessage(REPARTITION, 0, delivered + n, key=None, value=r.value) for n, r in enumerate(new)]
        delivered += len(new)
        a.tasks.route([*batch, eof(REPARTITION, 0, delivered)])
        a.tick(0)
        a.tasks.commit()
        if sessions(cluster.visible(OUTPUT)):
            emitted_at = T0 + round((a.now - 1_000) * 1000)
            break
    assert emitted_at is not None, "the session never closed"
    assert emitted_at > close_ms, "never before its close time"
    assert emitted_at - close_ms <= END_MARGIN_MS + 2 * interval_ms, emitted_at - close_ms


class _Unanswered:
    """A partition ``committed`` returns with an error instead of an offset (the coordinator could not answer for it)."""

    def __init__(self, tp, error):
        self.topic, self.partition, self.offset, self.error = tp.topic, tp.partition, OFFSET_INVALID, error


def test_a_partition_the_coordinator_cannot_answer_for_is_not_taken_for_nothing_committed(instance, monkeypatch):
    """Seen in CI after a broker restart: ``committed`` came back with per-partition errors and no
    offsets, the rewind took that for "nothing committed" and went back to where this member had
    started reading, and records already committed were processed (and their sessions emitted) twice.
    Such an answer is retried like a failed request; the rewind lands on the committed offset."""
    a = instance()
    a.assign((REPARTITION, 0))
    a.tasks.route(FIRST_BATCH)
    a.tasks.commit()  # committed: FIRST_BATCH is done
    a.tasks.route([repartition_record(len(FIRST_BATCH), "u9", T0 + 21 * MINUTE)])
    a.producer.fail("commit_transaction", ABORTABLE)
    real = a.consumer.committed
    answers = []

    def loading(partitions, timeout=None):
        if not answers:
            answers.append("error")
            return [_Unanswered(tp, KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS)) for tp in partitions]
        answers.append("offsets")
        return real(partitions, timeout)

    monkeypatch.setattr(a.consumer, "committed", loading)
    monkeypatch.setattr("service.runtime.positions.time.sleep", lambda seconds: None)
    a.tasks.commit()
    assert answers == ["error", "offsets"]
    assert a.consumer.seeks == [(REPARTITION, 0, len(FIRST_BATCH))], "rewound before the committed offset"


# -- a batch by partition ---------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 2), st.booleans()), max_size=40))
def test_a_batch_is_grouped_by_partition_in_order_whatever_the_runs(draws):
    """``_group`` appends to the current run's partition without a lookup: runs that break and
    resume, another topic's partition of the same number, and end-of-partition events between
    records must still give each partition its records in order."""
    from service.runtime.task_manager import _group

    messages = []
    for offset, (topic, number, end) in enumerate(draws):
        if end:
            messages.append(Message(topic=topic, partition=number, offset=offset, error=KafkaError(KafkaError._PARTITION_EOF)))
        else:
            messages.append(Message(topic=topic, partition=number, offset=offset, value=b"v"))
    groups, ends = _group(messages)
    expected: dict[tuple[str, int], list[int]] = {}
    for offset, (topic, number, end) in enumerate(draws):
        if not end:
            expected.setdefault((topic, number), []).append(offset)
    assert {where: [m.offset() for m in group] for where, group in groups.items()} == expected
    assert ends == [((topic, number), offset) for offset, (topic, number, end) in enumerate(draws) if end]
