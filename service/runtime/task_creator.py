"""Which tasks an assigned partition makes, and building them: Kafka Streams' ``ActiveTaskCreator``.

By pipeline (``service.core.topology``):

- a pipeline read through a repartition topic has a ``SourceTask`` per source
  partition (shared by every such pipeline reading the topic) and a
  ``WindowTask`` per repartition partition;
- a pipeline grouped by the record key over co-partitioned sources has a
  ``DirectTask`` per partition number, which reads partition i of every
  source. It is made only once all of them are assigned here; the group uses
  the range assignor then, which assigns partition i of every topic with the
  same partition count to the same member.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass, field

from service.config import Config
from service.core.pipeline import Pipeline
from service.core.source import SourceStage
from service.core.topology import PipelinePlan
from service.core.watermarks import source_id
from service.runtime.clients import pack_limit
from service.runtime.collector import Collector
from service.runtime.formats import Formats
from service.runtime.ids import Partition, TaskId
from service.runtime.standbys import Standbys
from service.runtime.state_manager import StateManager
from service.runtime.stats import LoopStats
from service.runtime.tasks import DirectTask, SourceTask, WindowTask
from service.state.memory import StoreMemory


@dataclass
class NewTasks:
    """What one assignment made."""

    sources: list[SourceTask] = field(default_factory=list)
    windows: list[WindowTask] = field(default_factory=list)


class TaskCreator:
    def __init__(
        self,
        config: Config,
        pipelines: tuple[Pipeline, ...],
        plans: Mapping[str, PipelinePlan],
        partitions: Mapping[str, int],
        collector: Collector,
        stats: LoopStats,
        formats: Formats,
        memory: StoreMemory,
        standbys: Standbys | None = None,
        recount: Callable[[str], int] | None = None,
    ) -> None:
        """``recount(topic)``: a topic's partition count now (direct tasks ask it of a key in the wrong partition)."""
        self._config = config
        self._recount = recount
        self._plans = plans
        #: Partitions per topic, as found at start-up.
        self._partitions = partitions
        self._collector = collector
        self._stats = stats
        self._formats = formats
        self._memory = memory
        self._standbys = standbys
        self._pack_limit = pack_limit(config)
        repartitioned = [p for p in pipelines if not plans[p.name].direct]
        #: Repartition topic -> its pipeline.
        self._by_repartition = {p.config.repartition_topic: p for p in repartitioned}
        self._stage = SourceStage(repartitioned, formats.decoders, formats.key_decoders)
        #: Source topic -> the direct pipelines reading it.
        self._direct_readers: dict[str, list[Pipeline]] = {}
        for pipeline in pipelines:
            if plans[pipeline.name].direct:
                for topic in dict.fromkeys(pipeline.config.sources):
                    self._direct_readers.setdefault(topic, []).append(pipeline)

    @property
    def topics(self) -> list[str]:
        """Every topic the consumer subscribes to: sources, then repartition topics."""
        sources = list(dict.fromkeys(self._stage.topics + list(self._direct_readers)))
        return sources + list(self._by_repartition)

    @property
    def repartition_topics(self) -> list[str]:
        return list(self._by_repartition)

    def partitions_of(self, topic: str) -> int:
        """Partitions of ``topic``, as found at start-up."""
        return self._partitions.get(topic, 0)

    @property
    def eager(self) -> bool:
        """Direct pipelines need co-partitioned assignments: the (eager) range assignor."""
        return bool(self._direct_readers)

    def is_source(self, where: Partition) -> bool:
        """``where`` is a partition of a source topic (whatever reads it)."""
        return bool(self._stage.routes(where.topic)) or where.topic in self._direct_readers

    def create(self, where: Partition, assigned: Container[Partition], existing: Container[TaskId]) -> NewTasks:
        """The tasks ``where``, newly assigned, makes; ``assigned``: every partition assigned here now."""
        made = NewTasks()
        pipeline = self._by_repartition.get(where.topic)
        if pipeline is not None:
            state = self._state(pipeline, where.partition)
            made.windows.append(WindowTask(state, [where], self._collector, self.sources_of(pipeline), self._on_emit(pipeline)))
            return made
        if self._stage.routes(where.topic):
            made.sources.append(
                SourceTask(
                    where,
                    self._stage,
                    self._partitions,
                    self._collector,
                    self._stats.source_dead_letters,
                    pack_limit=self._pack_limit,
                )
            )
        for direct in self._direct_readers.get(where.topic, ()):
            task_id = TaskId(direct.name, where.partition)
            needed = [Partition(topic, where.partition) for topic in direct.config.sources]
            if task_id not in existing and all(i in assigned for i in needed):
                state = self._state(direct, where.partition)
                made.windows.append(
                    DirectTask(
                        state,
                        self._collector,
                        self._plans[direct.name].partitions,
                        self._formats.decoders,
                        self._formats.key_decoders,
                        self._on_emit(direct),
                        self._recount,
                    )
                )
        return made

    def _state(self, pipeline: Pipeline, partition: int) -> StateManager:
        """A new active task's store: its standby copy's when this instance keeps one, opened afresh otherwise."""
        copy = self._standbys.take(TaskId(pipeline.name, partition)) if self._standbys is not None else None
        return copy if copy is not None else StateManager(self._config, pipeline, partition, self._memory)

    def direct_sources(self) -> dict[str, int]:
        """Each source topic of a direct pipeline, with the partition count its pipeline's state has."""
        return {topic: self._plans[readers[0].name].partitions for topic, readers in self._direct_readers.items()}

    def beyond_layout(self, where: Partition) -> str | None:
        """Why ``where`` must not be read: a partition a direct pipeline's layout does not have (None: it may)."""
        for direct in self._direct_readers.get(where.topic, ()):
            partitions = self._plans[direct.name].partitions
            if where.partition >= partitions:
                return (
                    f"source topic {where.topic!r} of pipeline {direct.name!r} gained partitions "
                    f"(partition {where.partition} assigned, the pipeline's state has {partitions})"
                )
        return None

    def waiting_inputs(self, assigned: Iterable[Partition], existing: Container[TaskId]) -> list[Partition]:
        """Assigned inputs of direct tasks that cannot run here: another input of theirs is elsewhere."""
        return [
            where
            for where in assigned
            for direct in self._direct_readers.get(where.topic, ())
            if TaskId(direct.name, where.partition) not in existing
        ]

    def sources_of(self, pipeline: Pipeline) -> list[int]:
        """Every source partition that feeds each of the pipeline's repartition window tasks."""
        return [
            source_id(index, partition)
            for index, topic in enumerate(pipeline.config.sources)
            for partition in range(self._partitions.get(topic, 0))
        ]

    def _on_emit(self, pipeline: Pipeline) -> Callable[[int], None]:
        return self._stats.emit_observer(pipeline.name)
