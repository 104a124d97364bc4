"""The layout of an application's state: how many partitions it has, and which topics hold it.

Window state is split by key into partitions: a key's windows live in
partition ``murmur2(key) % n`` of the pipeline's changelog, the partition the
repartition topic (or a co-partitioned producer) sends its events to. Kafka
cannot shrink a topic, and growing one moves keys, so changing ``n`` means new
internal topics: ``sessionizer rescale`` writes every key's state into a new
**generation** of them, partitioned for the new count, and then commits the
new layout in one record (``service.runtime.layout``). Until that record is
written the old generation is the truth; after it, the new one.

Generation 0 is the layout of an application never rescaled: its internal
topics keep their historical names, and the layout is read from their
partition counts. Generation g > 0 appends ``-g<g>`` to both names.

Stream time and watermarks move with the keys. A new partition receives
keys from one or more old partitions; its stream time and each source's
watermark are the **minimum** over those old partitions (over all of them
when it received no key). Never later than any old partition that held one
of its keys, they close no window earlier than the old layout would have,
and never turn an on-time event late: an event is judged by its own
source's watermark, which its own frame brings (``service.core.watermarks``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import orjson

from service.config import Config, PipelineConfig


@dataclass(frozen=True)
class Layout:
    generation: int
    #: Window tasks (and changelog partitions) of every pipeline read through a repartition topic.
    partitions: int
    #: Pipelines read straight from co-partitioned sources (their count is their sources').
    direct: frozenset[str] = frozenset()
    #: Written by ``rescale``; False for an application never rescaled (its layout is inferred).
    committed: bool = True

    def to_bytes(self) -> bytes:
        return orjson.dumps({"generation": self.generation, "partitions": self.partitions, "direct": sorted(self.direct)})

    @classmethod
    def from_bytes(cls, data: bytes) -> Layout:
        raw = orjson.loads(data)
        return cls(int(raw["generation"]), int(raw["partitions"]), frozenset(raw.get("direct", ())))


def generation_topic(base: str, generation: int) -> str:
    """An internal topic's name in ``generation``: the historical name for 0."""
    return base if generation == 0 else f"{base}-g{generation}"


def in_generation(pipeline: PipelineConfig, generation: int) -> PipelineConfig:
    """The pipeline with its internal topics of ``generation`` (from the generation-0 names the config parses)."""
    if pipeline.generation != 0:
        raise ValueError(f"pipeline {pipeline.name!r} already has generation {pipeline.generation}")
    return dataclasses.replace(
        pipeline,
        repartition_topic=generation_topic(pipeline.repartition_topic, generation),
        changelog_topic=generation_topic(pipeline.changelog_topic, generation),
        generation=generation,
    )


def apply_layout(config: Config, layout: Layout) -> Config:
    """The configuration as the runtime uses it: internal topics of the layout's generation."""
    if layout.generation == 0:
        return config
    return dataclasses.replace(config, pipelines=tuple(in_generation(p, layout.generation) for p in config.pipelines))


def layout_topic(config: Config) -> str:
    """The compacted one-partition topic whose last record is the committed layout."""
    return f"{config.topics.internal_prefix}{config.app_id}-layout"


# -- moving stream time and watermarks --------------------------------------------------


@dataclass
class PartitionMeta:
    """What one old partition's changelog said of event time: its stream time and its sources' watermarks."""

    stream_time: int | None = None
    watermarks: dict[int, int] = field(default_factory=dict)


def merged_meta(old: Mapping[int, PartitionMeta], senders: Iterable[int]) -> PartitionMeta:
    """A new partition's event time, from the old partitions that sent it keys (all of them when none did).

    The minimum of each: a stream time unknown in any sender is unknown, and
    so is a source's watermark that a sender did not have.
    """
    chosen = [old[p] for p in senders if p in old] or list(old.values())
    if not chosen:
        return PartitionMeta()
    times = [meta.stream_time for meta in chosen]
    stream_time = None if any(t is None for t in times) else min(t for t in times if t is not None)
    sources = set.intersection(*(set(meta.watermarks) for meta in chosen))
    return PartitionMeta(stream_time, {s: min(meta.watermarks[s] for meta in chosen) for s in sorted(sources)})
