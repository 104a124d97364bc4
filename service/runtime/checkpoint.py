"""The commit: consumed offsets between commits, the sequence that commits them, and purging.

A commit (``Committer.commit``) goes through these steps, in this order:

1. Every running task prepares: a source task reports its watermark; a
   window task closes the windows due at its stream time, hands their
   records to the collector, and hands the collector one changelog record per
   key it changed.
2. If nothing was consumed, changed or sent since the last commit, stop.
3. The producer commits: under exactly-once, one Kafka transaction holding
   every record sent since the last commit (output, late, dead-letter,
   derived, repartition, changelog) and the offsets in this checkpoint;
   under at-least-once, a flush that checks every delivery.
4. If that fails: abort (``Committer.abort``); the task manager rolls every
   task back to the last commit and seeks every partition back to its
   committed offset. Nothing else happens.
5. Every task that prepared writes its batch to RocksDB, with the changelog
   offset the commit reached: local state never runs ahead of Kafka.
6. Under at-least-once, the offsets are committed now, after the records and
   the state, so a crash only repeats work.
7. The checkpoint moves the repartition offsets it holds to "purgeable" and
   starts empty; every ``topics.purge_interval`` the purgeable records are
   deleted, as Kafka Streams deletes consumed repartition records.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable
from concurrent.futures import Future

import structlog
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from service.errors import CommitFailed
from service.runtime.collector import RecordCollector
from service.runtime.ids import Partition
from service.runtime.producer import TransactionalProducer
from service.runtime.stats import LoopStats
from service.runtime.tasks import Task

log = structlog.get_logger("sessionizer.tasks")


class Checkpoint:
    def __init__(self, repartition_topics: Collection[str]) -> None:
        self._repartition = frozenset(repartition_topics)
        #: Next offset to read, per partition consumed since the last commit.
        self.consumed: dict[Partition, int] = {}
        #: Per repartition partition: every record before this offset is committed.
        self.purgeable: dict[Partition, int] = {}

    def advance(self, where: Partition, next_offset: int) -> None:
        self.consumed[where] = next_offset

    def __bool__(self) -> bool:
        return bool(self.consumed)

    def offsets(self) -> list[TopicPartition]:
        """The offsets to commit with the next transaction."""
        return [TopicPartition(topic, partition, offset) for (topic, partition), offset in self.consumed.items()]

    def committed(self) -> None:
        """Step 7: the offsets are committed; repartition records before them may go."""
        for where, offset in self.consumed.items():
            if where[0] in self._repartition:
                self.purgeable[where] = offset
        self.consumed.clear()

    def take_purgeable(self) -> list[TopicPartition]:
        """The repartition records to delete now; forgotten once handed out."""
        offsets = [TopicPartition(topic, partition, offset) for (topic, partition), offset in self.purgeable.items()]
        self.purgeable.clear()
        return offsets

    def forget(self, where: Partition) -> None:
        """A partition was revoked or lost: its uncommitted progress is not ours to commit.

        Its purgeable offsets stay: those records are committed, whoever reads on.
        """
        self.consumed.pop(where, None)

    def rewind(self) -> None:
        """Step 4: the commit failed; what was consumed will be read again."""
        self.consumed.clear()


class Committer:
    """Runs the commit sequence above over the tasks it is given, and purges what it committed."""

    def __init__(
        self,
        producer: TransactionalProducer,
        collector: RecordCollector,
        consumer: Consumer,
        checkpoint: Checkpoint,
        admin: AdminClient,
        stats: LoopStats,
        exactly_once: bool,
        purge_interval: float,
    ) -> None:
        self.producer = producer
        self.collector = collector
        self.consumer = consumer
        self.checkpoint = checkpoint
        self._admin = admin
        self.stats = stats
        self.exactly_once = exactly_once
        #: Seconds a transactional call may take (three times that before it counts as hung).
        self.commit_timeout = 10.0
        self._purge_interval = purge_interval
        self._next_purge = time.monotonic() + purge_interval
        self._sent_at_commit = 0

    def commit(self, tasks: Iterable[Task], now: float) -> bool:
        """Steps 1 to 7 over ``tasks`` (the running ones); False when the commit failed (step 4 is the caller's)."""
        started = time.perf_counter()
        tasks = list(tasks)
        prepared = [task for task in tasks if task.prepare_commit(now)]
        if not self.checkpoint and not prepared and self.collector.sent == self._sent_at_commit:
            return True
        offsets = self.checkpoint.offsets()
        transaction_started = time.perf_counter()
        try:
            self.producer.commit(offsets, self.consumer.consumer_group_metadata(), self.commit_timeout)
        except CommitFailed as exc:
            log.warning("commit failed, aborting and rewinding", error=str(exc))
            return False
        transaction_seconds = time.perf_counter() - transaction_started
        for task in tasks:
            task.post_commit()
        offsets_committed = True
        if not self.exactly_once and offsets:
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
        return True

    def abort(self) -> bool:
        """Step 4's transaction: drop what was sent and consumed since the last commit.

        Returns whether the failed commit's outcome is unknown (it may have
        committed after all: the stores must be read back from their changelogs).
        """
        self.producer.abort()
        uncertain, self.producer.uncertain = self.producer.uncertain, False
        self.checkpoint.rewind()
        self._sent_at_commit = self.collector.sent
        return uncertain

    def purge_due(self) -> None:
        """Purge at the next commit, whenever the last one was."""
        self._next_purge = 0.0

    def _purge(self) -> None:
        """Step 7: delete repartition records every commit has moved past, as Kafka Streams does.

        Repartition topics keep records forever (a retention would lose events
        that wait unconsumed); the service deletes what it has committed.
        """
        now = time.monotonic()
        if now < self._next_purge or not self.checkpoint.purgeable:
            return
        self._next_purge = now + self._purge_interval
        for future in self._admin.delete_records(self.checkpoint.take_purgeable()).values():
            future.add_done_callback(_log_purge_failure)


def _log_purge_failure(future: Future[object]) -> None:
    error = future.exception()
    if error is not None:
        log.warning("purging repartition records failed", error=str(error))
