"""Small hand-written stand-ins for the Kafka clients, for unit tests of the runtime.

No broker and no ``unittest.mock``: each fake does the little the runtime asks
of it, remembers what it was asked, and can be told to fail.

``FakeCluster`` is what the broker would hold: the records readers can see,
each partition's next offset, the group's committed offsets, the committed and
aborted transactions, and a ``journal`` of the calls whose order matters
(produce, flush, offsets, commit, abort). A producer and consumers built on
one cluster see each other's commits, as they would through a broker.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_INVALID, ConsumerGroupState, IsolationLevel, KafkaError, KafkaException, TopicPartition

from service.core.partitioner import partition_for

Where = tuple[str, int]

#: How long a hung call blocks at most, so a test that forgets ``release`` still ends.
HANG_LIMIT = 30.0


class FakeMessage:
    """A record as ``confluent_kafka.Message`` shows it: accessors, no attributes."""

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        value: bytes | None = None,
        key: bytes | None = None,
        timestamp_ms: int | None = None,
        error: KafkaError | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        self._topic = topic
        self._partition = partition
        self._offset = offset
        self._value = value
        self._key = key
        self._timestamp_ms = timestamp_ms
        self._error = error
        self._headers = headers

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def error(self) -> KafkaError | None:
        return self._error

    def timestamp(self) -> tuple[int, int]:
        """``(TIMESTAMP_CREATE_TIME, ms)``, or ``(TIMESTAMP_NOT_AVAILABLE, -1)`` without one."""
        return (1, self._timestamp_ms) if self._timestamp_ms is not None else (0, -1)

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def __repr__(self) -> str:
        return f"FakeMessage({self._topic}[{self._partition}]@{self._offset}, key={self._key!r}, error={self._error})"


def eof(topic: str, partition: int, offset: int) -> FakeMessage:
    """librdkafka's end-of-partition event: ``offset`` is the partition's end."""
    return FakeMessage(topic, partition, offset, error=KafkaError(KafkaError._PARTITION_EOF))


@dataclass(frozen=True)
class Produced:
    """A record a producer wrote, at the offset the fake broker gave it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class Transaction:
    """One transaction's records and consumed offsets, committed or aborted."""

    records: list[Produced] = field(default_factory=list)
    offsets: dict[Where, int] = field(default_factory=dict)


class FakeCluster:
    """The broker's side: logs, visible records, group offsets, transactions, and a call journal."""

    def __init__(self) -> None:
        #: Records a read_committed consumer can see, in the order they became visible.
        self.records: list[Produced] = []
        self.transactions: list[Transaction] = []
        self.aborted: list[Transaction] = []
        #: The consumer group's committed offsets (from a transaction or ``Consumer.commit``).
        self.group_offsets: dict[Where, int] = {}
        #: Calls in the order they happened: "produce <topic>", "flush", "send_offsets_to_transaction", ...
        self.journal: list[str] = []
        self._next: dict[Where, int] = {}
        #: Every producer writing here, for the offsets of their open transactions.
        self.producers: list[FakeProducer] = []
        #: Partition counts of topics whose keyed records go where librdkafka's ``murmur2_random``
        #: puts them; a keyed record of any other topic, and a record without a key, go to partition 0.
        self.partitioned: dict[str, int] = {}
        #: Partitions per topic, as a metadata request (``list_topics``) answers them.
        self.topic_partitions: dict[str, int] = {}
        #: Set: a transaction's commit returns before its markers are written (as when the broker
        #: stops right after logging the decision): its records and offsets wait in ``unmarked``
        #: until ``write_markers``, holding the last stable offset before them.
        self.hold_markers = False
        self.unmarked: list[Transaction] = []

    def append(self, where: Where) -> int:
        """Give the next offset of a partition's log (a record or a transaction marker takes one)."""
        offset = self._next.get(where, 0)
        self._next[where] = offset + 1
        return offset

    def metadata(self, topic: str | None = None) -> SimpleNamespace:
        """What ``list_topics`` answers (a consumer's or an admin client's): ``topic``, or every topic."""
        names = [topic] if topic is not None else list(self.topic_partitions)
        return SimpleNamespace(
            topics={n: SimpleNamespace(partitions=dict.fromkeys(range(self.topic_partitions[n])), error=None) for n in names}
        )

    def end(self, where: Where) -> int:
        """The high watermark: the offset the next write to the partition gets."""
        return self._next.get(where, 0)

    def stable_end(self, where: Where) -> int:
        """The last stable offset: where a ``read_committed`` reader stops (the first record of an open transaction)."""
        open_offsets = [
            r.offset
            for producer in self.producers
            if producer.in_transaction
            for r in producer.open.records
            if (r.topic, r.partition) == where
        ]
        open_offsets += [r.offset for transaction in self.unmarked for r in transaction.records if (r.topic, r.partition) == where]
        return min(open_offsets, default=self.end(where))

    def write_markers(self) -> None:
        """The held transactions' markers are written: their records and offsets become visible."""
        for transaction in self.unmarked:
            self.records += transaction.records
            self.group_offsets.update(transaction.offsets)
        self.unmarked.clear()

    def visible(self, topic: str) -> list[Produced]:
        return [r for r in self.records if r.topic == topic]

    def messages(self, topic: str) -> list[FakeMessage]:
        """The topic's visible records as a consumer would receive them."""
        return [FakeMessage(r.topic, r.partition, r.offset, r.value, r.key, headers=list(r.headers)) for r in self.visible(topic)]


