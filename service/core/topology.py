"""How each pipeline is read: straight from its sources, or through a repartition topic.

All events of one key must meet in one task, with one store and one stream
time. When a pipeline groups by the record key (``key = "@key"``) and every
source has the pipeline's partition count, the sources are co-partitioned
already: a producer using Kafka's default partitioner put each key in
partition ``murmur2(key) % n`` of every topic. Task i then reads partition i
of every source directly, as Kafka Streams' ``groupByKey`` does, saving a
produce, a consume and a decode per event. Otherwise the source stage re-keys
every event through ``<app>-<pipeline>-repartition``, which is always right.

The direct path rests on an assumption about the producers; the window task
checks it on every new key (``service.core.partitioner``) and sends a record
found in the wrong partition to the dead-letter topic.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass

from service.config import PipelineConfig
from service.core.extract import RECORD_KEY


@dataclass(frozen=True)
class PipelinePlan:
    name: str
    #: The window tasks read the sources themselves (no repartition topic).
    direct: bool
    #: Window tasks, which is also the changelog's partition count.
    partitions: int
    #: Per source topic, in the pipeline's order: its partition count.
    source_partitions: tuple[int, ...]
    #: Why a pipeline grouped by the record key still repartitions; None otherwise.
    note: str | None = None

    @property
    def sources_per_task(self) -> int:
        """How many source partitions feed each window task."""
        return len(self.source_partitions) if self.direct else sum(self.source_partitions)


def plan_pipeline(
    config: PipelineConfig, partitions: int, counts: Mapping[str, int], direct: Container[str] | None = None
) -> PipelinePlan:
    """``partitions`` is the pipeline's partition count; ``counts`` the partition counts of existing topics.

    ``direct``: the pipelines a committed layout lets read their sources
    directly (``service.core.layout``); None before any rescale. A rescaled
    pipeline reads through its repartition topic unless the layout says so:
    records its sources got before they gained partitions are not where a
    direct task would look for their keys.
    """
    source_partitions = tuple(counts.get(topic, 0) for topic in config.sources)
    if config.key != (RECORD_KEY,):
        return PipelinePlan(config.name, False, partitions, source_partitions)
    if direct is not None and config.name not in direct:
        note = "grouped by the record key, rescaled to a layout that reads it through the repartition topic"
        return PipelinePlan(config.name, False, partitions, source_partitions, note)
    others = [f"{topic} has {n}" for topic, n in zip(config.sources, source_partitions) if n != partitions]
    if others:
        note = (
            f"grouped by the record key, but not co-partitioned ({', '.join(others)} partitions, "
            f"the pipeline {partitions}): reading through the repartition topic"
        )
        return PipelinePlan(config.name, False, partitions, source_partitions, note)
    return PipelinePlan(config.name, True, partitions, source_partitions)


def plan(
    configs: tuple[PipelineConfig, ...], partitions: int, counts: Mapping[str, int], direct: Container[str] | None = None
) -> dict[str, PipelinePlan]:
    return {config.name: plan_pipeline(config, partitions, counts, direct) for config in configs}
