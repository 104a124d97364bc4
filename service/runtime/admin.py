"""Replay and rebuild against the cluster: what ``sessionizer reset`` and ``restore-state`` do.

``reset`` makes the next ``run`` rebuild everything from the source topics: the
consumer group starts again at the chosen point of every source topic, and the
derived state (repartition and changelog topics of every generation, the
layout, local stores) is deleted. It
refuses while any member of the group is running, because a running instance
would commit its old positions over the reset ones.

``restore-state`` fills this machine's local stores from the changelogs
without processing, e.g. to warm a new node before it joins.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from service.config import Config
from service.core.extract import parse_time_ms
from service.core.layout import apply_layout
from service.core.pipeline import compile_pipelines
from service.errors import BadRecord, OperationRefused
from service.runtime.changelog_reader import ChangelogReader
from service.runtime.clients import admin_config, restore_consumer_config
from service.runtime.layout import read_layout
from service.runtime.state_manager import StateManager
from service.runtime.topics import delete_topics, every_generation
from service.state.memory import StoreMemory


@dataclass(frozen=True)
class ResetPlan:
    group: str
    offsets: list[TopicPartition]
    topics: list[str]
    state_dir: str

    def describe(self) -> str:
        lines = [f"Reset of application {self.group!r}:"]
        by_topic: dict[str, list[str]] = {}
        for tp in self.offsets:
            by_topic.setdefault(tp.topic, []).append(f"{tp.partition}@{tp.offset}")
        for topic, parts in by_topic.items():
            lines.append(f"  source {topic}: restart at partition@offset {', '.join(parts)}")
        lines.append("  delete topics: " + (", ".join(self.topics) or "(none exist)"))
        lines.append(f"  delete local state: {self.state_dir}")
        return "\n".join(lines)


def plan_reset(config: Config, to_datetime: str | None = None) -> ResetPlan:
    """Where every source partition restarts: its earliest offset, or the first at or after a time."""
    admin = AdminClient(admin_config(config))
    require_empty_group(admin, config.app_id)
    consumer = Consumer(restore_consumer_config(config))
    try:
        partitions = []
        metadata = consumer.list_topics(timeout=30)
        for topic in config.source_topics():
            if topic not in metadata.topics:
                continue
            partitions += [TopicPartition(topic, p) for p in metadata.topics[topic].partitions]
        offsets = _offsets_at(consumer, partitions, to_datetime)
        existing = set(metadata.topics)
    finally:
        consumer.close()
    topics = every_generation(config, existing)
    return ResetPlan(config.app_id, offsets, topics, str(config.state_dir / config.app_id))


def _offsets_at(consumer: Consumer, partitions: list[TopicPartition], to_datetime: str | None) -> list[TopicPartition]:
    if to_datetime is None:
        return [TopicPartition(tp.topic, tp.partition, consumer.get_watermark_offsets(tp, timeout=30)[0]) for tp in partitions]
    try:
        ms = parse_time_ms(to_datetime, "iso8601", "--to-datetime")
    except BadRecord as exc:
        raise OperationRefused(f"{exc} (e.g. 2026-11-01T00:00:00Z)") from None
    found = consumer.offsets_for_times([TopicPartition(tp.topic, tp.partition, ms) for tp in partitions], timeout=30)
    out = []
    for tp in found:
        offset = tp.offset
        if offset < 0:  # no record at or after the time: start at the end
            offset = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=30)[1]
        out.append(TopicPartition(tp.topic, tp.partition, offset))
    return out


def require_empty_group(admin: AdminClient, group: str) -> None:
    try:
        description = admin.describe_consumer_groups([group])[group].result(30)
    except KafkaException as exc:
        if exc.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND:
            return
        raise
    if description.members:
        clients = ", ".join(sorted(m.client_id for m in description.members))
        raise OperationRefused(
            f"consumer group {group!r} has {len(description.members)} running members ({clients}); stop every instance first"
        )


def apply_reset(config: Config, plan: ResetPlan) -> None:
    """Delete the group (its repartition offsets go with it), set the source offsets, drop derived state."""
    admin = AdminClient(admin_config(config))
    require_empty_group(admin, plan.group)
    try:
        admin.delete_consumer_groups([plan.group])[plan.group].result(30)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.GROUP_ID_NOT_FOUND:
            raise
    if plan.offsets:
        request = ConsumerGroupTopicPartitions(plan.group, plan.offsets)
        admin.alter_consumer_group_offsets([request])[plan.group].result(30)
    delete_topics(admin, plan.topics)
    wait_until_gone(admin, plan.topics)
    shutil.rmtree(plan.state_dir, ignore_errors=True)


def wait_until_gone(admin: AdminClient, topics: list[str], timeout: float = 60.0) -> None:
    """Topic deletion is asynchronous; the next run must not find the old topics."""
    deadline = time.monotonic() + timeout
    while topics:
        remaining = set(topics) & set(admin.list_topics(timeout=10).topics)
        if not remaining:
            return
        if time.monotonic() > deadline:
            raise OperationRefused(f"topics still being deleted after {timeout} s: {', '.join(sorted(remaining))}")
        time.sleep(0.5)


def restore_state(config: Config, partitions: list[int] | None = None, report: Callable[[str], None] = print) -> int:
    """Bring this instance's local stores up to date from the changelogs; returns records applied."""
    reader = ChangelogReader(Consumer(restore_consumer_config(config)), AdminClient(admin_config(config)))
    memory = StoreMemory(config.state)
    states: list[StateManager] = []
    try:
        metadata = reader.consumer.list_topics(timeout=30)
        counts = {name: len(topic.partitions) for name, topic in metadata.topics.items()}
        config = apply_layout(config, read_layout(config, counts))
        for pipeline in compile_pipelines(config.pipelines):
            changelog = pipeline.config.changelog_topic
            if changelog not in metadata.topics:
                report(f"{pipeline.name}: no changelog topic {changelog}, nothing to restore")
                continue
            for partition in sorted(metadata.topics[changelog].partitions):
                if partitions is not None and partition not in partitions:
                    continue
                state = StateManager(config, pipeline, partition, memory)
                states.append(state)
                reader.begin(state)
        while reader.busy:
            reader.step(timeout=0.5)
        total = 0
        for state in states:
            report(f"{state.name}: {state.restored_records} records, stream time {state.store.stream_time}")
            total += state.restored_records
        return total
    finally:
        for state in states:
            state.close()
        reader.close()