class FakeProducer:
    """A producer writing to a ``FakeCluster``, transactional once ``init_transactions`` ran.

    Offsets are given at ``produce``; delivery reports are served by ``poll``,
    ``flush`` and ``commit_transaction``, as librdkafka serves them. Inside a
    transaction the records wait in ``open`` until the commit makes them
    visible; an abort drops them and their pending reports. Either ends with a
    marker that takes one offset in every partition the transaction wrote.
    ``partition=-1`` (let the partitioner choose) writes to partition 0, or,
    for a keyed record of a topic in ``cluster.partitioned``, to the key's partition.

    ``fail(call, error)`` makes the next ``call`` raise ``error``; a fatal error
    sticks, so every later call raises it too, like a fenced producer's.
    ``hang(call)`` makes the next ``call`` block until ``release()``, then fail.
    ``hang_after_commit()`` makes the next ``commit_transaction`` commit, then
    block like a hung call: the broker committed but the answer never came.
    ``fail_deliveries(error)`` reports the next records as not delivered.
    ``unreachable`` makes every commit fail until it is unset.
    """

    def __init__(self, cluster: FakeCluster | None = None) -> None:
        self.cluster = cluster if cluster is not None else FakeCluster()
        self.cluster.producers.append(self)
        #: The broker is away: committing fails, and must be aborted (the abort itself goes through).
        self.unreachable = False
        self.transactional = False
        self.in_transaction = False
        self.init_calls = 0
        #: Records of the open transaction.
        self.open = Transaction()
        self.fatal_error: KafkaError | None = None
        self.hung = threading.Event()
        self._release = threading.Event()
        self._failures: dict[str, list[KafkaError]] = {}
        self._hanging: set[str] = set()
        self._hang_after_commit = False
        self._delivery_failures: list[KafkaError] = []
        self._undelivered: list[tuple[Callable[..., None] | None, Produced, KafkaError | None]] = []

    # -- telling it what to do ---------------------------------------------------

    def fail(self, call: str, error: KafkaError) -> None:
        self._failures.setdefault(call, []).append(error)

    def hang(self, call: str) -> None:
        self._hanging.add(call)

    def hang_after_commit(self) -> None:
        self._hang_after_commit = True

    def release(self) -> None:
        """Let a hung call return (with an error: its caller gave up on it)."""
        self._release.set()

    def fail_deliveries(self, error: KafkaError, count: int = 1) -> None:
        self._delivery_failures += [error] * count

    # -- the Producer API ---------------------------------------------------------

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int = -1,
        on_delivery: Callable[..., None] | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        **_: Any,
    ) -> None:
        if self.fatal_error is not None:
            raise KafkaException(self.fatal_error)
        if self.transactional and not self.in_transaction:
            raise KafkaException(KafkaError(KafkaError._STATE, "produce outside a transaction"))
        self.cluster.journal.append(f"produce {topic}")
        if partition < 0:
            count = self.cluster.partitioned.get(topic)
            partition = partition_for(key, count) if count and key is not None else 0
        error = self._delivery_failures.pop(0) if self._delivery_failures else None
        offset = -1 if error is not None else self.cluster.append((topic, partition))
        record = Produced(topic, partition, offset, key, value, tuple(headers or ()))
        if error is None and self.transactional:
            self.open.records.append(record)
        self._undelivered.append((on_delivery, record, error))

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None:
        # The purged records are reported as failed, at the next poll or flush.
        purged = KafkaError(KafkaError._PURGE_QUEUE, "purged")
        self._undelivered = [(callback, record, purged) for callback, record, _ in self._undelivered]

    def poll(self, timeout: float | None = None) -> int:
        return self._deliver()

    def flush(self, timeout: float | None = None) -> int:
        self.cluster.journal.append("flush")
        if self.fatal_error is not None:  # as librdkafka's flush does on a fenced producer
            if self._undelivered:
                # confluent-kafka serves the reports with the exception already set: the
                # first callback returns into a pending exception, which Python reports so.
                try:
                    raise KafkaException(self.fatal_error)
                except KafkaException as exc:
                    raise SystemError("a delivery callback returned a result with an exception set") from exc
            raise KafkaException(self.fatal_error)
        self._deliver()
        return 0

    def __len__(self) -> int:
        return len(self._undelivered)

    def init_transactions(self, timeout: float | None = None) -> None:
        self._call("init_transactions")
        self.transactional = True
        self.init_calls += 1

    def begin_transaction(self) -> None:
        self._call("begin_transaction")
        if self.in_transaction:
            raise KafkaException(KafkaError(KafkaError._STATE, "a transaction is already open"))
        self.in_transaction = True
        self.open = Transaction()

    def send_offsets_to_transaction(self, offsets: list[TopicPartition], group_metadata: object, timeout: float | None = None) -> None:
        self._call("send_offsets_to_transaction")
        self._require_transaction()
        if not isinstance(group_metadata, FakeGroupMetadata):
            raise KafkaException(KafkaError(KafkaError._INVALID_ARG, "not a consumer's group metadata"))
        for tp in offsets:
            self.open.offsets[(tp.topic, tp.partition)] = tp.offset

    def commit_transaction(self, timeout: float | None = None) -> None:
        self._call("commit_transaction")
        self._require_transaction()
        self._deliver()
        self._end_transaction()
        if self.cluster.hold_markers:
            self.cluster.unmarked.append(self.open)
        else:
            self.cluster.records += self.open.records
            self.cluster.group_offsets.update(self.open.offsets)
        self.cluster.transactions.append(self.open)
        if self._hang_after_commit:
            self._hang_after_commit = False
            self._hanging.add("commit_transaction")
            self._call("commit_transaction")

    def abort_transaction(self, timeout: float | None = None) -> None:
        self._call("abort_transaction")
        self._require_transaction()
        self._undelivered.clear()
        self._end_transaction()
        self.cluster.aborted.append(self.open)

    # -- inside -------------------------------------------------------------------

    def _call(self, name: str) -> None:
        self.cluster.journal.append(name)
        if self.fatal_error is not None:
            raise KafkaException(self.fatal_error)
        if name in self._hanging:
            self._hanging.discard(name)
            self.hung.set()
            self._release.wait(HANG_LIMIT)
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"{name} hung"))
        if self.unreachable and name in ("send_offsets_to_transaction", "commit_transaction"):
            raise KafkaException(KafkaError(KafkaError.INVALID_TXN_STATE, "broker unreachable", txn_requires_abort=True))
        failures = self._failures.get(name)
        if failures:
            error = failures.pop(0)
            if error.fatal():
                self.fatal_error = error
            raise KafkaException(error)

    def _require_transaction(self) -> None:
        if not self.in_transaction:
            raise KafkaException(KafkaError(KafkaError._STATE, "no open transaction"))

    def _end_transaction(self) -> None:
        for where in dict.fromkeys((r.topic, r.partition) for r in self.open.records):
            self.cluster.append(where)  # the commit or abort marker
        self.in_transaction = False

    def _deliver(self) -> int:
        reports, self._undelivered = self._undelivered, []
        for callback, record, error in reports:
            if error is None and not self.transactional:
                self.cluster.records.append(record)
            if callback is not None:
                callback(error, FakeMessage(record.topic, record.partition, record.offset, record.value, record.key, error=error))
        return len(reports)


