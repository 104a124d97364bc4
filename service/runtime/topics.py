"""Creating the topics the service reads and writes, and checking the ones that exist."""

from __future__ import annotations

import time
from dataclasses import dataclass

import structlog
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from service.config import Config

log = structlog.get_logger("sessionizer.topics")


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


def planned_topics(config: Config) -> list[TopicSpec]:
    """Every topic the configuration uses, with how it should be created."""
    n = config.topics.partitions
    specs: dict[str, TopicSpec] = {}

    def add(name: str, topic_config: dict[str, str] | None = None) -> None:
        specs.setdefault(name, TopicSpec(name, n, topic_config or {}))

    for pipeline in config.pipelines:
        for source in pipeline.sources:
            add(source)
        # Records are deleted by the service once consumed (purge), never by age.
        add(pipeline.repartition_topic, {"cleanup.policy": "delete", "retention.ms": "-1"})
        add(pipeline.changelog_topic, {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"})
        add(pipeline.output.topic)
        for topic in pipeline.derived_topics():
            add(topic)
        add(pipeline.late_topic)
        add(pipeline.dead_letter_topic)
    return list(specs.values())


def internal_topics(config: Config) -> list[str]:
    return [t for p in config.pipelines for t in (p.repartition_topic, p.changelog_topic)]


def ensure_topics(admin: AdminClient, config: Config, timeout: float = 30.0) -> dict[str, int]:
    """Create what is missing (when ``topics.create``); return partitions per topic.

    A changelog must have as many partitions as the repartition topic it
    shadows, or restored state would land in the wrong task: that is checked.
    """
    specs = planned_topics(config)
    existing = _partition_counts(admin, timeout)
    missing = [s for s in specs if s.name not in existing]
    if missing and not config.topics.create:
        raise RuntimeError("missing topics and [topics] create = false: " + ", ".join(s.name for s in missing))
    if missing:
        new = [
            NewTopic(s.name, num_partitions=s.partitions, replication_factor=config.topics.replication_factor, config=s.config)
            for s in missing
        ]
        for name, future in admin.create_topics(new, request_timeout=timeout).items():
            try:
                future.result(timeout)
                log.info("topic created", topic=name)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
        existing = _wait_for(admin, [s.name for s in specs], timeout)
    for pipeline in config.pipelines:
        repartition = existing[pipeline.repartition_topic]
        changelog = existing[pipeline.changelog_topic]
        if repartition != changelog:
            raise RuntimeError(
                f"{pipeline.changelog_topic} has {changelog} partitions but {pipeline.repartition_topic} has "
                f"{repartition}; they must match (see 'Replay and rebuild' in the README)"
            )
    return existing


def _partition_counts(admin: AdminClient, timeout: float) -> dict[str, int]:
    metadata = admin.list_topics(timeout=timeout)
    return {name: len(t.partitions) for name, t in metadata.topics.items() if t.error is None}


def _wait_for(admin: AdminClient, names: list[str], timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        counts = _partition_counts(admin, timeout)
        if all(counts.get(n) for n in names) or time.monotonic() > deadline:
            return counts
        time.sleep(0.2)


def delete_topics(admin: AdminClient, names: list[str], timeout: float = 30.0) -> list[str]:
    """Delete the named topics that exist; returns the ones deleted."""
    existing = _partition_counts(admin, timeout)
    present = [n for n in names if n in existing]
    if not present:
        return []
    for future in admin.delete_topics(present, operation_timeout=timeout).values():
        future.result(timeout)
    return present
