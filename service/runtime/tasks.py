"""Tasks: the units of work a Kafka Streams engineer expects, one per partition.

- A ``SourceTask`` reads one source partition. Its work is stateless: decode
  each record once, and for every pipeline reading that topic extract key and
  event time and forward the record to the pipeline's repartition topic, keyed
  by the grouping key, so all events of one key meet in one partition whatever
  topic they came from. Unusable records go to the dead-letter topic instead.
- A ``WindowTask`` is one partition of one pipeline's repartition topic, with
  its own store and stream time, driving a ``WindowProcessor``.

Both write only through the record collector. Both take part in a commit in
two steps: ``prepare_commit`` before the transaction, ``post_commit`` after it
(see ``service.runtime.checkpoint`` for the whole sequence).

Repartition records carry the event time and the source's index in front of
the untouched original bytes (``RepartitionFrame``): the window stage needs no
second parse of the time, a late event reaches the late topic as it was sent,
and pairing knows which topic each event came from.
"""

from __future__ import annotations

import struct
import time
from enum import Enum

import orjson
from confluent_kafka import Message

from service.core.extract import parse_event
from service.core.pipeline import OutputRecord, Pipeline, dead_letter
from service.errors import BadRecord
from service.core.processor import WindowProcessor
from service.runtime.collector import RecordCollector
from service.runtime.state_manager import StateManager
from service.runtime.stats import TaskCounts
from service.state.store import PendingCommit, WindowStore

#: Event time in epoch ms (signed 64-bit) and the source topic's index in the pipeline.
RepartitionFrame = struct.Struct(">qB")
_FRAME = RepartitionFrame.size
_CREATE_TIME = 1


