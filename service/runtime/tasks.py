"""Tasks: the units of work a Kafka Streams engineer expects.

- ``SourceTask`` work is stateless: decode each source record once, and for
  every pipeline reading that topic, extract key and event time and forward the
  record to the pipeline's repartition topic keyed by the grouping key, so all
  events of one key meet in one partition whatever topic they came from.
  Unusable records go to the dead-letter topic instead.
- ``WindowTask`` is one partition of one pipeline's repartition topic, with
  its own store and stream time, driving a ``WindowProcessor``.

Repartition records carry the event time and the source's index in front of
the untouched original bytes (``RepartitionFrame``): the window stage needs no
second parse of the time, a late event reaches the late topic as it was sent,
and pairing knows which topic each event came from.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field
from enum import Enum

import orjson
from confluent_kafka import Message

from service.core.extract import BadRecord, parse_event
from service.core.pipeline import OutputRecord, Pipeline, dead_letter
from service.core.processor import WindowProcessor
from service.runtime.collector import RecordCollector
from service.state.store import WindowStore

#: Event time in epoch ms (signed 64-bit) and the source topic's index in the pipeline.
RepartitionFrame = struct.Struct(">qB")
_FRAME = RepartitionFrame.size
_CREATE_TIME = 1


class SourceTask:
    """Routes source-topic records of every pipeline to their repartition topics."""

    def __init__(self, pipelines: tuple[Pipeline, ...], collector: RecordCollector) -> None:
        self.collector = collector
        self._routes: dict[str, list[tuple[Pipeline, int]]] = {}
        for pipeline in pipelines:
            for index, topic in enumerate(pipeline.config.sources):
                self._routes.setdefault(topic, []).append((pipeline, index))
        self.consumed = 0
        self.dead_lettered = 0
        #: Dead-letter topic -> records written to it (for metrics).
        self.dead_letters: dict[str, int] = {}

    @property
    def topics(self) -> list[str]:
        return list(self._routes)

    def process(self, topic: str, messages: list[Message]) -> None:
        routes = self._routes[topic]
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
        self.consumed += len(messages)

    def _dead_letter(self, topic: str, error: str, message: Message, pipeline: str | None = None) -> None:
        record = dead_letter(
            topic, error, message.key(), message.value(), message.topic(), message.partition(), message.offset(), pipeline
        )
        self.collector.send_all((record,))
        self.dead_lettered += 1
        self.dead_letters[topic] = self.dead_letters.get(topic, 0) + 1


class TaskState(Enum):
    RESTORING = "restoring"
    RUNNING = "running"


@dataclass
class WindowTask:
    """One repartition partition of one pipeline: its store, stream time and idle clock."""

    pipeline: Pipeline
    topic: str
    partition: int
    store: WindowStore
    state: TaskState = TaskState.RESTORING
    out: list[OutputRecord] = field(default_factory=list)
    #: The partition's end was reached after its last record (librdkafka's EOF event).
    caught_up: bool = False
    restored_records: int = 0

    def __post_init__(self) -> None:
        self.processor = WindowProcessor(self.pipeline, self.store, self.out)
        self._idle_base = (self.store.stream_time, time.monotonic())
        self.dead_lettered = 0

    @property
    def name(self) -> str:
        return f"{self.pipeline.name}-{self.partition}"

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

    def rollback(self) -> None:
        """Back to the last commit; the idle clock restarts, so time spent failing is not idle time."""
        self.store.rollback()
        self.out.clear()
        self._idle_base = (self.store.stream_time, time.monotonic())

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
