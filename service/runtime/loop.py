"""The stream loop: owns the consumer and the producer, like a Kafka Streams StreamThread.

One iteration: poll a batch, hand each partition's records to its task, step
any restoring stores, punctuate on the wall clock, and every commit interval
commit. A commit closes due windows, writes each changed store's changelog
records, and commits output, changelog, repartition, late and dead-letter
records together with the consumed offsets: one Kafka transaction under
exactly-once. Only after the transaction has committed are the stores'
batches written to RocksDB, so local state never runs ahead of Kafka.
"""

from __future__ import annotations

import time

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from service.config import Config
from service.ops.metrics import LoopMetrics
from service.core.pipeline import Pipeline, compile_pipelines
from service.ops.queries import QueryInbox
from service.runtime.clients import admin_config, consumer_config, producer_config, restore_consumer_config
from service.errors import BrokerError, CommitFailed
from service.runtime.collector import RecordCollector
from service.runtime.punctuator import Punctuator
from service.runtime.restore import StateManager
from service.runtime.tasks import SourceTask, TaskState, WindowTask
from service.state.store import PendingCommit

log = structlog.get_logger("sessionizer.loop")

Where = tuple[str, int]


def _log_purge_failure(future: object) -> None:
    error = future.exception()  # type: ignore[attr-defined]
    if error is not None:
        log.warning("purging repartition records failed", error=str(error))


