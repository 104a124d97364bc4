"""The state manager: opens each task's store and restores it from its changelog.

A task's store is brought up to date before the task processes anything.
When local state is present, only the changelog beyond its checkpoint is read;
when it is missing, unreadable, or its checkpoint does not fit the changelog
(the topic was recreated), the store is wiped and rebuilt from the start.
Because a store only ever holds committed state (see ``service.state.store``), a
crash leaves it consistent and the tail suffices.

Restoring never blocks the poll loop: the loop calls ``restore_step`` between
polls, so group heartbeats and rebalances carry on during a long restore, and
a partition revoked mid-restore is simply dropped (a known wedge in other
Python stream libraries).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from service.config import Config
from service.core.pipeline import Pipeline
from service.runtime.tasks import WindowTask
from service.state.store import WindowStore, wipe

log = structlog.get_logger("sessionizer.state")

RESTORE_BATCH = 10_000
#: Answers a partition's leader gives while it is not serving yet (a topic just
#: created, a broker just restarted): asking again shortly succeeds.
_NOT_SERVING_YET = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_PARTITION,
}


@dataclass
class Restoration:
    task: WindowTask
    changelog: str
    end: int
    position: int
    started: float


class StateManager:
    def __init__(self, config: Config, restore_consumer: Consumer) -> None:
        self.config = config
        self.consumer = restore_consumer
        self.restoring: dict[tuple[str, int], Restoration] = {}
        self.on_restored: Callable[[WindowTask], None] = lambda task: None

    def store_path(self, pipeline: Pipeline, partition: int) -> Path:
        return self.config.state_dir / self.config.app_id / self.config.instance_id / f"{pipeline.name}-{partition}"

    def open_store(self, pipeline: Pipeline, partition: int) -> WindowStore:
        path = self.store_path(pipeline, partition)
        try:
            return WindowStore(path, pipeline.window, self.config.cache_max_keys)
        except Exception as exc:  # a corrupt or foreign directory: rebuild it from the changelog
            log.warning("local state unreadable, rebuilding from the changelog", path=str(path), error=str(exc))
            wipe(path)
            return WindowStore(path, pipeline.window, self.config.cache_max_keys)

    def begin(self, task: WindowTask) -> None:
        """Start restoring ``task``; it is handed to ``on_restored`` when up to date."""
        changelog = task.pipeline.config.changelog_topic
        low, high = self._watermarks(TopicPartition(changelog, task.partition))
        checkpoint = task.store.checkpoint
        if checkpoint is None or checkpoint < low or checkpoint > high:
            if checkpoint is not None:
                log.warning(
                    "checkpoint does not fit the changelog, restoring fully",
                    pipeline=task.pipeline.name,
                    partition=task.partition,
                    checkpoint=checkpoint,
                    low=low,
                    high=high,
                )
                path = task.store.path
                task.store.close()
                wipe(path)
                task.store = self.open_store(task.pipeline, task.partition)
                task.processor.store = task.store
            checkpoint = low
        mode = "tail" if task.store.checkpoint is not None else "full"
        if checkpoint >= high:
            log.info("state up to date", pipeline=task.pipeline.name, partition=task.partition, checkpoint=checkpoint)
            self.on_restored(task)
            return
        log.info(
            "restoring state",
            pipeline=task.pipeline.name,
            partition=task.partition,
            mode=mode,
            changelog=changelog,
            start=checkpoint,
            end=high,
        )
        self.restoring[(changelog, task.partition)] = Restoration(task, changelog, high, checkpoint, time.monotonic())
        self._assign()

    def _watermarks(self, tp: TopicPartition, timeout: float = 30.0) -> tuple[int, int]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.consumer.get_watermark_offsets(tp, timeout=timeout)
            except KafkaException as exc:
                if exc.args[0].code() not in _NOT_SERVING_YET or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def cancel(self, task: WindowTask) -> None:
        """Stop restoring a revoked task; what was restored so far stays, checkpointed."""
        key = (task.pipeline.config.changelog_topic, task.partition)
        if self.restoring.pop(key, None) is not None:
            self._assign()

    @property
    def busy(self) -> bool:
        return bool(self.restoring)

    def restore_step(self, timeout: float = 0.0) -> None:
        """Apply one batch of changelog records to the stores being restored."""
        if not self.restoring:
            return
        messages = self.consumer.consume(RESTORE_BATCH, timeout)
        by_partition: dict[tuple[str, int], list] = {}
        finished: set[tuple[str, int]] = set()
        for message in messages:
            where = (message.topic(), message.partition())
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
                continue
            next_offset = batch[-1].offset() + 1
            restoration.task.restored_records += restoration.task.store.restore(
                ((m.key(), m.value()) for m in batch), next_offset
            )
            restoration.position = next_offset
        for where in list(self.restoring):
            restoration = self.restoring[where]
            if where in finished or restoration.position >= restoration.end:
                self._finish(where, restoration)

    def _finish(self, where: tuple[str, int], restoration: Restoration) -> None:
        del self.restoring[where]
        self._assign()
        task = restoration.task
        if restoration.position > (task.store.checkpoint or 0):
            task.store.restore((), restoration.position)
        log.info(
            "state restored",
            pipeline=task.pipeline.name,
            partition=task.partition,
            records=task.restored_records,
            seconds=round(time.monotonic() - restoration.started, 3),
            stream_time=task.store.stream_time,
        )
        self.on_restored(task)

    def _assign(self) -> None:
        self.consumer.assign(
            [TopicPartition(r.changelog, r.task.partition, r.position or OFFSET_BEGINNING) for r in self.restoring.values()]
        )

    def close(self) -> None:
        self.consumer.close()
