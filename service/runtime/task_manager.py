"""The task manager: which tasks this instance runs, and what happens to them.

As Kafka Streams' ``TaskManager`` it owns the tasks' lifecycle and delegates
the rest:

- ``TaskCreator`` (``task_creator.py``) builds the tasks an assignment makes;
  ``Tasks`` (``registry.py``) holds them, by id and by input partition;
- ``ChangelogReader`` (``changelog_reader.py``) restores their stores, and is
  drained for the ones it finished;
- ``Positions`` (``positions.py``) knows how far each partition is read,
  drops records handed over twice, holds partitions for the schema registry,
  and rewinds them to their committed offsets;
- ``Committer`` (``checkpoint.py``) runs the commit sequence;
- ``Alignment`` (``alignment.py``) pauses inputs that run ahead, and
  ``SourceEnds`` (``ends.py``) finds the source partitions that are quiet.

The manager routes each polled batch to the tasks reading each partition and
takes every task through the same interface (``service.runtime.tasks``),
whatever its kind.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast

import structlog
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from service.config import Config
from service.core.pipeline import Pipeline
from service.core.topology import PipelinePlan
from service.errors import BrokerError, ConsumerFenced, LayoutChanged
from service.runtime.alignment import RESTORING, Alignment
from service.runtime.changelog_reader import ChangelogReader
from service.runtime.checkpoint import Checkpoint, Committer
from service.runtime.client_errors import CLIENT_ERRORS, ClientErrors
from service.runtime.collector import RecordCollector
from service.runtime.ends import SourceEnds
from service.runtime.formats import Formats
from service.runtime.frames import Record
from service.runtime.ids import Partition, TaskId
from service.runtime.in_hand import InHand
from service.runtime.positions import Groups, Positions
from service.runtime.producer import TransactionalProducer
from service.runtime.registry import Tasks
from service.runtime.standbys import Standbys
from service.runtime.stats import LoopStats, TaskCounts
from service.runtime.task_creator import TaskCreator
from service.runtime.tasks import SourceTask, Task, WindowTask
from service.state.memory import StoreMemory

log = structlog.get_logger("sessionizer.tasks")

#: Why a direct task's input is paused: another of its inputs is assigned elsewhere.
WAITING = "waiting for its co-partitioned inputs"
#: Why a partition is paused: its next record's schema is being fetched from the registry.
WAITING_FOR_SCHEMA = "waiting for the schema registry"


@dataclass(frozen=True)
class Clients:
    """The Kafka clients the task manager works through, made by the loop (fakes in tests)."""

    consumer: Consumer
    producer: TransactionalProducer
    #: The consumer restores read changelogs with (it belongs to no group).
    restore_consumer: Consumer
    admin: AdminClient
    #: Makes the admin client that asks for end offsets (``service.runtime.ends``); None: ``admin`` itself.
    ends_admin: Callable[[], AdminClient] | None = None
    #: What every client reports through librdkafka's error callback.
    errors: ClientErrors = CLIENT_ERRORS


@dataclass(frozen=True)
class Clocks:
    """The clocks tasks and commits read; tests pass their own."""

    #: Monotonic seconds.
    monotonic: Callable[[], float] = time.monotonic
    #: Epoch seconds: quiet sources' watermarks follow it.
    wall: Callable[[], float] = time.time


class TaskManager:
    def __init__(
        self,
        config: Config,
        pipelines: tuple[Pipeline, ...],
        plans: Mapping[str, PipelinePlan],
        partitions: Mapping[str, int],
        clients: Clients,
        stats: LoopStats,
        formats: Formats | None = None,
        clocks: Clocks = Clocks(),
    ) -> None:
        """``partitions``: partitions per topic, as found at start-up."""
        self.config = config
        self.clock = clocks.monotonic
        self.wall_clock = clocks.wall
        self.pipelines = pipelines
        consumer = clients.consumer
        admin = clients.admin
        self.consumer = consumer
        self.admin = admin
        self.producer = clients.producer
        #: What every task writes through, into the producer's open transaction.
        self.collector = RecordCollector(clients.producer)
        self.reader = ChangelogReader(clients.restore_consumer, admin)
        self.stats = stats
        #: How topics that are not JSON are decoded, and the gate that makes their partitions wait for the registry.
        self.formats = formats if formats is not None else Formats(config)
        self.schemas = self.formats.gate(stats)
        memory = StoreMemory(config.state)
        #: The standby copies this instance keeps of other instances' stores.
        self.standbys = Standbys(config, pipelines, plans, self.reader, admin, memory, clocks.monotonic)
        self.creator = TaskCreator(
            config, pipelines, plans, partitions, self.collector, stats, self.formats, memory, self.standbys, self._recount
        )
        self.tasks = Tasks()
        self.positions = Positions(consumer)
        self.checkpoint = Checkpoint(self.creator.repartition_topics)
        self.committer = Committer(
            clients.producer,
            self.collector,
            consumer,
            self.checkpoint,
            admin,
            stats,
            config.exactly_once,
            config.topics.purge_interval_ms / 1000,
        )
        self.alignment = Alignment(consumer, config.max_drift_ms, config.max_task_idle_ms / 1000)
        #: Which source partitions are quiet, asked of the broker (``service.runtime.ends``).
        self.ends = SourceEnds(
            clients.ends_admin if clients.ends_admin is not None else lambda: admin,
            config.idle_timeout_ms / 1000,
            lambda: clients.errors.count,
            read_committed=config.exactly_once,
            interval=config.punctuate_interval_ms / 1000,
        )
        self.assigned: set[Partition] = set()
        #: Inside a rebalance callback: the consumer must not be reassigned (``_rewind``).
        self._in_rebalance = False
        #: A rewind a rebalance callback left for the next batch.
        self._rewind_pending = False
        #: The last poll's records not processed yet, a slice per iteration of the loop.
        self.in_hand = InHand(config.poll_batch)

    @property
    def topics(self) -> list[str]:
        """Every topic the consumer subscribes to: sources, then repartition topics."""
        return self.creator.topics

    @property
    def eager(self) -> bool:
        """Direct pipelines need co-partitioned assignments: the (eager) range assignor."""
        return self.creator.eager

    @property
    def source_tasks(self) -> Mapping[Partition, SourceTask]:
        return self.tasks.sources

    @property
    def window_tasks(self) -> Mapping[TaskId, WindowTask]:
        return self.tasks.windows

    @property
    def records_sent(self) -> int:
        """Records every task has written so far."""
        return self.collector.sent

    @property
    def running_windows(self) -> list[WindowTask]:
        return [task for task in self.tasks.windows.values() if task.running]

    # -- processing -------------------------------------------------------------

    @property
    def behind(self) -> bool:
        """The last poll came back full, or some of it is still in hand: records are waiting."""
        return self.in_hand.full or bool(self.in_hand)

    def hold(self, batch: list[Message]) -> None:
        """A poll's records, processed a slice at a time by ``route_next`` (``service.runtime.in_hand``)."""
        if self._rewound_first():
            batch = []
        self.positions.sought.clear()
        self.in_hand.hold(cast(list[Record], batch), bool(self.creator.repartition_topics))

    def route_next(self) -> int:
        """Process the next slice in hand, less the partitions sought since the poll; the records it had."""
        batch = self.in_hand.take(self.positions.sought)
        if batch:
            self.route(cast(list[Message], batch))
            self.in_hand.routed()
        return len(batch)

    def route(self, batch: list[Message]) -> None:
        """Hand each partition's records to the tasks reading it; apply end-of-partition events after them."""
        if self._rewound_first():
            return
        groups, ends = _group(cast(list[Record], batch))
        groups = self.positions.fresh(groups)
        self.stats.redelivered = self.positions.redelivered
        if self.schemas is not None:
            groups, waiting = self.positions.admit(groups, self.schemas)
            for where in waiting:
                self._wait_for_schema(where)
            if waiting:  # their end-of-partition events came after records not processed yet
                ends = [(where, offset) for where, offset in ends if where not in waiting]
        for where, group in groups.items():
            if not self._process(where, group):
                continue
            after = self.positions.processed(where, group)
            self.ends.records(where)
            self.checkpoint.advance(where, after)
            self.stats.count_consumed(where, len(group))
        # A partition's end-of-partition event follows its records in the batch,
        # so it is applied after them.
        for where, offset in ends:
            self.positions.ended(where, offset)
            for task in self.tasks.readers(where):
                task.input_ended(where)
        if groups:
            self.alignment.align(self.tasks.running(), self.clock())

    def _rewound_first(self) -> bool:
        """An abort inside a rebalance callback left its rewind for now: done now, True.

        The batch in hand was fetched before it, and is read again from the committed offsets.
        """
        if not self._rewind_pending:
            return False
        self._rewind_pending = False
        self.seek_to_committed()
        return True

    def drained(self) -> bool:
        """Every partition of every repartition topic is here, its task running, read to its end (``rescale``)."""
        wanted = [
            Partition(topic, partition)
            for topic in self.creator.repartition_topics
            for partition in range(self.creator.partitions_of(topic))
        ]
        running = all(task.running for task in self.tasks.windows.values())
        return running and all(where in self.assigned and self.positions.at_end(where) for where in wanted)

    def _process(self, where: Partition, group: list[Record]) -> bool:
        """Give one partition's records to its readers; False when none may read them yet."""
        readers = self.tasks.readers(where)
        if not readers:
            return False
        if any(not task.running for task in readers):
            # Fetched before the partition was paused for a restore: read
            # them again once the task runs.
            self.positions.seek(where, group[0].offset())
            return False
        for task in readers:
            task.add_records(where, group)
        return True

    def _wait_for_schema(self, where: Partition) -> None:
        """``where``'s next record waits for its schema: paused, not read to its end, not quiet."""
        self.alignment.hold([where], WAITING_FOR_SCHEMA)
        self.ends.records(where)
        for task in self.tasks.readers(where):
            task.input_waiting(where)

    def poll_schemas(self) -> None:
        """Resume the partitions whose next record's schema has arrived (every loop iteration)."""
        if self.schemas is not None:
            resumed = self.schemas.poll()
            if resumed:
                self.alignment.release(resumed, WAITING_FOR_SCHEMA)

    def punctuate(self, now: float) -> None:
        """Ask which source partitions are quiet, tell their tasks, and move every task on."""
        self._check_direct_sources()
        self.ends.probe(now, int(self.wall_clock() * 1000), self.positions.read_up_to)
        running = self.tasks.running()
        for task in running:
            for where in task.inputs:
                bound = self.ends.bound(where)
                if bound is not None:
                    task.input_bound(where, bound)
            task.punctuate(now)
        self.alignment.align(running, now)

    # -- restoring ---------------------------------------------------------------

    @property
    def restoring(self) -> bool:
        return self.reader.busy

    @property
    def keeps_state(self) -> bool:
        """Stores to restore, or standby copies to keep: the changelog reader has work between polls."""
        return self.reader.busy or self.standbys.enabled

    def restore(self, timeout: float = 0.0) -> None:
        """Restore one batch of changelog records (or update the standby copies with one);
        start the tasks whose store is up to date; place the standby copies."""
        self.reader.step(timeout)
        self._start_restored()
        self.standbys.maintain(self.tasks.windows.keys())

    def warm_up_step(self, timeout: float) -> bool:
        """Before joining: apply one batch to the copies being warmed up; True once they are warm."""
        self.reader.step(timeout, warming_up=True)
        return self.standbys.warm()

    def standby_lag(self) -> dict[TaskId, int]:
        """Per standby copy this instance keeps, the changelog records it lacks."""
        return self.standbys.lag()

    def restore_remaining(self) -> dict[TaskId, int]:
        """Per task being restored, the changelog records still to read."""
        return {TaskId(r.state.pipeline.name, r.state.partition): r.remaining for r in self.reader.restoring.values()}

    def _restore(self, task: WindowTask) -> None:
        """Bring ``task``'s store up to its changelog before it processes anything (again)."""
        task.restoring()
        self.alignment.hold(task.inputs, RESTORING)
        self.reader.begin(task.state_manager, reset=task.reset_store)

    def _start_restored(self) -> None:
        for state in self.reader.drain():
            task = self.tasks.windows.get(TaskId(state.pipeline.name, state.partition))
            if task is None or task.state_manager is not state:
                continue  # revoked meanwhile
            task.start()
            self.alignment.resume_restored(task.inputs)

    # -- commits ----------------------------------------------------------------

    def commit(self) -> None:
        """Commit state, output and offsets together (the steps are in ``service.runtime.checkpoint``)."""
        if not self.committer.commit(self.tasks.running(), self.clock()):
            self.abort_and_rewind()

    def cache_over_budget(self) -> bool:
        """Do the running stores' write-back caches hold more than ``state.cache_bytes``? Only a commit lets them shrink."""
        return sum(task.store.cached_bytes for task in self.running_windows) > self.config.state.cache_bytes

    def abort_and_rewind(self, lost: bool = False) -> None:
        """Undo everything since the last commit: transaction, stores, positions.

        Whatever happened (a broker outage, a lost generation) may have hidden
        records: no source partition counts as quiet until the broker has shown
        it read to its end for the idle timeout again (``service.runtime.ends``).
        """
        self.stats.aborts += 1
        # What is in hand was read after the last commit: the partitions are read again from there, or lost.
        self.positions.read_from(self.in_hand.drop_all())
        self.ends.rewound()
        uncertain = self.committer.abort()
        for task in self.tasks.running():
            task.rollback()
        if uncertain:
            # The transaction may have committed after all: whatever it wrote
            # to the changelog is read back before the tasks go on.
            for window in self.running_windows:
                self._restore(window)
        if not lost:
            self._rewind()

    def _rewind(self) -> None:
        """Seek every partition back to its committed offset; inside a rebalance callback, before the next batch.

        Reading the committed offsets can take long after a broker restart, and
        when it fails the partitions are assigned again: neither may happen
        inside a rebalance callback, which the consumer's rebalance waits on
        (seen: the loop silent for minutes after a revocation whose commit
        failed, on a broker just restarted).
        """
        if self._in_rebalance:
            self._rewind_pending = True
        else:
            self.seek_to_committed()

    def seek_to_committed(self, patience: float = 20.0) -> None:
        """Put every partition a task reads back at its committed offset (``Positions.seek_to_committed``)."""
        active = [where for task in self.tasks for where in task.inputs]
        self.positions.seek_to_committed(active, self.eager, self.alignment.paused, patience)

    # -- rebalances -------------------------------------------------------------

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with self._rebalance():
            self._assigned(consumer, partitions)

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with self._rebalance():
            self._revoked(partitions)

    def on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with self._rebalance():
            self._lost(partitions)

    @contextmanager
    def _rebalance(self) -> Iterator[None]:
        self._in_rebalance = True
        try:
            yield
        finally:
            self._in_rebalance = False

    def _check_direct_sources(self) -> None:
        """A direct pipeline's source that gained partitions stops the loop within a punctuation.

        Its producers now put some keys in the new partitions, whose records
        no task here reads yet, while the tasks holding those keys' sessions
        move on with stream time: the sooner the loop stops and start-up
        reads the pipeline through its repartition topic, the fewer sessions
        can close before their next event arrives (``docs/operations.md``).
        The consumer itself would see them only at its next metadata refresh.
        """
        for topic, expected in self.creator.direct_sources().items():
            now = self._recount(topic)
            if now != expected:
                raise LayoutChanged(f"source topic {topic!r} of a direct pipeline now has {now} partitions, its state {expected}")

    def _recount(self, topic: str) -> int:
        """``topic``'s partition count as the broker has it now.

        Asked of the admin client, not the consumer: a broker answers one
        connection's requests in order, so on the consumer's connections a
        metadata request waits behind the fetch being held for
        ``fetch.wait.max.ms`` (100 ms), every punctuation, for every direct
        source topic, while the loop waits for the answer.
        """
        metadata = self.admin.list_topics(topic, timeout=10)
        return len(metadata.topics[topic].partitions)

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            beyond = self.creator.beyond_layout(Partition(tp.topic, tp.partition))
            if beyond is not None:
                raise LayoutChanged(beyond)
        self.stats.rebalances += 1
        self.standbys.rebalanced()
        log.info("partitions assigned", partitions=[f"{p.topic}-{p.partition}" for p in partitions])
        if self.eager:
            consumer.assign(partitions)
        else:
            consumer.incremental_assign(partitions)
        new_windows: list[WindowTask] = []
        for tp in partitions:
            where = Partition(tp.topic, tp.partition)
            self.assigned.add(where)
            if self.creator.is_source(where):
                self.ends.track(where)
            made = self.creator.create(where, self.assigned, self.tasks.windows)
            for source in made.sources:
                source.start()
                self.tasks.add_source(source)
            for window in made.windows:
                self.tasks.add_window(window)
                new_windows.append(window)
        # A partition a direct task needs is held while that task cannot run
        # here, even if a source task reads it too: they share its offset.
        waiting = self.creator.waiting_inputs(self.assigned, self.tasks.windows)
        inputs = [where for task in new_windows for where in task.inputs]
        self.alignment.hold(inputs, RESTORING)
        self.alignment.release(inputs, WAITING)
        self.alignment.hold(waiting, WAITING)
        if waiting:
            log.warning(
                "inputs of a direct task are split between instances; they wait until the group reassigns them",
                partitions=[str(where) for where in waiting],
            )
        for window in new_windows:
            self._restore(window)
        self._start_restored()

    def _revoked(self, partitions: list[TopicPartition]) -> None:
        if not partitions:
            return
        self.stats.rebalances += 1
        self.standbys.rebalanced()
        log.info("partitions revoked", partitions=[f"{p.topic}-{p.partition}" for p in partitions])
        self.commit()
        self._forget(partitions, suspend=True)

    def _lost(self, partitions: list[TopicPartition]) -> None:
        self.stats.rebalances += 1
        self.standbys.rebalanced()
        log.warning("partitions lost", partitions=[f"{p.topic}-{p.partition}" for p in partitions])
        self.abort_and_rewind(lost=True)
        self._forget(partitions)
        self._rewind()

    def _forget(self, partitions: list[TopicPartition], suspend: bool = False) -> None:
        """The partitions left this instance; so do the tasks reading them (suspended first, once committed)."""
        wheres = [Partition(tp.topic, tp.partition) for tp in partitions]
        if self.schemas is not None:
            self.schemas.forget(wheres)
        self.in_hand.drop(wheres)
        for where in wheres:
            self.assigned.discard(where)
            self.positions.forget(where)
            self.ends.forget(where)
            self.checkpoint.forget(where)
            self.alignment.forget(where)
            for task in list(self.tasks.readers(where)):
                if suspend and task.running:
                    task.suspend()
                self._drop(task)

    def _drop(self, task: Task) -> None:
        """Close a task that lost one of its inputs; its other inputs stay assigned, unread."""
        if not self.tasks.remove(task):
            return
        for where in task.inputs:
            if where in self.assigned:
                self.alignment.hold([where], WAITING)
        if task.state_manager is not None:
            self.reader.cancel(task.state_manager)
        self._close(task)

    def _close(self, task: Task) -> None:
        retired = task.retired_counts()
        if retired is not None:
            self.stats.retire(*retired)
        task.close()

    def close(self) -> None:
        """Close every remaining task (after the consumer left the group)."""
        for task in list(self.tasks):
            self._close(task)
        if self.schemas is not None:
            self.schemas.close()
        self.tasks.clear()
        self.standbys.close()
        self.reader.close()

    # -- for metrics --------------------------------------------------------------

    def task_counts(self) -> dict[TaskId, TaskCounts]:
        """Totals per (pipeline, partition): retired tasks' final counts plus live tasks'."""
        return self.stats.task_totals((task.task_id, task.counts()) for task in self.tasks.windows.values())


