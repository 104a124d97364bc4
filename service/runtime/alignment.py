"""Pausing partitions: while a task restores, and while an input runs far ahead of the others.

Stream time follows the slowest source (``service.core.watermarks``), so a
source read far ahead of the others only makes windows wait, and pile up in
memory. Flink's answer is watermark alignment, used here too: an input whose
watermark is more than ``max_drift`` ahead of the slowest busy input of its
group is paused until the others catch up. A group is the source partitions
this instance reads for one pipeline, or the inputs of one direct task.

An input that has not delivered anything yet, and is not known to be empty,
holds the others back for at most ``max_task_idle`` (Kafka Streams'
``max.task.idle.ms``): it may hold the oldest events. After that the others
go on; the watermarks still keep every event of the late starter on time.

A partition can be paused for several reasons at once; it is resumed when
none is left.
"""

from __future__ import annotations

from collections.abc import Iterable

import structlog
from confluent_kafka import Consumer, TopicPartition

from service.runtime.ids import Partition
from service.runtime.tasks import Task

log = structlog.get_logger("sessionizer.alignment")

RESTORING = "restoring"
AHEAD = "ahead"

#: (partition, watermark or None, idle)
Input = tuple[Partition, "int | None", bool]


class Alignment:
    def __init__(self, consumer: Consumer, max_drift_ms: int, max_task_idle: float) -> None:
        self.consumer = consumer
        self.max_drift_ms = max_drift_ms
        self.max_task_idle = max_task_idle
        self._reasons: dict[Partition, set[str]] = {}
        #: group -> when one of its inputs was first seen busy with nothing delivered yet
        self._waiting_since: dict[object, float] = {}
        self.pauses = 0

    @property
    def paused(self) -> list[Partition]:
        return [where for where, reasons in self._reasons.items() if reasons]

    def hold(self, partitions: Iterable[Partition], reason: str) -> None:
        newly = []
        for where in partitions:
            reasons = self._reasons.setdefault(where, set())
            if not reasons:
                newly.append(where)
            reasons.add(reason)
        if newly:
            self.consumer.pause([TopicPartition(topic, partition) for topic, partition in newly])
            self.pauses += len(newly)

    def release(self, partitions: Iterable[Partition], reason: str) -> None:
        freed = []
        for where in partitions:
            reasons = self._reasons.get(where)
            if reasons is None or reason not in reasons:
                continue
            reasons.discard(reason)
            if not reasons:
                del self._reasons[where]
                freed.append(where)
        if freed:
            self.consumer.resume([TopicPartition(topic, partition) for topic, partition in freed])

    def resume_restored(self, partitions: Iterable[Partition]) -> None:
        self.release(partitions, RESTORING)

    def forget(self, where: Partition) -> None:
        """A partition left this instance: nothing holds it any more."""
        self._reasons.pop(where, None)

    # -- watermark alignment ---------------------------------------------------------

    def align(self, tasks: Iterable[Task], now: float) -> None:
        """Pause the inputs that run ahead, resume those the others caught up with."""
        ahead: set[Partition] = set()
        groups: dict[object, list[Input]] = {}
        for task in tasks:
            for one in task.alignment():
                groups.setdefault(one.group, []).append((one.partition, one.watermark, one.ended))
        for group, inputs in groups.items():
            ahead.update(self._ahead(group, inputs, now))
        held = {where for where, reasons in self._reasons.items() if AHEAD in reasons}
        self.release(held - ahead, AHEAD)
        self.hold(ahead - held, AHEAD)

    def _ahead(self, group: object, inputs: list[Input], now: float) -> list[Partition]:
        busy = [(where, mark) for where, mark, idle in inputs if not idle]
        known = [mark for _, mark in busy if mark is not None]
        if not known:
            return []
        if any(mark is None for _, mark in busy):
            since = self._waiting_since.setdefault(group, now)
            if now - since < self.max_task_idle:
                return [where for where, mark in busy if mark is not None]
        else:
            self._waiting_since.pop(group, None)
        bound = min(known) + self.max_drift_ms
        return [where for where, mark in busy if mark is not None and mark > bound]