class SourceTask:
    """One source partition: routes its records to the repartition topics of every pipeline reading it."""

    def __init__(
        self,
        topic: str,
        partition: int,
        routes: list[tuple[Pipeline, int]],
        collector: RecordCollector,
        dead_letters: dict[str, int],
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.collector = collector
        #: (pipeline, the topic's index in its sources) for every pipeline reading the topic.
        self._routes = routes
        #: Dead-letter topic -> records written to it; shared by the source tasks, for metrics.
        self._dead_letters = dead_letters
        #: The partition's end was reached after its last record (librdkafka's end-of-partition event).
        self.caught_up = False

    def process(self, messages: list[Message]) -> None:
        routes = self._routes
        send = self.collector.send
        pack = RepartitionFrame.pack
        for message in messages:
            raw = message.value()
            try:
                event = parse_event(raw)
            except BadRecord as exc:
                for dlq in dict.fromkeys(p.config.dead_letter_topic for p, _ in routes):
                    self._dead_letter(dlq, str(exc), message)
                continue
            kind, record_ms = message.timestamp()
            for pipeline, index in routes:
                try:
                    key, time_ms = pipeline.extract(event, record_ms if kind else None)
                except BadRecord as exc:
                    self._dead_letter(pipeline.config.dead_letter_topic, str(exc), message, pipeline.name)
                    continue
                send(pipeline.config.repartition_topic, key, pack(time_ms, index) + raw)
        self.caught_up = False

    def _dead_letter(self, topic: str, error: str, message: Message, pipeline: str | None = None) -> None:
        record = dead_letter(
            topic, error, message.key(), message.value(), message.topic(), message.partition(), message.offset(), pipeline
        )
        self.collector.emit(record)
        self._dead_letters[topic] = self._dead_letters.get(topic, 0) + 1

    def prepare_commit(self) -> bool:
        """Stateless: nothing to prepare; its output went to the collector as it was made."""
        return False

    def post_commit(self) -> None:
        return None

    def rollback(self) -> None:
        """After an abort: the partition is read again from its committed offset."""
        self.caught_up = False


class TaskState(Enum):
    RESTORING = "restoring"
    RUNNING = "running"


class WindowTask:
    """One repartition partition of one pipeline: its store, stream time and idle clock."""

    def __init__(self, state: StateManager, topic: str, collector: RecordCollector) -> None:
        self.state_manager = state
        self.pipeline: Pipeline = state.pipeline
        self.topic = topic
        self.partition = state.partition
        self.collector = collector
        self.state = TaskState.RESTORING
        #: The partition's end was reached after its last record (librdkafka's end-of-partition event).
        self.caught_up = False
        self.dead_lettered = 0
        self.out: list[OutputRecord] = []
        self.processor = WindowProcessor(self.pipeline, state.store, self.out)
        self._pending: PendingCommit | None = None
        self._idle_base = (self.store.stream_time, time.monotonic())

    @property
    def name(self) -> str:
        return self.state_manager.name

    @property
    def store(self) -> WindowStore:
        return self.state_manager.store

    def reset_store(self) -> None:
        """Start from empty local state (a full restore from the changelog follows)."""
        self.processor.store = self.state_manager.reset()

    # -- processing -----------------------------------------------------------

    def process(self, messages: list[Message]) -> None:
        process = self.processor.process
        loads = orjson.loads
        unpack = RepartitionFrame.unpack_from
        for message in messages:
            raw = message.value()
            try:
                time_ms, source = unpack(raw)
                body = memoryview(raw)[_FRAME:]
                event = loads(body)
            except (struct.error, TypeError, orjson.JSONDecodeError) as exc:
                self._dead_letter(f"unreadable repartition record: {exc}", message)
                continue
            process(message.key(), time_ms, event, body, source)
        self.caught_up = False
        self._idle_base = (self.store.stream_time, time.monotonic())
        self._flush()

    def started(self) -> None:
        """Restoring is over: processing begins and the idle clock starts now."""
        self.state = TaskState.RUNNING
        self._idle_base = (self.store.stream_time, time.monotonic())

    def punctuate(self, now: float) -> None:
        """Idle closing: a caught-up partition's stream time follows the wall clock.

        Stream time moves on by the wall-clock time elapsed since the last
        event, so a quiet user's session closes without any further event and
        without dummy events. A partition that still has records to read is
        driven by event time alone, so replaying old data behaves like live data.
        """
        if not self.caught_up:
            return
        base_time, base_wall = self._idle_base
        if base_time is None:
            return
        self.processor.advance(base_time + int((now - base_wall) * 1000))

    # -- commits --------------------------------------------------------------

    def prepare_commit(self) -> bool:
        """Close due windows, hand their records and this commit's changelog records to the collector."""
        self.processor.close_due()
        self._flush()
        store = self.store
        if not store.has_changes:
            return False
        self._pending = store.prepare()
        self.collector.send_changelog(self.pipeline.config.changelog_topic, self.partition, self._pending.changelog)
        return True

    def post_commit(self) -> None:
        """The transaction committed: write the batch to RocksDB with the changelog offset it reached."""
        if self._pending is None:
            return
        end = self.collector.changelog_end(self.pipeline.config.changelog_topic, self.partition)
        self.store.apply(self._pending, end)
        self._pending = None

    def rollback(self) -> None:
        """Back to the last commit; the idle clock restarts, so time spent failing is not idle time."""
        self.store.rollback()
        self.out.clear()
        self._pending = None
        self.caught_up = False
        self._idle_base = (self.store.stream_time, time.monotonic())

    # -- the rest ---------------------------------------------------------------

    def counts(self) -> TaskCounts:
        c = self.processor.counters
        return TaskCounts(c.processed, c.late, c.emitted, c.merges, self.dead_lettered, self.state_manager.restored_records)

    def close(self) -> None:
        self.state_manager.close()

    def _flush(self) -> None:
        out = self.out
        if out:
            emit = self.collector.emit
            for record in out:
                emit(record)
            out.clear()

    def _dead_letter(self, error: str, message: Message) -> None:
        self.out.append(
            dead_letter(
                self.pipeline.config.dead_letter_topic,
                error,
                message.key(),
                message.value(),
                message.topic(),
                message.partition(),
                message.offset(),
                self.pipeline.name,
            )
        )
        self.dead_lettered += 1
