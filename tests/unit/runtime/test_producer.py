"""TransactionalProducer (and the RecordCollector sending through it) against a fake producer:
transactions, failures, producer replacement, deliveries."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, TopicPartition

from service.errors import CommitFailed, DeliveryFailed, Fenced
from service.runtime.collector import RecordCollector
from service.runtime.producer import TransactionalProducer
from tests.fakes import FakeCluster, FakeGroupMetadata, Producers

SOURCE = "events"
CHANGELOG = "app-s-changelog"

RETRIABLE = KafkaError(KafkaError.COORDINATOR_NOT_AVAILABLE, "coordinator moving", retriable=True)
ABORTABLE = KafkaError(KafkaError.INVALID_TXN_STATE, "transaction must be aborted", txn_requires_abort=True)
FATAL = KafkaError(KafkaError._FENCED, "fenced by a newer instance", fatal=True)


@pytest.fixture
def producers():
    """The collector's producer factory: every producer it made, all on one cluster."""
    made = Producers(FakeCluster())
    yield made
    made.release()


def exactly_once(producers: Producers, successor=None) -> tuple[TransactionalProducer, RecordCollector]:
    """An exactly-once producer, initialised, and a collector sending through it."""
    producer = TransactionalProducer(producers, exactly_once=True, successor=successor)
    producer.init()
    return producer, RecordCollector(producer)


def at_least_once(producers: Producers) -> tuple[TransactionalProducer, RecordCollector]:
    producer = TransactionalProducer(producers, exactly_once=False)
    return producer, RecordCollector(producer)


def keys(records) -> list[bytes | None]:
    return [r.key for r in records]


OFFSETS = [TopicPartition(SOURCE, 0, 5)]


# -- exactly-once ---------------------------------------------------------------


def test_init_fences_and_opens_a_transaction(producers):
    exactly_once(producers)
    assert producers.current.init_calls == 1
    assert producers.current.in_transaction


def test_records_become_visible_with_the_offsets_when_the_transaction_commits(producers):
    producer, collector = exactly_once(producers)
    collector.send("out", b"a", b"1")
    collector.send("out", b"b", b"2")
    assert producers.cluster.records == []
    assert producers.cluster.group_offsets == {}

    producer.commit(OFFSETS, FakeGroupMetadata())

    [transaction] = producers.cluster.transactions
    assert keys(transaction.records) == [b"a", b"b"]
    assert transaction.offsets == {(SOURCE, 0): 5}
    assert keys(producers.cluster.visible("out")) == [b"a", b"b"]
    assert producers.cluster.group_offsets == {(SOURCE, 0): 5}
    assert collector.sent == 2
    # The next records go into a new transaction.
    assert producers.current.in_transaction


def test_aborted_records_never_become_visible(producers):
    producer, collector = exactly_once(producers)
    collector.send("out", b"dropped", b"1")
    producer.abort()
    collector.send("out", b"kept", b"2")
    producer.commit(OFFSETS, FakeGroupMetadata())
    assert keys(producers.cluster.visible("out")) == [b"kept"]
    assert keys(producers.cluster.aborted[0].records) == [b"dropped"]
    assert len(producers.made) == 1


def test_a_retriable_commit_error_is_retried(producers):
    producer, collector = exactly_once(producers)
    producers.current.fail("commit_transaction", RETRIABLE)
    collector.send("out", b"a", b"1")
    producer.commit(OFFSETS, FakeGroupMetadata())
    assert producers.cluster.journal.count("commit_transaction") == 2
    assert keys(producers.cluster.visible("out")) == [b"a"]


@pytest.mark.parametrize(
    ("call", "error"),
    [
        ("commit_transaction", ABORTABLE),
        ("commit_transaction", FATAL),
        # Offsets are sent once: even a retriable error gives the transaction up.
        ("send_offsets_to_transaction", RETRIABLE),
    ],
)
def test_a_failed_commit_raises_commit_failed_and_shows_nothing(producers, call, error):
    producer, collector = exactly_once(producers)
    producers.current.fail(call, error)
    collector.send("out", b"a", b"1")
    with pytest.raises(CommitFailed):
        producer.commit(OFFSETS, FakeGroupMetadata())
    assert producers.cluster.journal.count(call) == 1
    assert producers.cluster.records == []
    assert producers.cluster.group_offsets == {}


