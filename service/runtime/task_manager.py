"""The task manager: which tasks this instance runs, and committing them together.

It owns every task, creates them when the group assigns partitions, commits
and closes them when partitions are revoked, and drops them when partitions
are lost. It routes each polled batch to its task, and runs the commit
sequence described in ``service.runtime.checkpoint``. Kafka Streams splits the
same work between its ``TaskManager`` and ``TaskExecutor``; here one class is
enough.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from service.config import Config
from service.core.pipeline import Pipeline
from service.core.source import SourceStage
from service.core.watermarks import source_id
from service.errors import BrokerError, CommitFailed
from service.runtime.changelog_reader import ChangelogReader
from service.runtime.checkpoint import Checkpoint
from service.runtime.collector import RecordCollector
from service.runtime.state_manager import StateManager
from service.runtime.stats import LoopStats, TaskCounts
from service.runtime.tasks import SourceTask, TaskState, WindowTask

log = structlog.get_logger("sessionizer.tasks")

Where = tuple[str, int]


def _log_purge_failure(future: object) -> None:
    error = future.exception()  # type: ignore[attr-defined]
    if error is not None:
        log.warning("purging repartition records failed", error=str(error))


class TaskManager:
    def __init__(
        self,
        config: Config,
        pipelines: tuple[Pipeline, ...],
        consumer: Consumer,
        collector: RecordCollector,
        reader: ChangelogReader,
        admin: AdminClient,
        stats: LoopStats,
        partitions: Mapping[str, int],
    ) -> None:
        self.config = config
        self.pipelines = pipelines
        self.consumer = consumer
        self.collector = collector
        self.reader = reader
        reader.on_restored = self._restored
        self.stats = stats
        self._admin = admin
        #: Partitions per topic, as found at start-up.
        self.partitions = partitions
        self._by_repartition = {p.config.repartition_topic: p for p in pipelines}
        self._stage = SourceStage(pipelines)
        self.source_tasks: dict[Where, SourceTask] = {}
        self.window_tasks: dict[Where, WindowTask] = {}
        self.checkpoint = Checkpoint(self._by_repartition)
        self._sent_at_commit = 0
        self._purge_interval = config.topics.purge_interval_ms / 1000
        self._next_purge = time.monotonic() + self._purge_interval
        #: Called with (where, count) for each partition's batch (consumption metrics).
        self.on_consumed: Callable[[Where, int], None] = stats.count_consumed

    @property
    def topics(self) -> list[str]:
        """Every topic the consumer subscribes to: sources, then repartition topics."""
        return self._stage.topics + list(self._by_repartition)

    @property
    def running_tasks(self) -> list[WindowTask]:
        return [t for t in self.window_tasks.values() if t.state is TaskState.RUNNING]

    # -- processing -------------------------------------------------------------

    def route(self, messages: list[Message]) -> None:
        """Hand each partition's records to its task; apply end-of-partition events after them."""
        groups: dict[Where, list[Message]] = {}
        ends: list[Where] = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    ends.append((message.topic(), message.partition()))  # type: ignore[arg-type]
                elif error.fatal():
                    raise BrokerError(str(error))
                else:
                    log.warning("consume error", error=str(error))
                continue
            where = (message.topic(), message.partition())
            group = groups.get(where)  # type: ignore[arg-type]
            if group is None:
                groups[where] = [message]  # type: ignore[index]
            else:
                group.append(message)
        for where, group in groups.items():
            window = self.window_tasks.get(where)
            if window is not None:
                if window.state is not TaskState.RUNNING:
                    # Fetched before the partition was paused for its restore:
                    # read them again once the task runs.
                    self.consumer.seek(TopicPartition(where[0], where[1], group[0].offset()))
                    continue
                window.process(group)
            else:
                source = self.source_tasks.get(where)
                if source is None:
                    continue
                source.process(group)
            self.checkpoint.advance(where, group[-1].offset() + 1)
            self.on_consumed(where, len(group))
        # A partition's end-of-partition event follows its records in the batch,
        # so it is applied after them.
        for where in ends:
            task = self.window_tasks.get(where) or self.source_tasks.get(where)
            if task is not None:
                task.caught_up = True

    def punctuate(self, now: float) -> None:
        """Stream time of every running task: its sources' watermarks, and the wall clock once all are idle."""
        for task in self.running_tasks:
            task.punctuate(now)

    def sources_of(self, pipeline: Pipeline) -> list[int]:
        """Every source partition that feeds each of the pipeline's window tasks."""
        return [
            source_id(index, partition)
            for index, topic in enumerate(pipeline.config.sources)
            for partition in range(self.partitions.get(topic, 0))
        ]

    # -- commits ----------------------------------------------------------------

    def commit(self) -> None:
        """Commit state, output and offsets together (the steps are in ``service.runtime.checkpoint``)."""
        started = time.perf_counter()
        now = time.monotonic()
        for source in self.source_tasks.values():
            source.prepare_commit(now)
        prepared = [task for task in self.running_tasks if task.prepare_commit()]
        if not self.checkpoint and not prepared and self.collector.sent == self._sent_at_commit:
            return
        offsets = self.checkpoint.offsets()
        transaction_started = time.perf_counter()
        try:
            self.collector.commit(offsets, self.consumer.consumer_group_metadata())
        except CommitFailed as exc:
            log.warning("commit failed, aborting and rewinding", error=str(exc))
            self.abort_and_rewind()
            return
        transaction_seconds = time.perf_counter() - transaction_started
        for source in self.source_tasks.values():
            source.post_commit()
        for task in prepared:
            task.post_commit()
        if not self.config.exactly_once and offsets:
            try:
                self.consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                log.warning("offset commit failed; records will be processed again", error=str(exc.args[0]))
        self.checkpoint.committed()
        self._sent_at_commit = self.collector.sent
        self.stats.records_sent = self.collector.sent
        self._purge()
        self.stats.committed(time.perf_counter() - started, transaction_seconds)

    def _purge(self) -> None:
        """Delete repartition records every commit has moved past, as Kafka Streams does.

        Repartition topics keep records forever (a retention would lose events
        that wait unconsumed); the service deletes what it has committed.
        """
        now = time.monotonic()
        if now < self._next_purge or not self.checkpoint.purgeable:
            return
        self._next_purge = now + self._purge_interval
        for future in self._admin.delete_records(self.checkpoint.take_purgeable()).values():
            future.add_done_callback(_log_purge_failure)

    def abort_and_rewind(self, lost: bool = False) -> None:
        """Undo everything since the last commit: transaction, stores, positions.

        Whatever happened (a broker outage, a lost generation) may have hidden
        records: every task counts as not caught up, and no idle time counts,
        until a fresh end-of-partition event says so again.
        """
        self.stats.aborts += 1
        self.collector.abort()
        for window in self.running_tasks:
            window.rollback()
        for window in self.window_tasks.values():
            window.caught_up = False
        for source in self.source_tasks.values():
            source.rollback()
        self.checkpoint.rewind()
        self._sent_at_commit = self.collector.sent
        if not lost:
            self.seek_to_committed()

    def seek_to_committed(self, patience: float = 120.0) -> None:
        """Put every active partition back at its committed offset (retrying while the broker is away)."""
        active = [TopicPartition(topic, partition) for (topic, partition) in self.source_tasks]
        active += [TopicPartition(t.topic, t.partition) for t in self.running_tasks]
        if not active:
            return
        deadline = time.monotonic() + patience
        while True:
            try:
                committed = self.consumer.committed(active, timeout=10)
                break
            except KafkaException as exc:
                if time.monotonic() > deadline:
                    raise
                log.warning("reading committed offsets failed, retrying", error=str(exc.args[0]))
                time.sleep(1.0)
        for tp in committed:
            if tp.offset < 0:
                tp.offset = OFFSET_BEGINNING
            try:
                self.consumer.seek(tp)
            except KafkaException as exc:
                log.warning("seek failed", topic=tp.topic, partition=tp.partition, error=str(exc.args[0]))

    # -- rebalances -------------------------------------------------------------

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.stats.rebalances += 1
        log.info("partitions assigned", partitions=[f"{p.topic}-{p.partition}" for p in partitions])
        consumer.incremental_assign(partitions)
        new_tasks = []
        for tp in partitions:
            where = (tp.topic, tp.partition)
            pipeline = self._by_repartition.get(tp.topic)
            if pipeline is None:
                self.source_tasks[where] = SourceTask(
                    tp.topic, tp.partition, self._stage, self.partitions, self.collector, self.stats.source_dead_letters
                )
                continue
            task = WindowTask(
                StateManager(self.config, pipeline, tp.partition), tp.topic, self.collector, self.sources_of(pipeline)
            )
            task.processor.on_emit = self.stats.emit_observer(pipeline.name)
            self.window_tasks[where] = task
            new_tasks.append(task)
        if new_tasks:
            consumer.pause([TopicPartition(t.topic, t.partition) for t in new_tasks])
        for task in new_tasks:
            self.reader.begin(task.state_manager, reset=task.reset_store)

    def _restored(self, state: StateManager) -> None:
        where = (state.pipeline.config.repartition_topic, state.partition)
        task = self.window_tasks.get(where)
        if task is None or task.state_manager is not state:
            return
        task.started()
        self.consumer.resume([TopicPartition(task.topic, task.partition)])

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if not partitions:
            return
        self.stats.rebalances += 1
        log.info("partitions revoked", partitions=[f"{p.topic}-{p.partition}" for p in partitions])
        self.commit()
        self._forget(partitions)

    def on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.stats.rebalances += 1
        log.warning("partitions lost", partitions=[f"{p.topic}-{p.partition}" for p in partitions])
        self.abort_and_rewind(lost=True)
        self._forget(partitions)
        self.seek_to_committed()

    def _forget(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            where = (tp.topic, tp.partition)
            self.checkpoint.forget(where)
            self.source_tasks.pop(where, None)
            task = self.window_tasks.pop(where, None)
            if task is not None:
                self.reader.cancel(task.state_manager)
                self._close(task)

    def _close(self, task: WindowTask) -> None:
        self.stats.retire((task.pipeline.name, task.partition), task.counts())
        task.close()

    def close(self) -> None:
        """Close every remaining store (after the consumer left the group)."""
        for task in list(self.window_tasks.values()):
            self._close(task)
        self.window_tasks.clear()
        self.source_tasks.clear()

    # -- for metrics --------------------------------------------------------------

    def task_counts(self) -> dict[tuple[str, int], TaskCounts]:
        """Totals per (pipeline, partition): retired tasks' final counts plus live tasks'."""
        totals: dict[tuple[str, int], TaskCounts] = {}
        for task_id, retired in self.stats.retired.items():
            totals.setdefault(task_id, TaskCounts()).add(retired)
        for task in self.window_tasks.values():
            totals.setdefault((task.pipeline.name, task.partition), TaskCounts()).add(task.counts())
        return totals
