"""A poll's records in hand, given to the tasks a slice of about ``app.poll_batch`` events at a time.

A repartition record may be a pack of up to 256 KiB: thousands of events
(``service.runtime.frames``). A poll of ``app.poll_batch`` records could then
carry the whole prefetch of every repartition partition, and did: 702,310
events in one poll of ``bench/scale.py --users 1000000``, processed and
committed in one go, six seconds with no commit, punctuation or query served,
and a commit of 700,000 new keys at once (1.1 GiB peak RSS, against 0.4 GiB
with a record per event). Kafka Streams' stream thread likewise processes a
poll in bounded rounds with its commit checks between.

So the stream loop takes a slice per iteration, and polls again only when
none is left. A pack counts as the events its size allows for
(``PACK_BYTES_PER_EVENT``); any other record as one event.

A slice left in hand stays valid while its partition is read on from where
the poll left it. A seek says where a partition is read from next (a restore
that has not finished, a schema not fetched yet, a record handed over
twice): that partition's records in hand are dropped, and read again from
there. An abort or a revocation drops them too. An abort also says where
each partition's records in hand began (with the slice it interrupted): a
partition with nothing processed or committed yet is read again from there,
not skipped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable

from confluent_kafka import KafkaError

from service.runtime.frames import PACKED, Record
from service.runtime.ids import Partition

#: How many bytes of a pack to count as one event: an entry's 24-byte header and
#: a short key and JSON event. Bigger events count for more than they are, so a
#: slice of packs has at most about ``app.poll_batch`` events, usually fewer.
PACK_BYTES_PER_EVENT = 64


def weight(record: Record) -> int:
    """The events a record counts as: a pack, those its size allows for; any other record (or event), one."""
    value = record.value()
    if value and value[0] == PACKED:
        return max(1, len(value) // PACK_BYTES_PER_EVENT)
    return 1


def slices(batch: list[Record], events: int) -> list[list[Record]]:
    """``batch`` cut, in order, into slices of about ``events`` events each."""
    cut: list[list[Record]] = []
    start = 0
    total = 0
    for index, record in enumerate(batch):
        total += weight(record)
        if total >= events:
            cut.append(batch[start : index + 1])
            start = index + 1
            total = 0
    if start < len(batch):
        cut.append(batch[start:])
    return cut


class InHand:
    """The slices of the last poll not given to the tasks yet."""

    def __init__(self, events: int) -> None:
        #: About how many events a slice holds (``app.poll_batch``).
        self.events = events
        self._slices: deque[list[Record]] = deque()
        #: The slice given out last, until its records are processed (``routed``).
        self._current: list[Record] = []
        #: The last poll came back full, in records or in events.
        self.full = False

    def __bool__(self) -> bool:
        return bool(self._slices)

    def hold(self, batch: list[Record], packs: bool) -> None:
        """A new poll's records. ``packs``: some partition polled may carry packs (a repartition topic)."""
        if not batch:
            self.full = False
            return
        cut = slices(batch, self.events) if packs else [batch]
        self.full = len(batch) >= self.events or len(cut) > 1
        self._slices.extend(cut)

    def take(self, dropped: Collection[Partition]) -> list[Record]:
        """The next slice, less the records of partitions in ``dropped``; empty when none is left."""
        if not self._slices:
            return []
        batch = self._slices.popleft()
        self._current = _without(batch, dropped) if dropped else batch
        return self._current

    def routed(self) -> None:
        """The slice given out last was processed."""
        self._current = []

    def drop_all(self) -> dict[Partition, int]:
        """Forget every record in hand (after an abort); where each partition's began, the interrupted slice's included.

        An end-of-partition event counts as read up to its offset: the consumer
        gives it once per end reached, so a partition whose end was in hand
        must be sought for it to be given again.
        """
        first: dict[Partition, int] = {}
        for batch in (self._current, *self._slices):
            for record in batch:
                error = record.error()
                if error is None or error.code() == KafkaError._PARTITION_EOF:
                    first.setdefault(Partition(record.topic(), record.partition()), record.offset())
        self._current = []
        self._slices.clear()
        return first

    def drop(self, partitions: Iterable[Partition]) -> None:
        """Forget the records of ``partitions`` in hand (they left this instance)."""
        gone = set(partitions)
        if gone and self._slices:
            self._slices = deque(kept for kept in (_without(batch, gone) for batch in self._slices) if kept)


def _without(batch: list[Record], partitions: Collection[Partition]) -> list[Record]:
    return [record for record in batch if Partition(record.topic(), record.partition()) not in partitions]