def test_an_abort_after_an_abortable_error_keeps_the_producer(producers):
    producer, collector = exactly_once(producers)
    producers.current.fail("commit_transaction", ABORTABLE)
    collector.send("out", b"a", b"1")
    with pytest.raises(CommitFailed):
        producer.commit(OFFSETS, FakeGroupMetadata())
    producer.abort()
    assert len(producers.made) == 1
    assert keys(producers.cluster.aborted[0].records) == [b"a"]
    assert producers.current.in_transaction


def test_a_fatal_error_on_abort_replaces_the_producer(producers):
    producer, collector = exactly_once(producers)
    first = producers.current
    first.fail("commit_transaction", FATAL)
    collector.send("out", b"lost", b"1")
    with pytest.raises(CommitFailed):
        producer.commit(OFFSETS, FakeGroupMetadata())

    producer.abort()

    assert len(producers.made) == 2
    replacement = producers.current
    assert producer.producer is replacement
    assert replacement.init_calls == 1
    assert replacement.in_transaction
    # A producer in a fatal state is not asked to abort (it answers _CONFLICT while its commit
    # is still in progress); the replacement's init aborts it, and its records stay invisible.
    assert producers.cluster.journal.count("abort_transaction") == 0
    collector.send("out", b"after", b"2")
    producer.commit(OFFSETS, FakeGroupMetadata())
    assert keys(producers.cluster.visible("out")) == [b"after"]


def test_a_fatal_error_met_by_abort_itself_replaces_the_producer(producers):
    producer, collector = exactly_once(producers)
    producers.current.fail("abort_transaction", FATAL)
    collector.send("out", b"lost", b"1")
    producer.abort()
    assert len(producers.made) == 2
    assert producers.current.in_transaction


def test_fenced_while_another_process_with_this_instance_id_is_in_the_group_it_steps_down(producers):
    """Replacing the producer would fence that process in turn: instead this one stops."""
    asked = []
    producer, collector = exactly_once(producers, successor=lambda: asked.append(1) or "member m-2 on 10.0.0.7")
    producers.current.fail("commit_transaction", FATAL)
    collector.send("out", b"lost", b"1")
    with pytest.raises(CommitFailed):
        producer.commit(OFFSETS, FakeGroupMetadata())

    with pytest.raises(Fenced, match="m-2 on 10.0.0.7"):
        producer.abort()

    assert asked == [1]
    assert len(producers.made) == 1, "no new producer: it would fence the other process"
    assert producer.stepped_down
    # From now on nothing is sent through it: commits fail at once, aborts and close do nothing.
    with pytest.raises(CommitFailed, match="fenced"):
        producer.commit(OFFSETS, FakeGroupMetadata())
    producer.abort()
    producer.close()
    assert producers.cluster.journal.count("abort_transaction") == 0
    assert producers.cluster.records == []


def test_fenced_with_no_other_process_in_the_group_the_producer_is_replaced(producers):
    """The coordinator aborts a transaction older than transaction.timeout.ms with the same error."""
    producer, collector = exactly_once(producers, successor=lambda: None)
    producers.current.fail("commit_transaction", FATAL)
    with pytest.raises(CommitFailed):
        producer.commit(OFFSETS, FakeGroupMetadata())
    producer.abort()
    assert len(producers.made) == 2
    assert not producer.stepped_down


def test_a_fatal_error_that_is_not_a_fence_replaces_the_producer_without_asking(producers):
    producer, collector = exactly_once(producers, successor=lambda: pytest.fail("asked who else runs this instance id"))
    producers.current.fail("commit_transaction", KafkaError(KafkaError._INCONSISTENT, "bad state", fatal=True))
    with pytest.raises(CommitFailed):
        producer.commit(OFFSETS, FakeGroupMetadata())
    producer.abort()
    assert len(producers.made) == 2


TIMED_OUT = KafkaError(KafkaError._TIMED_OUT, "Timed out waiting for operation to finish, retry call to resume", retriable=True)


def test_an_abort_that_times_out_once_is_retried_on_the_same_producer(producers):
    producer, collector = exactly_once(producers)
    producers.current.fail("abort_transaction", TIMED_OUT)
    collector.send("out", b"dropped", b"1")
    producer.abort()
    assert len(producers.made) == 1
    assert producers.cluster.journal.count("abort_transaction") == 2
    assert producers.current.in_transaction


