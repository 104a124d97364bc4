"""The changelog reader: brings each task's store up to date before the task processes anything.

When local state is present, only the changelog beyond its checkpoint is read;
when it is missing, unreadable, or its checkpoint does not fit the changelog
(the topic was recreated), the store is wiped and rebuilt from the start.
Because a store only ever holds committed state (see ``service.state.store``),
a crash leaves it consistent and the tail suffices.

Restoring never blocks the poll loop: the loop calls ``step`` between polls,
so group heartbeats and rebalances carry on during a long restore, and a
partition revoked mid-restore is simply dropped (a known wedge in other Python
stream libraries). What finished restoring is pulled by the caller
(``drain``), as from Kafka Streams' ``StateUpdater``; the reader itself is
Kafka Streams' ``StoreChangelogReader``.

The same consumer keeps standby copies up to date (``follow``): a standby is
a restore that never finishes. Its partitions are paused while any active
task restores, so a failover's restore gets the whole consumer, and a
standby's batch is kept small, so applying it never holds the loop long.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, IsolationLevel, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from service.errors import RestoreFailed
from service.runtime.ends import LATEST
from service.runtime.frames import Record
from service.runtime.ids import Partition
from service.runtime.progress import Progress
from service.runtime.state_manager import StateManager

log = structlog.get_logger("sessionizer.state")

RESTORE_BATCH = 50_000
#: Changelog records applied to standby copies per step when nothing restores.
STANDBY_BATCH = 5_000
#: Answers a partition's leader gives while it is not serving yet (a topic just
#: created, a broker just restarted): asking again shortly succeeds.
NOT_SERVING_YET = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_PARTITION,
}
#: What the client reports while the broker is away (restarting, unreachable): asked
#: again until it answers, within ``OFFSETS_PATIENCE``.
BROKER_AWAY = {
    KafkaError._TRANSPORT,
    KafkaError._TIMED_OUT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._DESTROY_BROKER,
    KafkaError._WAIT_COORD,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
}
#: Seconds a changelog's offsets are asked for before the restore gives up: a broker
#: restart takes tens of seconds on a loaded machine (seen: a minute).
OFFSETS_PATIENCE = 120.0



@dataclass
class Restoration:
    state: StateManager
    end: int
    position: int
    started: float

    @property
    def remaining(self) -> int:
        return max(0, self.end - self.position)


@dataclass
class Following:
    """A standby copy kept up to date from its changelog."""

    state: StateManager
    position: int
    #: The changelog's end when following began: the lag is known before the first fetch.
    end: int = 0


class ChangelogReader:
    """Restores stores from their changelogs with one consumer that belongs to no group.

    ``admin``, when given, tells a changelog's log end (its high watermark),
    which the restore consumer (``read_committed``) does not: see ``begin``.
    """

    def __init__(self, consumer: Consumer, admin: AdminClient | None = None) -> None:
        self.consumer = consumer
        self._admin = admin
        self.restoring: dict[Partition, Restoration] = {}
        #: Standby copies, by changelog partition.
        self.following: dict[Partition, Following] = {}
        #: State managers whose store is up to date, until ``drain`` hands them over.
        self._restored: list[StateManager] = []
        self._progress = Progress("restore progress")

    def begin(self, state: StateManager, reset: Callable[[], None] | None = None) -> None:
        """Start restoring ``state``'s store; ``drain`` hands it over once it is up to date.

        ``reset`` wipes the store when its checkpoint does not fit the changelog
        (the task's own method, so the task sees its new store); by default the
        state manager resets itself. A store already up to date is handed over
        by the next ``drain``.

        The restore consumer reads up to the changelog's last stable offset. A
        transaction's commit returns once the broker has logged the decision,
        before its markers are written, so for a while (longer when the broker
        stops meanwhile) the stable offset is still before records the store's
        checkpoint includes. The store is then kept, not rebuilt up to the
        stable offset: that would drop a committed transaction's state while
        its output and offsets stand, and its windows would be emitted twice.
        Only a checkpoint past the log end itself (the topic was recreated)
        does not fit.
        """
        changelog = state.changelog
        tp = TopicPartition(changelog, state.partition)
        low, high = self._offsets(tp)
        checkpoint = state.store.checkpoint
        if checkpoint is not None and checkpoint > high and not self._past_log_end(tp, checkpoint):
            log.info(
                "changelog not stable up to the checkpoint yet (a transaction's markers are pending); keeping the store",
                pipeline=state.pipeline.name,
                partition=state.partition,
                checkpoint=checkpoint,
                stable=high,
            )
            high = checkpoint
        if checkpoint is None or checkpoint < low or checkpoint > high:
            if checkpoint is not None:
                log.warning(
                    "checkpoint does not fit the changelog, restoring fully",
                    pipeline=state.pipeline.name,
                    partition=state.partition,
                    checkpoint=checkpoint,
                    low=low,
                    high=high,
                )
                (reset or state.reset)()
            checkpoint = low
        mode = "tail" if state.store.checkpoint is not None else "full"
        if checkpoint >= high:
            log.info("state up to date", pipeline=state.pipeline.name, partition=state.partition, checkpoint=checkpoint)
            self._restored.append(state)
            return
        log.info(
            "restoring state",
            pipeline=state.pipeline.name,
            partition=state.partition,
            mode=mode,
            changelog=changelog,
            start=checkpoint,
            end=high,
        )
        self.restoring[Partition(changelog, state.partition)] = Restoration(state, high, checkpoint, time.monotonic())
        self._assign()

    def _past_log_end(self, tp: TopicPartition, checkpoint: int) -> bool:
        """Is ``checkpoint`` past ``tp``'s log end (high watermark)? False when that cannot be read.

        Not knowing, the store is kept: a checkpoint only ever records a
        committed offset, and only a recreated topic ends before one.
        """
        if self._admin is None:
            return False
        try:
            futures = self._admin.list_offsets(
                {tp: LATEST}, isolation_level=IsolationLevel.READ_UNCOMMITTED, request_timeout=10
            )
            result = futures[tp].result(timeout=15)
        except Exception as exc:  # a failed or unanswered request: not known
            log.warning("changelog end unreadable", topic=tp.topic, partition=tp.partition, error=str(exc))
            return False
        offset = getattr(result, "offset", None)
        return isinstance(offset, int) and 0 <= offset < checkpoint

    def _offsets(self, tp: TopicPartition, patience: float = OFFSETS_PATIENCE) -> tuple[int, int]:
        """``tp``'s start and last stable offset, asked again while the broker is not serving it or away."""
        deadline = time.monotonic() + patience
        while True:
            try:
                low, high = self.consumer.get_watermark_offsets(tp, timeout=10.0)
                return low, high
            except KafkaException as exc:
                error = exc.args[0]
                transient = error.code() in NOT_SERVING_YET or error.code() in BROKER_AWAY or error.retriable()
                if not transient or time.monotonic() > deadline:
                    raise RestoreFailed(f"cannot read the offsets of {tp.topic}[{tp.partition}]: {error}") from None
                time.sleep(0.1 if error.code() in NOT_SERVING_YET else 1.0)

    def cancel(self, state: StateManager) -> None:
        """Stop restoring a revoked task's store; what was restored so far stays, checkpointed."""
        self._restored = [restored for restored in self._restored if restored is not state]
        if self.restoring.pop(Partition(state.changelog, state.partition), None) is not None:
            self._assign()

    def follow(self, state: StateManager) -> None:
        """Keep ``state``'s store (a standby copy) up to date with its changelog until ``unfollow``.

        A copy whose checkpoint does not fit the changelog (older than its
        start, or the topic was recreated) is wiped and copied from the start,
        and the log says so.
        """
        low, high = self._offsets(TopicPartition(state.changelog, state.partition))
        checkpoint = state.store.checkpoint
        if checkpoint is not None and not low <= checkpoint <= high:
            log.warning(
                "standby checkpoint does not fit the changelog, copying it fully",
                pipeline=state.pipeline.name,
                partition=state.partition,
                checkpoint=checkpoint,
                low=low,
                high=high,
            )
            state.reset()
            checkpoint = None
        position = low if checkpoint is None else checkpoint
        log.info(
            "standby started",
            pipeline=state.pipeline.name,
            partition=state.partition,
            mode="full" if checkpoint is None else "tail",
            start=position,
            end=high,
        )
        self.following[Partition(state.changelog, state.partition)] = Following(state, position, high)
        self._assign()

    def unfollow(self, state: StateManager) -> None:
        """Stop updating a standby copy (its store stays as it is, checkpointed)."""
        if self.following.pop(Partition(state.changelog, state.partition), None) is not None:
            self._assign()

    def standby_lag(self) -> dict[Partition, int]:
        """Per standby changelog partition, the records its copy lacks (from the last fetch's end offset)."""
        lag: dict[Partition, int] = {}
        for where, following in self.following.items():
            try:
                _low, high = self.consumer.get_watermark_offsets(TopicPartition(where.topic, where.partition), cached=True)
            except KafkaException:
                high = -1
            lag[where] = max(0, max(high, following.end) - following.position)
        return lag

    def drain(self) -> list[StateManager]:
        """The state managers whose store came up to date since the last call."""
        restored, self._restored = self._restored, []
        return restored

    @property
    def remaining(self) -> dict[Partition, int]:
        """Per changelog partition being restored, the records still to read."""
        return {where: r.remaining for where, r in self.restoring.items()}

    @property
    def busy(self) -> bool:
        return bool(self.restoring)

    def step(self, timeout: float = 0.0, warming_up: bool = False) -> None:
        """Apply one batch of changelog records to the stores being restored, or else to the standby
        copies (a large batch while ``warming_up``: nothing else runs then)."""
        if not self.restoring and not self.following:
            return
        batch_size = RESTORE_BATCH if self.restoring or warming_up else STANDBY_BATCH
        messages = cast(list[Record], self.consumer.consume(batch_size, timeout))
        by_partition: dict[Partition, list[Record]] = {}
        finished: set[Partition] = set()
        for message in messages:
            where = Partition(message.topic(), message.partition())
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    finished.add(where)
                else:
                    log.warning("changelog read error", error=str(error))
                continue
            by_partition.setdefault(where, []).append(message)
        for where, batch in by_partition.items():
            restoration = self.restoring.get(where)
            if restoration is None:
                self._update_standby(where, batch)
                continue
            next_offset = batch[-1].offset() + 1
            state = restoration.state
            applied = state.store.restore(batch, next_offset)
            state.restored_records += applied
            self._progress.done += applied
            restoration.position = next_offset
        if self.restoring:
            self._progress.report(
                remaining=sum(r.remaining for r in self.restoring.values()),
                partitions=len(self.restoring),
                stream_time=max((r.state.store.stream_time or 0 for r in self.restoring.values()), default=0) or None,
            )
        for where in list(self.restoring):
            restoration = self.restoring[where]
            if where in finished or restoration.position >= restoration.end:
                self._finish(where, restoration)

    def _update_standby(self, where: Partition, batch: list[Record]) -> None:
        following = self.following.get(where)
        if following is None:
            return
        low, _high = self.consumer.get_watermark_offsets(TopicPartition(where.topic, where.partition), cached=True)
        if low > following.position:
            # Records it had not read yet were deleted (retention): the copy cannot be
            # brought up to date record by record, only copied again from the start.
            state = following.state
            log.warning(
                "standby fell behind the changelog's start, copying it fully",
                pipeline=state.pipeline.name,
                partition=state.partition,
                position=following.position,
                low=low,
            )
            state.reset()
            following.position = low
            self._assign()
            return
        next_offset = batch[-1].offset() + 1
        following.state.store.restore(batch, next_offset)
        following.position = next_offset

    def _finish(self, where: Partition, restoration: Restoration) -> None:
        del self.restoring[where]
        self._assign()
        state = restoration.state
        if restoration.position > (state.store.checkpoint or 0):
            state.store.restore((), restoration.position)
        log.info(
            "state restored",
            pipeline=state.pipeline.name,
            partition=state.partition,
            records=state.restored_records,
            seconds=round(time.monotonic() - restoration.started, 3),
            stream_time=state.store.stream_time,
        )
        self._restored.append(state)

    def _assign(self) -> None:
        """Read every changelog being restored or followed from where its store is; while any
        restores, the standbys wait (paused), so a failover's restore reads at full speed."""
        restoring = [
            TopicPartition(r.state.changelog, r.state.partition, r.position or OFFSET_BEGINNING) for r in self.restoring.values()
        ]
        following = [
            TopicPartition(f.state.changelog, f.state.partition, f.position or OFFSET_BEGINNING) for f in self.following.values()
        ]
        self.consumer.assign(restoring + following)
        # librdkafka keeps a partition's pause through a new assignment: resume explicitly.
        if restoring:
            self.consumer.resume(restoring)
        if following:
            (self.consumer.pause if restoring else self.consumer.resume)(following)

    def close(self) -> None:
        self.consumer.close()
