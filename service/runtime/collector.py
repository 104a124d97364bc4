"""The record collector: every record the service writes goes through here.

Under exactly-once it brackets the records in Kafka transactions; under
at-least-once it flushes and checks deliveries before offsets are committed.
It also learns, per changelog partition, the offset the last commit reached,
which becomes the store's checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from service.pipeline import OutputRecord


class DeliveryFailed(Exception):
    """A record could not be written (at-least-once mode): do not commit offsets."""


class RecordCollector:
    def __init__(self, producer: Producer, exactly_once: bool) -> None:
        self.producer = producer
        self.exactly_once = exactly_once
        self.sent = 0
        self._changelog_ends: dict[tuple[str, int], int] = {}
        self._errors: list[KafkaError] = []
        # Under exactly-once a failed record fails the commit itself, so only
        # at-least-once pays for a delivery callback per record.
        self._report = None if exactly_once else self._checked

    # -- writing ------------------------------------------------------------

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Any = None, partition: int = -1) -> None:
        """Produce one record, waiting for queue space when librdkafka's buffer is full."""
        while True:
            try:
                if headers:
                    self.producer.produce(topic, value, key, partition, self._report, headers=list(headers))
                else:
                    self.producer.produce(topic, value, key, partition, self._report)
                break
            except BufferError:
                self.producer.poll(0.05)
        self.sent += 1

    def send_all(self, records: Iterable[OutputRecord]) -> None:
        for record in records:
            self.send(record.topic, record.key, record.value, record.headers or None)

    def send_changelog(self, topic: str, partition: int, records: list[tuple[bytes, bytes | None]]) -> None:
        """Changelog records of one commit; only the last one reports its offset."""
        if not records:
            return
        send = self.send
        for key, value in records[:-1]:
            send(topic, key, value, partition=partition)
        key, value = records[-1]
        while True:
            try:
                self.producer.produce(topic, value, key, partition, on_delivery=self._changelog_delivered)
                break
            except BufferError:
                self.producer.poll(0.05)
        self.sent += 1

    def changelog_end(self, topic: str, partition: int) -> int | None:
        """The offset after the last changelog record delivered to that partition."""
        return self._changelog_ends.get((topic, partition))

    def poll(self) -> None:
        self.producer.poll(0)

    # -- transactions ---------------------------------------------------------

    def init(self, timeout: float = 60.0) -> None:
        if self.exactly_once:
            self.producer.init_transactions(timeout)
            self.producer.begin_transaction()

    def commit(self, offsets: list[TopicPartition], group_metadata: Any, timeout: float = 60.0) -> None:
        """Make everything sent since the last commit visible, with the consumed offsets.

        Raises ``KafkaException`` from the transaction (the caller aborts and
        rewinds) or ``DeliveryFailed`` in at-least-once mode.
        """
        if self.exactly_once:
            if offsets:
                self.producer.send_offsets_to_transaction(offsets, group_metadata, timeout)
            self.producer.commit_transaction(timeout)
            self._raise_delivery_errors()
            self.producer.begin_transaction()
            return
        remaining = self.producer.flush(timeout)
        if remaining:
            raise DeliveryFailed(f"{remaining} records still undelivered after {timeout} s")
        self._raise_delivery_errors()

    def abort(self, timeout: float = 60.0) -> None:
        """Drop everything sent since the last commit."""
        self._errors.clear()
        if self.exactly_once:
            self.producer.abort_transaction(timeout)
            self.producer.begin_transaction()

    def close(self, timeout: float = 30.0) -> None:
        if self.exactly_once:
            try:
                self.producer.abort_transaction(timeout)
            except KafkaException:
                pass
        self.producer.flush(timeout)

    # -- delivery reports -------------------------------------------------------

    def _checked(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._errors.append(error)

    def _changelog_delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._errors.append(error)
            return
        self._changelog_ends[(message.topic(), message.partition())] = message.offset() + 1

    def _raise_delivery_errors(self) -> None:
        if self._errors:
            first = self._errors[0]
            count = len(self._errors)
            self._errors.clear()
            raise DeliveryFailed(f"{count} records failed: {first}")