def test_an_abort_that_keeps_timing_out_is_given_up_with_its_producer(producers):
    """After a broker restart librdkafka can hold the abort for a coordinator it never reaches
    again; the loop must not wait on it for minutes. A new producer aborts the transaction."""
    producer, collector = exactly_once(producers)
    for _ in range(5):
        producers.current.fail("abort_transaction", TIMED_OUT)
    collector.send("out", b"dropped", b"1")
    producer.abort()
    assert producers.cluster.journal.count("abort_transaction") == 2
    assert len(producers.made) == 2
    assert producers.current.in_transaction
    collector.send("out", b"after", b"2")
    producer.commit(OFFSETS, FakeGroupMetadata())
    assert keys(producers.cluster.visible("out")) == [b"after"]


@pytest.mark.parametrize("call", ["send_offsets_to_transaction", "commit_transaction"])
def test_a_hung_call_raises_commit_failed_and_the_producer_is_replaced_on_abort(producers, call):
    producer, collector = exactly_once(producers)
    stuck = producers.current
    stuck.hang(call)
    collector.send("out", b"a", b"1")
    with pytest.raises(CommitFailed, match="overran"):
        producer.commit(OFFSETS, FakeGroupMetadata(), timeout=0.01)
    assert stuck.hung.is_set()

    producer.abort()

    # The stuck producer is not asked to abort (it would hang too): a new one fences it.
    assert producers.cluster.journal.count("abort_transaction") == 0
    assert len(producers.made) == 2
    assert producer.producer is producers.current
    assert producers.current.init_calls == 1
    assert producers.current.in_transaction
    assert producers.cluster.records == []


def test_changelog_end_is_the_offset_after_the_last_changelog_record(producers):
    producer, collector = exactly_once(producers)
    collector.send_changelog(CHANGELOG, 2, [(b"k1", b"v1"), (b"k2", b"v2"), (b"k3", None)])
    producer.commit(OFFSETS, FakeGroupMetadata())
    written = producers.cluster.visible(CHANGELOG)
    assert [(r.partition, r.offset, r.key) for r in written] == [(2, 0, b"k1"), (2, 1, b"k2"), (2, 2, b"k3")]
    # The commit marker takes offset 3: the end is not the high watermark.
    assert collector.changelog_end(CHANGELOG, 2) == 3
    assert producers.cluster.end((CHANGELOG, 2)) == 4

    collector.send_changelog(CHANGELOG, 2, [(b"k4", b"v4")])
    producer.commit(OFFSETS, FakeGroupMetadata())
    assert collector.changelog_end(CHANGELOG, 2) == 5
    assert collector.changelog_end(CHANGELOG, 0) is None
    assert collector.sent == 4


# -- at-least-once --------------------------------------------------------------


def test_at_least_once_commit_flushes_without_a_transaction(producers):
    producer, collector = at_least_once(producers)
    producer.init()
    collector.send("out", b"a", b"1")
    producer.commit(OFFSETS, None)
    assert producers.current.init_calls == 0
    assert "flush" in producers.cluster.journal
    assert "commit_transaction" not in producers.cluster.journal
    assert keys(producers.cluster.visible("out")) == [b"a"]
    # Offsets are the task manager's to commit, after the state.
    assert producers.cluster.group_offsets == {}


def test_at_least_once_a_delivery_error_raises_delivery_failed(producers):
    producer, collector = at_least_once(producers)
    producers.current.fail_deliveries(KafkaError(KafkaError._MSG_TIMED_OUT, "message timed out"))
    collector.send("out", b"lost", b"1")
    collector.send("out", b"delivered", b"2")
    with pytest.raises(DeliveryFailed, match="1 records failed"):
        producer.commit(OFFSETS, None)
    assert keys(producers.cluster.visible("out")) == [b"delivered"]
    # Reported once: after the abort the next commit succeeds.
    producer.abort()
    collector.send("out", b"again", b"3")
    producer.commit(OFFSETS, None)
    assert keys(producers.cluster.visible("out")) == [b"delivered", b"again"]


def test_at_least_once_a_failed_changelog_record_raises_delivery_failed(producers):
    producer, collector = at_least_once(producers)
    producers.current.fail_deliveries(KafkaError(KafkaError._MSG_TIMED_OUT, "message timed out"))
    collector.send_changelog(CHANGELOG, 0, [(b"k", b"v")])
    with pytest.raises(DeliveryFailed):
        producer.commit(OFFSETS, None)
    assert collector.changelog_end(CHANGELOG, 0) is None
