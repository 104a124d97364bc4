"""Reading and committing the application's layout (``service.core.layout``) on the broker.

The layout topic is compacted and has one partition; its last record is the
committed layout. Writing that one record is the step that switches an
application to a new generation of internal topics: before it, start-up finds
the old layout intact; after it, the new one complete. An application never
rescaled has no layout topic, and its layout is inferred from the partition
counts of its changelogs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from service.config import Config
from service.core.layout import Layout, layout_topic
from service.core.topology import plan
from service.errors import ConfigError
from service.runtime.clients import admin_config, bulk_producer_config, restore_consumer_config

LAYOUT_KEY = b"layout"


def read_layout(config: Config, counts: Mapping[str, int], timeout: float = 30.0) -> Layout:
    """The committed layout; inferred from the changelogs' partition counts when there is none.

    ``counts``: partitions per existing topic.
    """
    topic = layout_topic(config)
    if topic in counts:
        committed = _last_record(config, topic, timeout)
        if committed is not None:
            return committed
    return inferred_layout(config, counts)


def inferred_layout(config: Config, counts: Mapping[str, int]) -> Layout:
    """Generation 0: the changelogs' partition count (``topics.partitions`` for an application with none yet).

    A pipeline is direct when it would be at that count and has no
    repartition topic: one that has read through it once (its sources gained
    partitions) goes on doing so.
    """
    found = {counts[p.changelog_topic] for p in config.pipelines if p.changelog_topic in counts}
    if len(found) > 1:
        changelogs = ", ".join(
            f"{p.changelog_topic} ({counts[p.changelog_topic]})" for p in config.pipelines if p.changelog_topic in counts
        )
        raise ConfigError([f"the changelogs have different partition counts: {changelogs}"])
    partitions = found.pop() if found else config.topics.partitions
    plans = plan(config.pipelines, partitions, counts)
    direct = frozenset(p.name for p in config.pipelines if plans[p.name].direct and p.repartition_topic not in counts)
    return Layout(0, partitions, direct, committed=False)


def write_layout(config: Config, layout: Layout, timeout: float = 30.0) -> None:
    """Commit ``layout``: the one record start-up reads (the layout topic is created when missing)."""
    admin = AdminClient(admin_config(config))
    topic = layout_topic(config)
    new = NewTopic(
        topic,
        num_partitions=1,
        replication_factor=config.topics.replication_factor,
        config={"cleanup.policy": "compact"},
    )
    for future in admin.create_topics([new], request_timeout=timeout).values():
        try:
            future.result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    producer = Producer(bulk_producer_config(config, "layout"))
    failures: list[KafkaError] = []

    def delivered(error: KafkaError | None, _message: object) -> None:
        if error is not None:
            failures.append(error)

    producer.produce(topic, layout.to_bytes(), LAYOUT_KEY, 0, on_delivery=delivered)
    if producer.flush(timeout) or failures:
        reason = failures[0].str() if failures else "not delivered in time"
        raise KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, f"committing the layout to {topic}: {reason}"))


def _last_record(config: Config, topic: str, timeout: float) -> Layout | None:
    consumer = Consumer(restore_consumer_config(config))
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=timeout)
        if high <= low:
            return None
        consumer.assign([TopicPartition(topic, 0, low)])
        found: Layout | None = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    return found
                raise KafkaException(error)
            if message.key() == LAYOUT_KEY and message.value():
                found = Layout.from_bytes(message.value() or b"")
            if (message.offset() or 0) >= high - 1:
                return found
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"reading {topic} took longer than {timeout} s"))
    finally:
        consumer.close()
