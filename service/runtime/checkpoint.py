"""Consumed offsets between commits, and the repartition records safe to delete.

A commit (``TaskManager.commit``) goes through these steps, in this order:

1. Every running window task prepares: it closes the windows due at its
   stream time, hands their records to the collector, and hands the
   collector one changelog record per key it changed.
2. If nothing was consumed, changed or sent since the last commit, stop.
3. The collector commits: under exactly-once, one Kafka transaction holding
   every record sent since the last commit (output, late, dead-letter,
   derived, repartition, changelog) and the offsets in this checkpoint;
   under at-least-once, a flush that checks every delivery.
4. If that fails: abort, roll every task back to the last commit, and seek
   every partition back to its committed offset. Nothing else happens.
5. Every task that prepared writes its batch to RocksDB, with the changelog
   offset the commit reached: local state never runs ahead of Kafka.
6. Under at-least-once, the offsets are committed now, after the records and
   the state, so a crash only repeats work.
7. The checkpoint moves the repartition offsets it holds to "purgeable" and
   starts empty; every ``topics.purge_interval`` the purgeable records are
   deleted, as Kafka Streams deletes consumed repartition records.
"""

from __future__ import annotations

from collections.abc import Collection

from confluent_kafka import TopicPartition

from service.runtime.ids import Partition


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