def _consumer_failure(error: KafkaError) -> Exception:
    """What a fatal consume error means. librdkafka hands it over as ``_FATAL``
    (with ``fatal()`` false), the cause only in its text; a fence by a member
    with this ``group.instance.id`` is ``ConsumerFenced``."""
    if "group.instance.id" in error.str():
        log.error("consumer fenced by a member with this instance id", error=error.str())
        return ConsumerFenced(error.str())
    return BrokerError(error.str())


def _group(messages: Iterable[Record]) -> tuple[Groups, list[tuple[Partition, int]]]:
    """A batch's records by partition, in order, and its end-of-partition events (partition, offset)."""
    groups: Groups = {}
    ends: list[tuple[Partition, int]] = []
    # librdkafka hands a batch over in runs of one partition's records: a record of the
    # current run's partition is appended without a Partition made or a dict looked up.
    topic: str | None = None
    number = -1
    group: list[Record] = []
    for message in messages:
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                ends.append((Partition(message.topic(), message.partition()), message.offset()))
            elif error.fatal() or error.code() == KafkaError._FATAL:
                raise _consumer_failure(error)
            else:
                log.warning("consume error", error=str(error))
            continue
        if message.partition() != number or message.topic() != topic:
            topic, number = message.topic(), message.partition()
            where = Partition(topic, number)
            found = groups.get(where)
            if found is None:
                found = groups[where] = []
            group = found
        group.append(message)
    return groups, ends
