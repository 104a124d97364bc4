"""A poll's records in hand (``service.runtime.in_hand``): slices of about ``app.poll_batch`` events.

A pack counts as the events its size allows for, so a poll of packs is
processed over several iterations of the loop, with commits between; a seek,
an abort or a revocation meanwhile never lets a record be skipped or
processed twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
from confluent_kafka import KafkaError

from service.runtime.frames import DATA, DATA_FRAME, PACK_ENTRY, PACK_HEAD, PACKED
from service.runtime.ids import Partition
from service.runtime.in_hand import PACK_BYTES_PER_EVENT, InHand, slices, weight
from tests.fakes import FakeCluster, FakeMessage
from tests.helpers import pipeline, session_window
from tests.unit.runtime.instances import Instance, Instances

SOURCE = "events"
REPARTITION = "sessionizer-s-repartition"
OUTPUT = "out"
T0 = 1_700_000_000_000
MINUTE = 60_000

PIPELINE = pipeline([SOURCE], session_window("10m", "1m"), output=OUTPUT, time_format="epoch_ms")
PARTITIONS = {SOURCE: 2, REPARTITION: 2, "sessionizer-s-changelog": 2}


def _pack(events: int, size: int = 40) -> bytes:
    body = b"x" * (size - PACK_ENTRY.size - 2)
    entry = PACK_ENTRY.pack(T0, T0, 2, len(body)) + b"u1" + body
    return PACK_HEAD.pack(PACKED, 0) + entry * events


def _record(partition: int, offset: int, value: bytes) -> FakeMessage:
    return FakeMessage(REPARTITION, partition, offset, value=value)


def _eof(topic: str, partition: int, offset: int) -> FakeMessage:
    return FakeMessage(topic, partition, offset, error=KafkaError(KafkaError._PARTITION_EOF))


def test_a_pack_weighs_the_events_its_size_allows_for_and_any_other_record_one():
    big = _pack(100, size=PACK_BYTES_PER_EVENT)
    assert weight(_record(0, 0, big)) == len(big) // PACK_BYTES_PER_EVENT
    assert weight(_record(0, 0, b'{"user_id": "u1"}')) == 1
    assert weight(_eof(REPARTITION, 0, 3)) == 1


def test_a_poll_is_cut_in_order_into_slices_of_about_the_events_asked_for():
    batch = [_record(n % 2, n, _pack(30, size=PACK_BYTES_PER_EVENT)) for n in range(10)]
    cut = slices(batch, 100)
    assert [record for piece in cut for record in piece] == batch
    assert [len(piece) for piece in cut] == [4, 4, 2], "30 events a pack: the fourth reaches 100"
    records = [_record(0, n, b"{}") for n in range(7)]
    assert [len(piece) for piece in slices(records, 3)] == [3, 3, 1]
    assert slices([], 3) == []


def test_only_a_poll_that_may_hold_packs_is_cut_and_a_full_poll_or_a_cut_one_is_behind():
    held = InHand(events=3)
    records = [_record(0, n, b"{}") for n in range(5)]
    held.hold(records, packs=False)
    assert held.full and held.take(set()) == records and not held
    held.hold(records[:2], packs=True)
    assert not held.full
    assert held.take(set()) == records[:2]
    held.hold([_record(0, 0, _pack(10, size=PACK_BYTES_PER_EVENT))] + records[1:3], packs=True)
    assert held.full, "one pack of 10 events: more than a poll's worth"


def test_records_of_a_partition_sought_or_revoked_are_dropped_from_what_is_in_hand():
    held = InHand(events=2)
    batch = [_record(n % 2, n // 2, b"{}") for n in range(8)]
    held.hold(batch, packs=True)
    assert held.take(set()) == batch[:2]
    assert held.take({Partition(REPARTITION, 1)}) == [batch[2]]
    held.drop([Partition(REPARTITION, 0)])
    assert held.take(set()) == [batch[5]]
    assert held.take(set()) == [batch[7]]
    assert not held


def test_an_abort_forgets_what_is_in_hand_and_says_where_each_partition_began_ends_included():
    held = InHand(events=2)
    batch = [_record(0, 5, b"{}"), _record(0, 6, b"{}"), _record(1, 9, b"{}"), _eof(REPARTITION, 1, 10), _eof(SOURCE, 0, 0)]
    held.hold(batch, packs=True)
    held.take(set())  # interrupted: not routed
    assert held.drop_all() == {Partition(REPARTITION, 0): 5, Partition(REPARTITION, 1): 9, Partition(SOURCE, 0): 0}
    assert not held
    held.hold(batch, packs=True)
    held.take(set())
    held.routed()
    assert held.drop_all() == {Partition(REPARTITION, 1): 9, Partition(SOURCE, 0): 0}


def _sessions(cluster: FakeCluster) -> list[tuple[bytes | None, int]]:
    return sorted((r.key, orjson.loads(r.value)["value"]["event_count"]) for r in cluster.visible(OUTPUT))  # type: ignore[arg-type]


@contextmanager
def _instance(root: Path, poll_batch: int) -> Iterator[tuple[FakeCluster, Instance]]:
    cluster = FakeCluster()
    cluster.partitioned = dict(PARTITIONS)
    instances = Instances(cluster, root, PIPELINE, PARTITIONS)
    try:
        yield cluster, instances("a", app={"poll_batch": poll_batch})
    finally:
        instances.close()


def _route_all(a: Instance, batch: list[FakeMessage]) -> None:
    """As the loop: ``batch`` is one poll, given to the tasks a slice at a time."""
    a.tasks.hold(batch)  # type: ignore[arg-type]
    while a.tasks.in_hand:
        a.tasks.route_next()


def test_a_poll_of_packs_goes_a_slice_per_iteration_with_commits_between_and_exactly_once(tmp_path):
    with _instance(tmp_path, poll_batch=20) as (cluster, a):
        a.assign((SOURCE, 0), (SOURCE, 1), (REPARTITION, 0), (REPARTITION, 1))
        events = [FakeMessage(SOURCE, n % 2, n // 2, value=orjson.dumps({"user_id": f"u{n % 7}", "ts": T0 + n})) for n in range(200)]
        # Later on both source partitions: stream time passes every session's end.
        events += [FakeMessage(SOURCE, p, 100, value=orjson.dumps({"user_id": "later", "ts": T0 + 60 * MINUTE})) for p in (0, 1)]
        # The source task packs a poll's events: ten slices of 20, so ten packs or so per repartition partition.
        _route_all(a, events)
        a.tasks.commit()
        packs = cluster.messages(REPARTITION)
        assert all(m.value()[0] == PACKED for m in packs if m.key() is None and len(m.value()) > 20)  # type: ignore[index]

        a.tasks.hold(packs)  # type: ignore[arg-type]
        assert a.tasks.behind
        iterations = 0
        while a.tasks.in_hand:
            a.tasks.route_next()
            iterations += 1
            if iterations == 2:
                a.tasks.commit()
                committed = dict(cluster.group_offsets)
                assert 0 < committed[(REPARTITION, 0)] + committed.get((REPARTITION, 1), 0) < len(packs), "part of the poll"
            if iterations == 3:
                # A commit fails mid-poll: the rest in hand is dropped, and read again from the last commit.
                assert a.tasks.in_hand
                a.producer.fail("commit_transaction", KafkaError(KafkaError.INVALID_TXN_STATE, "abort", txn_requires_abort=True))
                a.tasks.commit()
                assert not a.tasks.in_hand
        assert iterations == 3
        again = [m for m in cluster.messages(REPARTITION) if m.offset() >= cluster.group_offsets.get((REPARTITION, m.partition()), 0)]
        _route_all(a, again)
        a.tasks.commit()
        assert _sessions(cluster) == [(f"u{n}".encode(), len(range(n, 200, 7))) for n in range(7)]


def _data(partition: int, offset: int) -> FakeMessage:
    """A framed event of a user of its own in repartition ``partition``."""
    at = T0 + offset
    body = orjson.dumps({"user_id": f"u{partition}-{offset}", "ts": at})
    return FakeMessage(REPARTITION, partition, offset, key=f"u{partition}-{offset}".encode(), value=DATA_FRAME.pack(DATA, at, at, 0) + body)


def test_a_partition_sought_while_its_records_are_in_hand_is_read_from_the_seek_not_skipped(tmp_path):
    """A restore not finished or a schema not fetched seeks a partition back: its later slices must not jump ahead."""
    with _instance(tmp_path, poll_batch=4) as (_, a):
        a.assign((REPARTITION, 0), (REPARTITION, 1))
        batch = [_data(n % 2, n // 2) for n in range(20)]
        a.tasks.hold(batch)  # type: ignore[arg-type]
        a.tasks.route_next()
        assert a.window(0).counts().processed == 2
        a.tasks.positions.seek(Partition(REPARTITION, 0), 2)
        while a.tasks.in_hand:
            a.tasks.route_next()
        assert (a.window(0).counts().processed, a.window(1).counts().processed) == (2, 10)
        _route_all(a, [_data(0, n) for n in range(2, 10)])
        assert a.window(0).counts().processed == 10
