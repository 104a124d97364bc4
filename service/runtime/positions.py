"""Where each assigned partition is read up to, and putting it back: offsets, seeks, re-deliveries.

The task manager asks this what it may hand to its tasks and where to read
from after a failure:

- **the next expected offset** of each partition: after the last record
  processed, or where it was last sought. A record below it was processed
  already: librdkafka can hand records over again after a pause and a resume
  close to an assignment (the fetcher restarts from a stale position; seen
  with librdkafka 2.16), and counting them again would break exactly-once;
- **where each partition's end was reached** (librdkafka's end-of-partition
  event), until a record or a seek makes that out of date: with the next
  expected offset, how far the partition is read (``read_up_to``), which the
  broker's end offsets are compared with (``service.runtime.ends``);
- **the first offset read** since the assignment, where a rewind goes when
  the group has no committed offset yet;
- **the registry hold**: a partition's records up to the first whose schema
  the registry has not given yet; the partition is put back at that record;
- **the rewind** to the committed offsets after a failed commit.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import structlog
from confluent_kafka import OFFSET_INVALID, Consumer, KafkaException, TopicPartition

from service.runtime.formats.gate import SchemaGate
from service.runtime.frames import Record
from service.runtime.ids import Partition

log = structlog.get_logger("sessionizer.tasks")

#: Records of each partition, as a poll groups them.
Groups = dict[Partition, list[Record]]


class Positions:
    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        #: The next offset each partition should hand over.
        self._next: dict[Partition, int] = {}
        #: Where each partition's end was last reached, until a record or a seek makes it out of date.
        self._ends_at: dict[Partition, int] = {}
        #: The first offset read from each partition since it was assigned.
        self._first: dict[Partition, int] = {}
        #: Partitions sought since the task manager last cleared it: their records polled before are out of date.
        self.sought: set[Partition] = set()
        #: Records dropped as handed over again, in all.
        self.redelivered = 0
        self._redelivery_logged = 0.0

    # -- what was read ------------------------------------------------------------------------

    def processed(self, where: Partition, records: list[Record]) -> int:
        """``records`` of ``where`` were processed; returns the offset after the last."""
        self._first.setdefault(where, records[0].offset())
        after = records[-1].offset() + 1
        self._next[where] = after
        self._ends_at.pop(where, None)
        return after

    def read_from(self, first: dict[Partition, int]) -> None:
        """Records from ``first``'s offsets were read, though maybe not processed: a rewind goes no further on than that."""
        for where, offset in first.items():
            self._first.setdefault(where, offset)

    def ended(self, where: Partition, offset: int) -> None:
        """``where``'s end was reached at ``offset`` (an end-of-partition event)."""
        self._ends_at[where] = offset

    def read_up_to(self, where: Partition) -> int | None:
        """The offset ``where`` is read up to: past its last record, or where its end was reached."""
        position = self._next.get(where)
        end = self._ends_at.get(where)
        if end is None or (position is not None and position > end):
            return position
        return end

    def at_end(self, where: Partition) -> bool:
        """``where``'s end was reached after its last record (an end-of-partition event, no record since)."""
        return where in self._ends_at

    def forget(self, where: Partition) -> None:
        """``where`` left this instance."""
        self._next.pop(where, None)
        self._ends_at.pop(where, None)
        self._first.pop(where, None)

    # -- what may be processed ------------------------------------------------------------------

    def fresh(self, groups: Groups) -> Groups:
        """Each partition's records from its next expected offset on; a partition wholly behind is sought forward."""
        if not self._next:
            return groups
        kept: Groups = {}
        dropped = 0
        for where, group in groups.items():
            position = self._next.get(where)
            if position is None or group[0].offset() >= position:
                kept[where] = group
                continue
            fresh = [m for m in group if m.offset() >= position]
            dropped += len(group) - len(fresh)
            if fresh:
                kept[where] = fresh
            else:
                self.seek(where, position)
        if dropped:
            self.redelivered += dropped
            now = time.monotonic()
            if now - self._redelivery_logged >= 10.0:
                self._redelivery_logged = now
                log.warning("records handed over again were dropped", records=dropped, total=self.redelivered)
        return kept

    def admit(self, groups: Groups, gate: SchemaGate) -> tuple[Groups, set[Partition]]:
        """Each partition's records up to the first whose schema the registry has not given yet.

        That partition is put back at that record, and returned among those
        that wait: the caller pauses them until the schema is fetched
        (``service.runtime.formats.gate``); nothing after it is processed first.
        """
        admitted: Groups = {}
        waiting: set[Partition] = set()
        for where, group in groups.items():
            count = gate.admit(where, group)
            if count < len(group):
                self.seek(where, group[count].offset())
                waiting.add(where)
            if count:
                admitted[where] = group[:count] if count < len(group) else group
        return admitted, waiting

    # -- reading again ---------------------------------------------------------------------------

    def seek(self, where: Partition, offset: int) -> None:
        """Read a partition again from ``offset``: the next record processed from it is that one."""
        self._next[where] = offset
        self._ends_at.pop(where, None)
        self.sought.add(where)
        try:
            self.consumer.seek(TopicPartition(where.topic, where.partition, offset))
        except KafkaException as exc:
            log.warning("seek failed", topic=where.topic, partition=where.partition, error=str(exc.args[0]))

    def seek_to_committed(self, active: Iterable[Partition], eager: bool, held: Iterable[Partition], patience: float = 20.0) -> None:
        """Put every active partition back at its committed offset.

        The offsets are read while the broker answers within ``patience``.
        After that the partitions are assigned again with no offset: the
        consumer then fetches the committed ones itself, in the background,
        and reads from there. Waiting on longer would block the loop, and
        with it a rebalance the consumer may need a poll to finish before it
        answers (seen after a broker restart on a loaded machine: ``committed``
        timed out for minutes while the loop waited on it). ``held`` are the
        partitions to pause again after such a reassignment.
        """
        partitions = [TopicPartition(topic, partition) for topic, partition in sorted(set(active))]
        if not partitions:
            return
        deadline = time.monotonic() + patience
        while True:
            try:
                committed = checked(self.consumer.committed(partitions, timeout=min(10.0, patience)))
                break
            except KafkaException as exc:
                if time.monotonic() > deadline:
                    log.warning("committed offsets unreadable; reassigning, the consumer reads them itself", error=str(exc.args[0]))
                    self._reassign(partitions, eager, held)
                    return
                log.warning("reading committed offsets failed, retrying", error=str(exc.args[0]))
                time.sleep(1.0)
        for tp in committed:
            where = Partition(tp.topic, tp.partition)
            if tp.offset < 0:
                # Nothing committed yet: back to where this member started reading
                # (auto.offset.reset chose it); nothing read, nothing to undo.
                first = self._first.get(where)
                if first is None:
                    continue
                tp.offset = first
            self.seek(where, tp.offset)

    def _reassign(self, active: list[TopicPartition], eager: bool, held: Iterable[Partition]) -> None:
        """Assign ``active`` again with no offset, so the consumer starts them at their committed offsets.

        An assignment resumes its partitions: those ``held`` are paused again.
        """
        fresh = [TopicPartition(tp.topic, tp.partition, OFFSET_INVALID) for tp in active]
        try:
            if eager:
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
            where = Partition(tp.topic, tp.partition)
            self._next.pop(where, None)  # not known until records come
            self._ends_at.pop(where, None)
        paused = [TopicPartition(topic, partition) for topic, partition in held]
        if paused:
            self.consumer.pause(paused)


def checked(committed: list[TopicPartition]) -> list[TopicPartition]:
    """``committed`` offsets, or the first partition's error raised.

    librdkafka reports a failed request by raising, but a partition the
    coordinator could not answer for (offsets still loading after a broker
    restart, a transaction's offsets not yet stable) comes back with an error
    and no offset: taken for "nothing committed", it sent a rewind back to
    where this member started reading, records already committed were
    processed again, and their sessions emitted twice.
    """
    for tp in committed:
        if tp.error is not None:
            raise KafkaException(tp.error)
    return committed