class StreamLoop:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.pipelines: tuple[Pipeline, ...] = compile_pipelines(config.pipelines)
        self._by_repartition = {p.config.repartition_topic: p for p in self.pipelines}
        self.collector = RecordCollector(lambda: Producer(producer_config(config)), config.exactly_once)
        self.consumer = Consumer(consumer_config(config))
        self.state = StateManager(config, Consumer(restore_consumer_config(config)))
        self.state.on_restored = self._restored
        self.sources = SourceTask(self.pipelines, self.collector)
        self.punctuator = Punctuator(config.punctuate_interval_ms / 1000)
        self.tasks: dict[Where, WindowTask] = {}
        self.commits = 0
        self.rebalances = 0
        self.metrics = LoopMetrics()
        self.queries = QueryInbox()
        self._offsets: dict[Where, int] = {}
        self._source_caught_up: dict[Where, bool] = {}
        self._sent_at_commit = 0
        self._purgeable: dict[Where, int] = {}
        self._admin = AdminClient(admin_config(config))
        self._purge_interval = config.topics.purge_interval_ms / 1000
        self._next_purge = time.monotonic() + self._purge_interval
        self._running = False
        self._stop_requested = False

    # -- lifecycle ------------------------------------------------------------

    @property
    def topics(self) -> list[str]:
        return self.sources.topics + list(self._by_repartition)

    def run(self) -> None:
        """Process until ``stop`` is called; then commit, close the stores and leave the group."""
        self.collector.init()
        self.consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)
        log.info("started", topics=self.topics, guarantee=self.config.processing_guarantee)
        interval = self.config.commit_interval_ms / 1000
        next_commit = time.monotonic() + interval
        self._running = True
        clean = False
        try:
            while not self._stop_requested:
                try:
                    next_commit = self._iterate(next_commit, interval)
                except KafkaException as exc:
                    if exc.args[0].fatal() and not self.config.exactly_once:
                        raise
                    # A failed produce or group call leaves this batch half
                    # done: drop it, as a failed commit would.
                    log.warning("processing failed, aborting and rewinding", error=str(exc.args[0]))
                    self._abort_and_rewind()
            clean = True
        finally:
            self._close(clean)

    def _iterate(self, next_commit: float, interval: float) -> float:
        """One poll-process-punctuate(-commit) round; returns the next commit deadline."""
        restoring = self.state.busy
        wait = 0.0 if restoring else max(0.0, next_commit - time.monotonic())
        messages = self.consumer.consume(self.config.poll_batch, wait)
        if messages:
            self._route(messages)
        if restoring:
            self.state.restore_step(timeout=0.0 if messages else 0.05)
        self.collector.poll()
        now = time.monotonic()
        self.metrics.tick(self, now)
        self.queries.serve(self.tasks)
        if self.punctuator.due(now):
            self._punctuate(now)
        if now >= next_commit:
            self.commit()
            return time.monotonic() + interval
        return next_commit

    def stop(self) -> None:
        """Ask the loop to finish its current batch and shut down cleanly (also before ``run``)."""
        self._stop_requested = True

    @property
    def running_tasks(self) -> list[WindowTask]:
        return [t for t in self.tasks.values() if t.state is TaskState.RUNNING]

    @property
    def ready(self) -> bool:
        """Partitions are assigned, restored and processing."""
        return self._running and bool(self.consumer.assignment()) and not self.state.busy

    def _close(self, clean: bool) -> None:
        """Leave cleanly after ``stop``; after an error, commit nothing.

        A batch interrupted by an exception is half processed: committing it
        would publish some of its records without their offsets, and they would
        be produced again after the restart. Aborting leaves the last commit
        as the truth.
        """
        self._running = False
        self.metrics.running = False
        self.queries.close()
        if clean:
            try:
                self.commit()
            except Exception:
                log.exception("final commit failed")
                clean = False
        if not clean:
            try:
                self._abort_and_rewind(lost=True)
            except Exception:
                log.exception("abort failed")
        self.consumer.close()  # leaves the group; the revoke callback closes the tasks
        for task in list(self.tasks.values()):
            task.store.close()
        self.tasks.clear()
        self.state.close()
        self.collector.close()
        log.info("stopped", commits=self.commits, clean=clean)

    # -- processing -------------------------------------------------------------

    def _route(self, messages: list[Message]) -> None:
        groups: dict[Where, list[Message]] = {}
        ends: list[Where] = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    ends.append((message.topic(), message.partition()))
                elif error.fatal():
                    raise BrokerError(str(error))
                else:
                    log.warning("consume error", error=str(error))
                continue
            where = (message.topic(), message.partition())
            group = groups.get(where)
            if group is None:
                groups[where] = [message]
            else:
                group.append(message)
        for where, group in groups.items():
            task = self.tasks.get(where)
            if task is not None:
                if task.state is not TaskState.RUNNING:
                    # Fetched before the partition was paused for its restore:
                    # read them again once the task runs.
                    self.consumer.seek(TopicPartition(where[0], where[1], group[0].offset()))
                    continue
                task.process(group)
                self._drain(task)
            elif where in self._source_caught_up:
                self.sources.process(where[0], group)
                self._source_caught_up[where] = False
            else:
                continue
            self._offsets[where] = group[-1].offset() + 1
            self.metrics.count_consumed(where, len(group))
        # A partition's end-of-partition event follows its records in the batch,
        # so it is applied after them.
        for where in ends:
            task = self.tasks.get(where)
            if task is not None:
                task.caught_up = True
            elif where in self._source_caught_up:
                self._source_caught_up[where] = True

    def _drain(self, task: WindowTask) -> None:
        if task.out:
            self.collector.send_all(task.out)
            task.out.clear()

    def _punctuate(self, now: float) -> None:
        for task in self.running_tasks:
            if self._sources_caught_up(task.pipeline):
                task.punctuate(now)

    def _sources_caught_up(self, pipeline: Pipeline) -> bool:
        """Whether every source partition of ``pipeline`` this instance owns has been read to its end."""
        sources = pipeline.config.sources
        return all(caught for (topic, _), caught in self._source_caught_up.items() if topic in sources)

    # -- commits ----------------------------------------------------------------

    def commit(self) -> None:
        """Close due windows and commit state, output and offsets together."""
        started = time.perf_counter()
        tasks = self.running_tasks
        for task in tasks:
            task.processor.close_due()
            self._drain(task)
        pending: list[tuple[WindowTask, PendingCommit]] = []
        for task in tasks:
            if task.store.has_changes:
                changes = task.store.prepare()
                self.collector.send_changelog(task.pipeline.config.changelog_topic, task.partition, changes.changelog)
                pending.append((task, changes))
        if not self._offsets and not pending and self.collector.sent == self._sent_at_commit:
            return
        offsets = [TopicPartition(topic, partition, offset) for (topic, partition), offset in self._offsets.items()]
        transaction_started = time.perf_counter()
        try:
            self.collector.commit(offsets, self.consumer.consumer_group_metadata())
        except CommitFailed as exc:
            log.warning("commit failed, aborting and rewinding", error=str(exc))
            self._abort_and_rewind()
            return
        transaction_seconds = time.perf_counter() - transaction_started
        self._apply(pending)
        if not self.config.exactly_once and offsets:
            # At-least-once: records are delivered and state is written before
            # offsets move, so a crash here only repeats work.
            try:
                self.consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                log.warning("offset commit failed; records will be processed again", error=str(exc.args[0]))
        for where, offset in self._offsets.items():
            if where[0] in self._by_repartition:
                self._purgeable[where] = offset
        self._offsets.clear()
        self._sent_at_commit = self.collector.sent
        self.commits += 1
        self._purge_repartition()
        self.metrics.committed(time.perf_counter() - started, transaction_seconds)

    def _purge_repartition(self) -> None:
        """Delete repartition records every commit has moved past, as Kafka Streams does.

        Repartition topics keep records forever (a retention would lose events
        that wait unconsumed); the service deletes what it has committed.
        """
        now = time.monotonic()
        if now < self._next_purge or not self._purgeable:
            return
        self._next_purge = now + self._purge_interval
        offsets = [TopicPartition(topic, partition, offset) for (topic, partition), offset in self._purgeable.items()]
        self._purgeable.clear()
        for future in self._admin.delete_records(offsets).values():
            future.add_done_callback(_log_purge_failure)

    def _apply(self, pending: list[tuple[WindowTask, PendingCommit]]) -> None:
        for task, changes in pending:
            end = self.collector.changelog_end(task.pipeline.config.changelog_topic, task.partition)
            task.store.apply(changes, end)

    def _abort_and_rewind(self, lost: bool = False) -> None:
        """Undo everything since the last commit: transaction, stores, positions."""
        self.metrics.aborts += 1
        self.collector.abort()
        for task in self.running_tasks:
            task.rollback()
        self._offsets.clear()
        self._sent_at_commit = self.collector.sent
        # Whatever happened (a broker outage, a lost generation) may have hidden
        # records: no partition counts as caught up, and no idle time counts,
        # until a fresh end-of-partition event says so again.
        for task in self.tasks.values():
            task.caught_up = False
        for where in self._source_caught_up:
            self._source_caught_up[where] = False
        if not lost:
            self._seek_to_committed()

    def _seek_to_committed(self, patience: float = 120.0) -> None:
        """Put every active partition back at its committed offset (retrying while the broker is away)."""
        active = [
            TopicPartition(topic, partition)
            for (topic, partition) in list(self._source_caught_up) + [(t.topic, t.partition) for t in self.running_tasks]
        ]
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

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.rebalances += 1
        log.info("partitions assigned", partitions=[f"{p.topic}-{p.partition}" for p in partitions])
        consumer.incremental_assign(partitions)
        new_tasks = []
        for tp in partitions:
            where = (tp.topic, tp.partition)
            pipeline = self._by_repartition.get(tp.topic)
            if pipeline is None:
                self._source_caught_up[where] = False
                continue
            task = WindowTask(pipeline, tp.topic, tp.partition, self.state.open_store(pipeline, tp.partition))
            task.processor.on_emit = self.metrics.emit_observer(pipeline.name)
            self.tasks[where] = task
            new_tasks.append(task)
        if new_tasks:
            consumer.pause([TopicPartition(t.topic, t.partition) for t in new_tasks])
        for task in new_tasks:
            self.state.begin(task)

    def _restored(self, task: WindowTask) -> None:
        if self.tasks.get((task.topic, task.partition)) is not task:
            return
        task.started()
        self.consumer.resume([TopicPartition(task.topic, task.partition)])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if not partitions:
            return
        self.rebalances += 1
        log.info("partitions revoked", partitions=[f"{p.topic}-{p.partition}" for p in partitions])
        self.commit()
        self._forget(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.rebalances += 1
        log.warning("partitions lost", partitions=[f"{p.topic}-{p.partition}" for p in partitions])
        self._abort_and_rewind(lost=True)
        self._forget(partitions)
        self._seek_to_committed()

    def _forget(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            where = (tp.topic, tp.partition)
            self._offsets.pop(where, None)
            self._source_caught_up.pop(where, None)
            task = self.tasks.pop(where, None)
            if task is not None:
                self.state.cancel(task)
                task.store.close()
