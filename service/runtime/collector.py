"""The record collector: every record a task writes goes through here.

Tasks send their records (output, late, dead-letter, derived, repartition and
changelog records) through a ``Collector``; the ``RecordCollector`` produces
them through the process's ``TransactionalProducer``
(``service.runtime.producer``), so they belong to the open transaction. It
also learns, per changelog partition, the offset the last commit reached,
which becomes the store's checkpoint.
"""

from __future__ import annotations

from typing import Any, Protocol, cast

from confluent_kafka import KafkaError, Message

from service.core.pipeline import OutputRecord
from service.runtime.frames import Record
from service.runtime.ids import Partition
from service.runtime.producer import TransactionalProducer


class Collector(Protocol):
    """What a task writes through."""

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Any = None, partition: int = -1) -> None: ...

    def emit(self, record: OutputRecord) -> None: ...

    def send_changelog(self, topic: str, partition: int, records: list[tuple[bytes, bytes | None]]) -> None: ...

    def changelog_end(self, topic: str, partition: int) -> int | None: ...


class RecordCollector:
    def __init__(self, producer: TransactionalProducer) -> None:
        self.producer = producer
        #: Records sent so far: a commit with nothing consumed, changed or sent is skipped.
        self.sent = 0
        self._changelog_ends: dict[Partition, int] = {}

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Any = None, partition: int = -1) -> None:
        """Produce one record."""
        self.producer.produce(topic, key, value, partition, self.producer.checked, headers)
        self.sent += 1

    def emit(self, record: OutputRecord) -> None:
        """Produce a record a task made (output, late, dead-letter, derived)."""
        self.send(record.topic, record.key, record.value, record.headers or None)

    def send_changelog(self, topic: str, partition: int, records: list[tuple[bytes, bytes | None]]) -> None:
        """Changelog records of one commit; only the last one reports its offset."""
        if not records:
            return
        send = self.send
        for key, value in records[:-1]:
            send(topic, key, value, partition=partition)
        key, value = records[-1]
        self.producer.produce(topic, key, value, partition, self._changelog_delivered)
        self.sent += 1

    def changelog_end(self, topic: str, partition: int) -> int | None:
        """The offset after the last changelog record delivered to that partition."""
        return self._changelog_ends.get(Partition(topic, partition))

    def _changelog_delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.producer.failed(error)
            return
        record = cast(Record, message)  # a delivered record has its topic, partition and offset
        self._changelog_ends[Partition(record.topic(), record.partition())] = record.offset() + 1