class Producers:
    """A producer factory, as ``RecordCollector`` takes one: every producer it made, all on one cluster."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster
        self.made: list[FakeProducer] = []

    def __call__(self) -> FakeProducer:
        producer = FakeProducer(self.cluster)
        self.made.append(producer)
        return producer

    @property
    def current(self) -> FakeProducer:
        return self.made[-1]

    def release(self) -> None:
        """Let every producer's hung call return, so none outlives the test."""
        for producer in self.made:
            producer.release()


class FakeGroupMetadata:
    """What ``consumer_group_metadata()`` returns, for ``send_offsets_to_transaction``."""


class FakeConsumer:
    """A consumer over a ``FakeCluster``: records are queued with ``feed`` and handed out by ``consume``.

    ``consume`` returns queued messages of assigned, unpaused partitions in the
    order they were fed; the others stay queued. Committed offsets live in the
    cluster, so a transaction's offsets are what ``committed`` answers.
    Watermarks are the cluster's log ``(0, end)`` unless set in ``watermarks``.
    """

    def __init__(self, cluster: FakeCluster | None = None) -> None:
        self.cluster = cluster if cluster is not None else FakeCluster()
        self.queue: list[FakeMessage] = []
        self.paused: set[Where] = set()
        #: Every partition paused and resumed, in order.
        self.pauses: list[Where] = []
        self.resumes: list[Where] = []
        #: Every seek: (topic, partition, offset).
        self.seeks: list[tuple[str, int, int]] = []
        self.positions: dict[Where, int] = {}
        self.watermarks: dict[Where, tuple[int, int]] = {}
        self.closed = False
        self._assigned: dict[Where, None] = {}

    def feed(self, *messages: FakeMessage) -> None:
        self.queue += messages

    # -- assignment -------------------------------------------------------------

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in self._assigned]

    def incremental_assign(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self._assigned[(tp.topic, tp.partition)] = None

    def incremental_unassign(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self._assigned.pop((tp.topic, tp.partition), None)
            self.paused.discard((tp.topic, tp.partition))

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Replace the assignment. As librdkafka does, a partition paused before stays paused
        if it is assigned again (only ``resume`` or unassigning it ends the pause)."""
        self._assigned = {}
        for tp in partitions:
            self._assigned[(tp.topic, tp.partition)] = None
            self.positions[(tp.topic, tp.partition)] = tp.offset
        self.paused &= set(self._assigned)

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self.paused.add((tp.topic, tp.partition))
            self.pauses.append((tp.topic, tp.partition))

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self.paused.discard((tp.topic, tp.partition))
            self.resumes.append((tp.topic, tp.partition))

    def seek(self, partition: TopicPartition) -> None:
        where = (partition.topic, partition.partition)
        if where not in self._assigned:
            raise KafkaException(KafkaError(KafkaError._UNKNOWN_PARTITION, f"{where} is not assigned"))
        self.seeks.append((partition.topic, partition.partition, partition.offset))
        self.positions[where] = partition.offset

    # -- offsets ----------------------------------------------------------------

    def committed(self, partitions: list[TopicPartition], timeout: float | None = None) -> list[TopicPartition]:
        offsets = self.cluster.group_offsets
        return [TopicPartition(tp.topic, tp.partition, offsets.get((tp.topic, tp.partition), OFFSET_INVALID)) for tp in partitions]

    def commit(
        self, message: object = None, offsets: list[TopicPartition] | None = None, asynchronous: bool = True
    ) -> list[TopicPartition]:
        self.cluster.journal.append("consumer.commit")
        for tp in offsets or []:
            self.cluster.group_offsets[(tp.topic, tp.partition)] = tp.offset
        return list(offsets or [])

    def consumer_group_metadata(self) -> FakeGroupMetadata:
        return FakeGroupMetadata()

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.positions.get((tp.topic, tp.partition), OFFSET_INVALID)) for tp in partitions]

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float | None = None, cached: bool = False) -> tuple[int, int]:
        where = (partition.topic, partition.partition)
        return self.watermarks.get(where, (0, self.cluster.end(where)))

    # -- reading ----------------------------------------------------------------

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> SimpleNamespace:
        return self.cluster.metadata(topic)

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[FakeMessage]:
        out: list[FakeMessage] = []
        kept: list[FakeMessage] = []
        for message in self.queue:
            where = (message.topic(), message.partition())
            if len(out) < num_messages and where in self._assigned and where not in self.paused:
                out.append(message)
                if message.error() is None:
                    self.positions[where] = message.offset() + 1
            else:
                kept.append(message)
        self.queue = kept
        return out

    def close(self) -> None:
        self.closed = True


class FetchingConsumer(FakeConsumer):
    """A consumer that reads what the cluster holds, as librdkafka would, instead of what was fed.

    Each assigned, unpaused partition is read from its fetch position, which
    starts at the group's committed offset (or the start), moves past each
    record handed over, and is moved by ``seek``. Records are handed over
    in offset order up to the partition's last stable offset (what a
    ``read_committed`` reader sees), then one end-of-partition event, once
    per end reached. ``down`` makes it hand over nothing (a broker outage).
    """

    def __init__(self, cluster: FakeCluster | None = None) -> None:
        super().__init__(cluster)
        self.down = False
        self._eof_at: dict[Where, int] = {}

    def _start(self, tp: TopicPartition) -> None:
        where = (tp.topic, tp.partition)
        if tp.offset >= 0:
            self.positions[where] = tp.offset
        elif tp.offset == OFFSET_BEGINNING:
            self.positions[where] = 0
        else:
            self.positions[where] = self.cluster.group_offsets.get(where, 0)
        self._eof_at.pop(where, None)

    def incremental_assign(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self._assigned[(tp.topic, tp.partition)] = None
            self._start(tp)

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """As ``FakeConsumer.assign``: pauses outlive a new assignment of the same partition."""
        self._assigned = {}
        for tp in partitions:
            self._assigned[(tp.topic, tp.partition)] = None
            self._start(tp)
        self.paused &= set(self._assigned)

    def seek(self, partition: TopicPartition) -> None:
        super().seek(partition)
        self._eof_at.pop((partition.topic, partition.partition), None)

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float | None = None, cached: bool = False) -> tuple[int, int]:
        return (0, self.cluster.stable_end((partition.topic, partition.partition)))

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[FakeMessage]:
        out: list[FakeMessage] = []
        if self.down:
            return out
        visible: dict[Where, list[Produced]] = {}
        for record in self.cluster.records:
            visible.setdefault((record.topic, record.partition), []).append(record)
        for where in list(self._assigned):
            if where in self.paused:
                continue
            position = self.positions.get(where, 0)
            stable = self.cluster.stable_end(where)
            full = False
            for r in sorted(visible.get(where, ()), key=lambda r: r.offset):
                if position <= r.offset < stable:
                    if len(out) >= num_messages:
                        full = True
                        break
                    out.append(FakeMessage(r.topic, r.partition, r.offset, r.value, r.key, headers=list(r.headers)))
                    position = r.offset + 1
            self.positions[where] = position
            if full:
                return out
            if len(out) < num_messages and self._eof_at.get(where) != stable:
                self.positions[where] = max(position, stable)
                self._eof_at[where] = stable
                out.append(FakeMessage(where[0], where[1], stable, error=KafkaError(KafkaError._PARTITION_EOF)))
        return out


class FakeFuture:
    """A ``concurrent.futures.Future``: finished at once, unless made with ``done=False`` and finished by ``finish``."""

    def __init__(self, error: KafkaError | None = None, value: object = None, done: bool = True) -> None:
        self._error = error
        self._value = value
        self._done = done
        self._callbacks: list[Callable[[FakeFuture], None]] = []

    def finish(self, error: KafkaError | None = None, value: object = None) -> None:
        self._error, self._value, self._done = error, value, True
        for callback in self._callbacks:
            callback(self)

    def done(self) -> bool:
        return self._done

    def result(self, timeout: float | None = None) -> object:
        if not self._done:
            raise TimeoutError("not finished")
        if self._error is not None:
            raise KafkaException(self._error)
        return self._value

    def exception(self, timeout: float | None = None) -> KafkaException | None:
        return None if self._error is None else KafkaException(self._error)

    def add_done_callback(self, callback: Callable[[FakeFuture], None]) -> None:
        if self._done:
            callback(self)
        else:
            self._callbacks.append(callback)


@dataclass(frozen=True)
class ListedOffset:
    """What a ``list_offsets`` future holds (``ListOffsetsResultInfo``): the offset asked for."""

    offset: int


class FakeAdmin:
    """An admin client over a ``FakeCluster``.

    ``delete_records`` records the offsets; ``error`` fails every deletion.
    ``list_offsets`` answers each partition's end as a ``read_committed``
    reader sees it (``FakeCluster.stable_end``), or its log end when asked
    with ``IsolationLevel.READ_UNCOMMITTED``, once the call returns; with
    ``hold_answers`` set its futures stay unfinished (a slow broker) until
    ``answer()``; ``ends_error`` fails every answer (a broker that is down).
    """

    def __init__(self, error: KafkaError | None = None, cluster: FakeCluster | None = None) -> None:
        self.error = error
        self.cluster = cluster if cluster is not None else FakeCluster()
        #: Every deletion asked for: (topic, partition, delete before this offset).
        self.deleted: list[tuple[str, int, int]] = []
        #: Every ``list_offsets`` call: the partitions asked for.
        self.listed: list[list[Where]] = []
        self.hold_answers = False
        self.ends_error: KafkaError | None = None
        #: Ends to answer instead of the cluster's, by partition.
        self.ends: dict[Where, int] = {}
        self._held: list[tuple[Where, FakeFuture]] = []
        #: The consumer group as ``describe_consumer_groups`` answers it: (client id, partitions) per member.
        self.members: list[tuple[str, list[Where]]] = []
        #: How many ``list_topics`` calls it answered.
        self.metadata_requests = 0

    def describe_consumer_groups(self, groups: list[str], **_: Any) -> dict[str, FakeFuture]:
        """A stable group of ``members``."""
        members = [
            SimpleNamespace(
                client_id=client_id,
                member_id=f"m-{client_id}",
                host="/127.0.0.1",
                assignment=SimpleNamespace(topic_partitions=[TopicPartition(t, p) for t, p in partitions]),
            )
            for client_id, partitions in self.members
        ]
        description = SimpleNamespace(state=ConsumerGroupState.STABLE, members=members)
        return {groups[0]: FakeFuture(value=description)}

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> SimpleNamespace:
        self.metadata_requests += 1
        return self.cluster.metadata(topic)

    def delete_records(self, offsets: list[TopicPartition], **_: Any) -> dict[TopicPartition, FakeFuture]:
        self.deleted += [(tp.topic, tp.partition, tp.offset) for tp in offsets]
        return {tp: FakeFuture(self.error) for tp in offsets}

    def list_offsets(
        self, offsets: dict[TopicPartition, object], isolation_level: object = None, **_: Any
    ) -> dict[TopicPartition, FakeFuture]:
        wheres = [(tp.topic, tp.partition) for tp in offsets]
        self.listed.append(wheres)
        futures: dict[TopicPartition, FakeFuture] = {}
        for tp, where in zip(offsets, wheres):
            if isolation_level == IsolationLevel.READ_UNCOMMITTED and not self.hold_answers and self.ends_error is None:
                future = FakeFuture(value=ListedOffset(self.ends.get(where, self.cluster.end(where))))
            elif self.hold_answers:
                future = FakeFuture(done=False)
                self._held.append((where, future))
            elif self.ends_error is not None:
                future = FakeFuture(self.ends_error)
            else:
                future = FakeFuture(value=ListedOffset(self._end(where)))
            futures[tp] = future
        return futures

    def answer(self) -> None:
        """Answer the held requests with the ends as they are now."""
        held, self._held = self._held, []
        for where, future in held:
            future.finish(value=ListedOffset(self._end(where)))

    def _end(self, where: Where) -> int:
        end = self.ends.get(where)
        return self.cluster.stable_end(where) if end is None else end
