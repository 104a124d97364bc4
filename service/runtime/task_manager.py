"""The task manager: which tasks this instance runs, and committing them together.

It owns every task, creates them when the group assigns partitions, commits
and closes them when partitions are revoked, and drops them when partitions
are lost. It routes each polled batch to the tasks reading that partition,
keeps fast inputs from running far ahead of slow ones (``Alignment``),
tells ``SourceEnds`` how far each source partition is read, so that a quiet
one's watermark follows the wall clock (``service.runtime.ends``), and runs
the commit sequence described in ``service.runtime.checkpoint``. Kafka
Streams splits the same work between its ``TaskManager`` and
``TaskExecutor``; here one class is enough.

Tasks, by pipeline (``service.core.topology``):

- a pipeline read through a repartition topic has a ``SourceTask`` per source
  partition (shared by every such pipeline reading the topic) and a
  ``WindowTask`` per repartition partition;
- a pipeline grouped by the record key over co-partitioned sources has a
  ``DirectTask`` per partition number, which reads partition i of every
  source. It runs only while all of them are assigned here; the group uses
  the range assignor then, which assigns partition i of every topic with the
  same partition count to the same member.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import cast

import structlog
from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from service.config import Config
from service.core.pipeline import Pipeline
from service.core.source import SourceStage
from service.core.topology import PipelinePlan
from service.core.watermarks import source_id
from service.errors import BrokerError, CommitFailed
from service.runtime.alignment import RESTORING, Alignment
from service.runtime.changelog_reader import ChangelogReader
from service.runtime.checkpoint import Checkpoint
from service.runtime.client_errors import CLIENT_ERRORS, ClientErrors
from service.runtime.collector import RecordCollector
from service.runtime.ends import SourceEnds
from service.runtime.formats import Formats
from service.runtime.frames import Record
from service.runtime.ids import Partition, TaskId
from service.runtime.producer import TransactionalProducer
from service.runtime.state_manager import StateManager
from service.runtime.stats import LoopStats, TaskCounts
from service.runtime.tasks import DirectTask, SourceTask, TaskState, WindowTask
from service.state.memory import StoreMemory

log = structlog.get_logger("sessionizer.tasks")

#: Why a direct task's input is paused: another of its inputs is assigned elsewhere.
WAITING = "waiting for its co-partitioned inputs"
#: Why a partition is paused: its next record's schema is being fetched from the registry.
WAITING_FOR_SCHEMA = "waiting for the schema registry"


def _log_purge_failure(future: Future[object]) -> None:
    error = future.exception()
    if error is not None:
        log.warning("purging repartition records failed", error=str(error))


class TaskManager:
    def __init__(
        self,
        config: Config,
        pipelines: tuple[Pipeline, ...],
        plans: Mapping[str, PipelinePlan],
        consumer: Consumer,
        producer: TransactionalProducer,
        reader: ChangelogReader,
        admin: AdminClient,
        stats: LoopStats,
        partitions: Mapping[str, int],
        clock: Callable[[], float] = time.monotonic,
        formats: Formats | None = None,
        wall_clock: Callable[[], float] = time.time,
        client_errors: ClientErrors = CLIENT_ERRORS,
        ends_admin: Callable[[], AdminClient] | None = None,
    ) -> None:
        self.config = config
        #: The clock (monotonic seconds) tasks and commits read; tests pass their own.
        self.clock = clock
        #: The wall clock (epoch seconds) quiet sources' watermarks follow.
        self.wall_clock = wall_clock
        self.pipelines = pipelines
        self.plans = plans
        self.consumer = consumer
        self.producer = producer
        #: What every task writes through, into the producer's open transaction.
        self.collector = RecordCollector(producer)
        self.reader = reader
        reader.on_restored = self._restored
        self.stats = stats
        self._admin = admin
        #: Partitions per topic, as found at start-up.
        self.partitions = partitions
        #: The memory every store of this process shares.
        self.memory = StoreMemory(config.state)
        repartitioned = [p for p in pipelines if not plans[p.name].direct]
        self._direct = [p for p in pipelines if plans[p.name].direct]
        self._by_repartition = {p.config.repartition_topic: p for p in repartitioned}
        #: How topics that are not JSON are decoded, and the gate that makes their partitions wait for the registry.
        self.formats = formats if formats is not None else Formats(config)
        self.schemas = self.formats.gate(stats)
        self._stage = SourceStage(repartitioned, self.formats.decoders, self.formats.key_decoders)
        #: Source topic -> (direct pipeline, the topic's index in its sources)
        self._direct_readers: dict[str, list[tuple[Pipeline, int]]] = {}
        for pipeline in self._direct:
            for index, topic in enumerate(dict.fromkeys(pipeline.config.sources)):
                self._direct_readers.setdefault(topic, []).append((pipeline, index))
        self.source_tasks: dict[Partition, SourceTask] = {}
        self.window_tasks: dict[TaskId, WindowTask] = {}
        #: Partition -> the window task reading it (a repartition partition, or a direct task's input).
        self._window_inputs: dict[Partition, list[tuple[WindowTask, int]]] = {}
        self.assigned: set[Partition] = set()
        #: The first offset read from each partition since it was assigned: where a rewind
        #: goes when the group has no committed offset for it yet.
        self._first_offsets: dict[Partition, int] = {}
        #: The next offset each partition should hand over: after the last record
        #: processed, or where it was last sought. Records below it are re-deliveries.
        self._positions: dict[Partition, int] = {}
        #: Partition each partition's end was last reached (librdkafka's end-of-partition event),
        #: until a record or a seek makes it out of date.
        self._ends_at: dict[Partition, int] = {}
        #: Which source partitions are quiet, asked of the broker (``service.runtime.ends``).
        self.ends = SourceEnds(
            ends_admin if ends_admin is not None else lambda: admin,
            config.idle_timeout_ms / 1000,
            lambda: client_errors.count,
            read_committed=config.exactly_once,
            interval=config.punctuate_interval_ms / 1000,
        )
        self._redelivery_logged = 0.0
        self.checkpoint = Checkpoint(self._by_repartition)
        self.alignment = Alignment(consumer, config.max_drift_ms, config.max_task_idle_ms / 1000)
        self._sent_at_commit = 0
        #: Seconds a transactional call may take (three times that before it counts as hung).
        self.commit_timeout = 10.0
        self._purge_interval = config.topics.purge_interval_ms / 1000
        self._next_purge = time.monotonic() + self._purge_interval
        #: Called with (where, count) for each partition's batch (consumption metrics).
        self.on_consumed: Callable[[Partition, int], None] = stats.count_consumed

    @property
    def topics(self) -> list[str]:
        """Every topic the consumer subscribes to: sources, then repartition topics."""
        sources = list(dict.fromkeys(self._stage.topics + list(self._direct_readers)))
        return sources + list(self._by_repartition)

    @property
    def eager(self) -> bool:
        """Direct pipelines need co-partitioned assignments: the (eager) range assignor."""
        return bool(self._direct)

    @property
    def running_tasks(self) -> list[WindowTask]:
        return [t for t in self.window_tasks.values() if t.state is TaskState.RUNNING]

    # -- processing -------------------------------------------------------------

    def route(self, batch: list[Message]) -> None:
        """Hand each partition's records to the tasks reading it; apply end-of-partition events after them."""
        messages = cast(list[Record], batch)
        groups: dict[Partition, list[Record]] = {}
        ends: list[tuple[Partition, int]] = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    ends.append((Partition(message.topic(), message.partition()), message.offset()))
                elif error.fatal():
                    raise BrokerError(str(error))
                else:
                    log.warning("consume error", error=str(error))
                continue
            where = Partition(message.topic(), message.partition())
            group = groups.get(where)
            if group is None:
                groups[where] = [message]
            else:
                group.append(message)
        if self._positions:
            groups = self._drop_redelivered(groups)
        if self.schemas is not None:
            groups, waiting = self._admit(groups)
            if waiting:  # their end-of-partition events came after records not processed yet
                ends = [(where, offset) for where, offset in ends if where not in waiting]
        for where, group in groups.items():
            if not self._process(where, group):
                continue
            self._first_offsets.setdefault(where, group[0].offset())
            self._positions[where] = group[-1].offset() + 1
            self._ends_at.pop(where, None)
            self.ends.records(where)
            self.checkpoint.advance(where, group[-1].offset() + 1)
            self.on_consumed(where, len(group))
        # A partition's end-of-partition event follows its records in the batch,
        # so it is applied after them.
        for where, offset in ends:
            self._ends_at[where] = offset
            source = self.source_tasks.get(where)
            if source is not None:
                source.caught_up = True
            for task, index in self._window_inputs.get(where, ()):
                if isinstance(task, DirectTask):
                    task.input_caught_up(index)
        if groups:
            self.alignment.align(self.source_tasks.values(), self.running_tasks, self.clock())

    def _drop_redelivered(self, groups: dict[Partition, list[Record]]) -> dict[Partition, list[Record]]:
        """Each partition's records from its position on: what was processed already is not processed twice.

        librdkafka can hand a partition's records over again after a pause and a
        resume close to an assignment (the fetcher restarts from a stale
        position; seen with 2.16). Counting them again would break exactly-once,
        so they are dropped here, and a partition that is wholly behind is sought
        back to where it should be.
        """
        kept: dict[Partition, list[Record]] = {}
        dropped = 0
        for where, group in groups.items():
            position = self._positions.get(where)
            if position is None or group[0].offset() >= position:
                kept[where] = group
                continue
            fresh = [m for m in group if m.offset() >= position]
            dropped += len(group) - len(fresh)
            if fresh:
                kept[where] = fresh
            else:
                self._seek(where, position)
        if dropped:
            self.stats.redelivered += dropped
            now = time.monotonic()
            if now - self._redelivery_logged >= 10.0:
                self._redelivery_logged = now
                log.warning("records handed over again were dropped", records=dropped, total=self.stats.redelivered)
        return kept

    def _seek(self, where: Partition, offset: int) -> None:
        """Read a partition again from ``offset``: the next record processed from it is that one."""
        self._positions[where] = offset
        self._ends_at.pop(where, None)
        try:
            self.consumer.seek(TopicPartition(where[0], where[1], offset))
        except KafkaException as exc:
            log.warning("seek failed", topic=where[0], partition=where[1], error=str(exc.args[0]))

    def _admit(self, groups: dict[Partition, list[Record]]) -> tuple[dict[Partition, list[Record]], set[Partition]]:
        """Each partition's records up to the first whose schema the registry has not given yet.

        That partition is put back at that record and paused until the schema
        is fetched (``service.runtime.formats.gate``); nothing after it is processed first.
        """
        gate = self.schemas
        assert gate is not None  # called only with one
        admitted = {}
        waiting = set()
        for where, group in groups.items():
            count = gate.admit(where, group)
            if count < len(group):
                self._seek(where, group[count].offset())
                self.alignment.hold([where], WAITING_FOR_SCHEMA)
                waiting.add(where)
                # Records wait: the partition is not read to its end, and not quiet.
                self.ends.records(where)
                source = self.source_tasks.get(where)
                if source is not None:
                    source.caught_up = False
                for task, index in self._window_inputs.get(where, ()):
                    if isinstance(task, DirectTask):
                        task.input_waiting(index)
            if count:
                admitted[where] = group[:count] if count < len(group) else group
        return admitted, waiting

    def poll_schemas(self) -> None:
        """Resume the partitions whose next record's schema has arrived (every loop iteration)."""
        if self.schemas is not None:
            resumed = self.schemas.poll()
            if resumed:
                self.alignment.release(resumed, WAITING_FOR_SCHEMA)

    def _process(self, where: Partition, group: list[Record]) -> bool:
        """Give one partition's records to its readers; False when none may read them yet."""
        readers = self._window_inputs.get(where, [])
        for task, _ in readers:
            if task.state is not TaskState.RUNNING:
                # Fetched before the partition was paused for a restore: read
                # them again once the task runs.
                self._seek(where, group[0].offset())
                return False
        source = self.source_tasks.get(where)
        if source is None and not readers:
            return False
        if source is not None:
            source.process(group)
        for task, index in readers:
            if isinstance(task, DirectTask):
                task.process_input(index, group)
            else:
                task.process(group)
        return True

    def punctuate(self, now: float) -> None:
        """Ask which source partitions are quiet; move every running task's stream time on."""
        self.ends.probe(now, int(self.wall_clock() * 1000), self._read_up_to)
        for task in self.running_tasks:
            if isinstance(task, DirectTask):
                for index, where in enumerate(task.inputs):
                    bound = self.ends.bound(where, now)
                    if bound is not None:
                        task.input_bound(index, bound)
            task.punctuate(now)
        self.alignment.align(self.source_tasks.values(), self.running_tasks, now)

    def _read_up_to(self, where: Partition) -> int | None:
        """The offset this instance has read ``where`` up to: past its last record, or where its end was reached."""
        position = self._positions.get(where)
        end = self._ends_at.get(where)
        if end is None or (position is not None and position > end):
            return position
        return end

    def sources_of(self, pipeline: Pipeline) -> list[int]:
        """Every source partition that feeds each of the pipeline's repartition window tasks."""
        return [
            source_id(index, partition)
            for index, topic in enumerate(pipeline.config.sources)
            for partition in range(self.partitions.get(topic, 0))
        ]

    # -- commits ----------------------------------------------------------------

    def commit(self) -> None:
        """Commit state, output and offsets together (the steps are in ``service.runtime.checkpoint``)."""
        started = time.perf_counter()
        now = self.clock()
        for where, source in self.source_tasks.items():
            source.prepare_commit(now, self.ends.bound(where, now))
        prepared = [task for task in self.running_tasks if task.prepare_commit()]
        if not self.checkpoint and not prepared and self.collector.sent == self._sent_at_commit:
            return
        offsets = self.checkpoint.offsets()
        transaction_started = time.perf_counter()
        try:
            self.producer.commit(offsets, self.consumer.consumer_group_metadata(), self.commit_timeout)
        except CommitFailed as exc:
            log.warning("commit failed, aborting and rewinding", error=str(exc))
            self.abort_and_rewind()
            return
        transaction_seconds = time.perf_counter() - transaction_started
        for source in self.source_tasks.values():
            source.post_commit()
        for task in prepared:
            task.post_commit()
        offsets_committed = True
        if not self.config.exactly_once and offsets:
            try:
                self.consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                # Kept for the next commit; meanwhile nothing after the committed offset may be purged.
                log.warning("offset commit failed; records will be processed again", error=str(exc.args[0]))
                offsets_committed = False
        if offsets_committed:
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
        records: no source partition counts as quiet until the broker has shown
        it read to its end for the idle timeout again (``service.runtime.ends``).
        """
        self.stats.aborts += 1
        self.ends.rewound()
        self.producer.abort()
        uncertain, self.producer.uncertain = self.producer.uncertain, False
        for window in self.running_tasks:
            window.rollback()
            if uncertain:
                # The transaction may have committed after all: whatever it wrote
                # to the changelog is read back before the task goes on.
                self._restore(window)
        for source in self.source_tasks.values():
            source.rollback()
        self.checkpoint.rewind()
        self._sent_at_commit = self.collector.sent
        if not lost:
            self.seek_to_committed()

    def seek_to_committed(self, patience: float = 20.0) -> None:
        """Put every active partition back at its committed offset.

        The offsets are read while the broker answers within ``patience``.
        After that the partitions are assigned again with no offset: the
        consumer then fetches the committed ones itself, in the background,
        and reads from there. Waiting on longer would block the loop, and
        with it a rebalance the consumer may need a poll to finish before it
        answers (seen after a broker restart on a loaded machine: ``committed``
        timed out for minutes while the loop waited on it).
        """
        wheres = set(self.source_tasks)
        for task in self.window_tasks.values():
            wheres.update(task.inputs)
        active = [TopicPartition(topic, partition) for topic, partition in sorted(wheres)]
        if not active:
            return
        deadline = time.monotonic() + patience
        while True:
            try:
                committed = self.consumer.committed(active, timeout=min(10.0, patience))
                break
            except KafkaException as exc:
                if time.monotonic() > deadline:
                    log.warning("committed offsets unreadable; reassigning, the consumer reads them itself", error=str(exc.args[0]))
                    self._reassign_at_committed(active)
                    return
                log.warning("reading committed offsets failed, retrying", error=str(exc.args[0]))
                time.sleep(1.0)
        for tp in committed:
            if tp.offset < 0:
                # Nothing committed yet: back to where this member started reading
                # (auto.offset.reset chose it); nothing read, nothing to undo.
                first = self._first_offsets.get(Partition(tp.topic, tp.partition))
                if first is None:
                    continue
                tp.offset = first
            self._seek(Partition(tp.topic, tp.partition), tp.offset)

    def _reassign_at_committed(self, active: list[TopicPartition]) -> None:
        """Assign ``active`` again with no offset, so the consumer starts them at their committed offsets.

        An assignment resumes its partitions: those held (restoring, ahead,
        waiting) are paused again.
        """
        fresh = [TopicPartition(tp.topic, tp.partition, OFFSET_INVALID) for tp in active]
        try:
            if self.eager:
                wheres = {Partition(tp.topic, tp.partition) for tp in active}
                others = [tp for tp in self.consumer.assignment() if Partition(tp.topic, tp.partition) not in wheres]
                self.consumer.assign(fresh + others)
            else:
                self.consumer.incremental_unassign(active)
                self.consumer.incremental_assign(fresh)
        except KafkaException as exc:
            log.warning("reassigning failed", error=str(exc.args[0]))
            return
        for tp in active:
            self._positions.pop(Partition(tp.topic, tp.partition), None)  # not known until records come
            self._ends_at.pop(Partition(tp.topic, tp.partition), None)
        held = self.alignment.paused
        if held:
            self.consumer.pause([TopicPartition(topic, partition) for topic, partition in held])

    # -- rebalances -------------------------------------------------------------

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.stats.rebalances += 1
        log.info("partitions assigned", partitions=[f"{p.topic}-{p.partition}" for p in partitions])
        if self.eager:
            consumer.assign(partitions)
        else:
            consumer.incremental_assign(partitions)
        new_tasks: list[WindowTask] = []
        for tp in partitions:
            where = Partition(tp.topic, tp.partition)
            self.assigned.add(where)
            pipeline = self._by_repartition.get(tp.topic)
            if pipeline is not None:
                task = WindowTask(
                    StateManager(self.config, pipeline, tp.partition, self.memory),
                    tp.topic,
                    self.collector,
                    self.sources_of(pipeline),
                )
                new_tasks.append(task)
                continue
            if self._stage.routes(tp.topic) or tp.topic in self._direct_readers:
                self.ends.track(where)
            if self._stage.routes(tp.topic):
                self.source_tasks[where] = SourceTask(
                    tp.topic, tp.partition, self._stage, self.partitions, self.collector, self.stats.source_dead_letters
                )
            for direct, _ in self._direct_readers.get(tp.topic, ()):
                task_id = TaskId(direct.name, tp.partition)
                needed = [Partition(topic, tp.partition) for topic in direct.config.sources]
                if task_id not in self.window_tasks and all(i in self.assigned for i in needed):
                    state = StateManager(self.config, direct, tp.partition, self.memory)
                    new_tasks.append(
                        DirectTask(
                            state,
                            self.collector,
                            self.plans[direct.name].partitions,
                            self.formats.decoders,
                            self.formats.key_decoders,
                        )
                    )
        for task in new_tasks:
            task.processor.on_emit = self.stats.emit_observer(task.pipeline.name)
            self.window_tasks[task.task_id] = task
            for index, where in enumerate(task.inputs):
                self._window_inputs.setdefault(where, []).append((task, index))
        # A partition a direct task needs is held while that task cannot run
        # here, even if a source task reads it too: they share its offset.
        waiting = self._incomplete_direct_inputs()
        inputs = [w for task in new_tasks for w in task.inputs]
        self.alignment.hold(inputs, RESTORING)
        self.alignment.release(inputs, WAITING)
        self.alignment.hold(waiting, WAITING)
        if waiting:
            log.warning(
                "inputs of a direct task are split between instances; they wait until the group reassigns them",
                partitions=[f"{t}-{p}" for t, p in waiting],
            )
        for task in new_tasks:
            self.reader.begin(task.state_manager, reset=task.reset_store)

    def _restore(self, task: WindowTask) -> None:
        """Bring a running task's store up to its changelog again before it processes anything more."""
        task.state = TaskState.RESTORING
        self.alignment.hold(task.inputs, RESTORING)
        self.reader.begin(task.state_manager, reset=task.reset_store)

    def _incomplete_direct_inputs(self) -> list[Partition]:
        """Assigned inputs of direct tasks that cannot run here: another input of theirs is elsewhere."""
        return [
            where
            for where in self.assigned
            for direct, _ in self._direct_readers.get(where[0], ())
            if (direct.name, where[1]) not in self.window_tasks
        ]

    def _restored(self, state: StateManager) -> None:
        task = self.window_tasks.get(TaskId(state.pipeline.name, state.partition))
        if task is None or task.state_manager is not state:
            return
        task.started()
        self.alignment.resume_restored(task.inputs)

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
        if self.schemas is not None:
            self.schemas.forget(Partition(tp.topic, tp.partition) for tp in partitions)
        for tp in partitions:
            where = Partition(tp.topic, tp.partition)
            self.assigned.discard(where)
            self._first_offsets.pop(where, None)
            self._positions.pop(where, None)
            self._ends_at.pop(where, None)
            self.ends.forget(where)
            self.checkpoint.forget(where)
            self.alignment.forget(where)
            self.source_tasks.pop(where, None)
            for task, _ in list(self._window_inputs.get(where, ())):
                self._drop(task)

    def _drop(self, task: WindowTask) -> None:
        """Close a window task that lost one of its inputs; its other inputs stay assigned, unread."""
        if self.window_tasks.pop(task.task_id, None) is None:
            return
        for where in task.inputs:
            readers = [(t, i) for t, i in self._window_inputs.get(where, ()) if t is not task]
            if readers:
                self._window_inputs[where] = readers
            else:
                self._window_inputs.pop(where, None)
            if where in self.assigned:
                self.alignment.hold([where], WAITING)
        self.reader.cancel(task.state_manager)
        self._close(task)

    def _close(self, task: WindowTask) -> None:
        self.stats.retire(task.task_id, task.counts())
        task.close()

    def close(self) -> None:
        """Close every remaining store (after the consumer left the group)."""
        for task in list(self.window_tasks.values()):
            self._close(task)
        if self.schemas is not None:
            self.schemas.close()
        self.window_tasks.clear()
        self._window_inputs.clear()
        self.source_tasks.clear()

    # -- for metrics --------------------------------------------------------------

    def task_counts(self) -> dict[TaskId, TaskCounts]:
        """Totals per (pipeline, partition): retired tasks' final counts plus live tasks'."""
        totals: dict[TaskId, TaskCounts] = {}
        for task_id, retired in self.stats.retired.items():
            totals.setdefault(task_id, TaskCounts()).add(retired)
        for task in self.window_tasks.values():
            totals.setdefault(task.task_id, TaskCounts()).add(task.counts())
        return totals
