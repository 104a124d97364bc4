"""Creating the topics the service writes, and checking the ones it reads.

Source topics belong to their producers: their partition count, replication
and retention are the producers' choice, so the service never creates one. A
missing source topic stops it at start-up with the topic's name, where
creating it would hide a typo or fix a partition count nobody chose.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import structlog
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from service.config import Config
from service.core.layout import Layout, apply_layout, layout_topic
from service.core.topology import PipelinePlan, plan
from service.errors import ConfigError
from service.runtime.layout import read_layout

log = structlog.get_logger("sessionizer.topics")


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


def planned_topics(config: Config, plans: Mapping[str, PipelinePlan] | None = None) -> list[TopicSpec]:
    """Every topic the service writes, with how it is created when missing (``topics.create``).

    Never a source topic, unless the service writes it too (one pipeline's
    output read by another). A pipeline read straight from co-partitioned
    sources has no repartition topic, and its changelog has its sources'
    partition count.
    """
    n = config.topics.partitions
    specs: dict[str, TopicSpec] = {}

    def add(name: str, topic_config: dict[str, str] | None = None, partitions: int = n) -> None:
        specs.setdefault(name, TopicSpec(name, partitions, topic_config or {}))

    for pipeline in config.pipelines:
        plan = plans.get(pipeline.name) if plans else None
        if plan is None or not plan.direct:
            # Records are deleted by the service once consumed (purge), never by age.
            add(pipeline.repartition_topic, {"cleanup.policy": "delete", "retention.ms": "-1"})
        partitions = plan.partitions if plan is not None else n
        add(pipeline.changelog_topic, {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}, partitions)
        add(pipeline.output.topic)
        for topic in pipeline.derived_topics():
            add(topic)
        add(pipeline.late_topic)
        add(pipeline.dead_letter_topic)
    return list(specs.values())


def internal_topics(config: Config) -> list[str]:
    return [t for p in config.pipelines for t in (p.repartition_topic, p.changelog_topic)]


def every_generation(config: Config, existing: Collection[str]) -> list[str]:
    """The internal topics of every generation that exist, and the layout topic (for ``reset`` and ``rescale --cleanup``)."""
    bases = internal_topics(config)
    names = [n for n in existing if n in bases or any(n.startswith(f"{b}-g") and n[len(b) + 2 :].isdigit() for b in bases)]
    topic = layout_topic(config)
    return sorted(names) + ([topic] if topic in existing else [])


@dataclass(frozen=True)
class Prepared:
    """What start-up found: the configuration with the layout's topics, the layout, partitions per topic."""

    config: Config
    layout: Layout
    partitions: dict[str, int]


def prepare_topics(admin: AdminClient, config: Config, timeout: float = 30.0) -> Prepared:
    """Read the committed layout, check ``topics.partitions`` against it, then ``ensure_topics`` of its generation."""
    layout = read_layout(config, _partition_counts(admin, timeout), timeout)
    check_layout(config, layout)
    applied = apply_layout(config, layout)
    return Prepared(applied, layout, ensure_topics(admin, applied, timeout, layout))


def check_layout(config: Config, layout: Layout) -> None:
    """A service whose ``topics.partitions`` is not the state's partition count stops, naming the command that changes it."""
    if config.topics.partitions == layout.partitions:
        return
    if all(p.name in layout.direct for p in config.pipelines):
        return  # every pipeline reads its sources directly: their count, not topics.partitions, is the layout
    where = f"layout generation {layout.generation}" if layout.committed else "its changelogs"
    raise ConfigError(
        [
            f"topics.partitions = {config.topics.partitions}, but the application's state has {layout.partitions} "
            f"partitions ({where}): to change it, stop every replica and run "
            f"'sessionizer rescale --config <file> --partitions {config.topics.partitions}' "
            f"(docs/operations.md, \"Adding partitions\"), or set topics.partitions = {layout.partitions}"
        ]
    )


def ensure_topics(admin: AdminClient, config: Config, timeout: float = 30.0, layout: Layout | None = None) -> dict[str, int]:
    """Check the source topics, create what the service writes and is missing (when ``topics.create``); return partitions per topic.

    Sources come first: how a pipeline is read (directly or through a
    repartition topic) depends on their partition counts. A missing source
    topic is an error (``missing_sources``), except one the service writes
    itself, which is created first. A changelog must have as many partitions
    as the pipeline has tasks, or restored state would land in the wrong
    task: that is checked.
    """
    existing = _partition_counts(admin, timeout)
    problems = missing_sources(config, existing)
    if problems:
        raise ConfigError(problems)
    written_sources = [s for s in planned_topics(config) if s.name in config.source_topics()]
    existing = _create(admin, config, [s for s in written_sources if s.name not in existing], existing, timeout)
    direct = layout.direct if layout is not None and layout.committed else None
    plans = plan(config.pipelines, config.topics.partitions, existing, direct)
    specs = planned_topics(config, plans)
    existing = _create(admin, config, [s for s in specs if s.name not in existing], existing, timeout)
    for pipeline in config.pipelines:
        tasks = plans[pipeline.name].partitions
        if plans[pipeline.name].direct:
            shadowed = f"its sources ({tasks} partitions each)"
        else:
            tasks = existing[pipeline.repartition_topic]
            shadowed = f"{pipeline.repartition_topic} ({tasks})"
        changelog = existing[pipeline.changelog_topic]
        if changelog != tasks:
            raise ConfigError(
                [
                    f"{pipeline.changelog_topic} has {changelog} partitions but {shadowed} need {tasks}; "
                    f"they must match: stop every replica and run 'sessionizer rescale --config <file> --partitions {tasks}' "
                    "(docs/operations.md, \"Adding partitions\")"
                ]
            )
    return existing


def missing_sources(config: Config, existing: Collection[str]) -> list[str]:
    """One problem per source topic that does not exist (and that the service does not write itself)."""
    written = {spec.name for spec in planned_topics(config)}
    problems = []
    for topic in config.source_topics():
        if topic in existing or topic in written:
            continue
        readers = [repr(p.name) for p in config.pipelines if topic in p.sources]
        of = f"pipeline {readers[0]}" if len(readers) == 1 else f"pipelines {', '.join(readers)}"
        problems.append(f"source topic {topic!r} of {of} does not exist")
    return problems


def _create(admin: AdminClient, config: Config, missing: list[TopicSpec], existing: dict[str, int], timeout: float) -> dict[str, int]:
    if not missing:
        return existing
    if not config.topics.create:
        raise ConfigError(["missing topics and [topics] create = false: " + ", ".join(s.name for s in missing)])
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
    return _wait_for(admin, list(existing) + [s.name for s in missing], timeout)


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
