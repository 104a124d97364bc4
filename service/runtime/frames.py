"""What the repartition topic carries: framed events, and watermark reports.

A **data frame** is the original record's bytes behind a small header:
``kind=1 | event time (ms) | the source's watermark (ms) | source id``. The
window stage reads the time without parsing the event again; a late event
reaches the late topic exactly as it was sent; pairing knows the source topic;
and every frame tells the window task how far its source has got.

A **decoded frame** carries a record of a source read as Avro, Protobuf or
JSON Schema: ``kind=3 | event time | watermark | source id | n``, then the
decoded event as n bytes of JSON, then the original record's bytes. The
window stage parses JSON only, needs no schema registry, and still sends the
late topic the record exactly as it was sent.

A **pack** carries several data frames' contents in one record:
``kind=4 | source id``, then per event ``event time | watermark | key length |
event length | key | event``. A source partition's events bound for one
repartition partition go out as one pack per poll (up to ``PACK_LIMIT``
bytes), not a record per event: a produce call, a consumed record and the
broker's work per record become per pack, and the watermark still travels
with every event, so the window task judges each exactly as it judged a data
frame. It has no key, as a report: the first byte tells them apart. Versions
before packs read a pack as an unreadable record (``app.pack_frames``).

A **watermark report** has no key and no event:
``kind=2 | watermark | source id | flags``. Each source partition sends one to
every repartition partition of a pipeline, so the window tasks it feeds
rarely (or never) still know how far it has got: at once the first time and
when it goes quiet or busy, then at most once a second while its watermark
moves. The flag ``IDLE`` says the source is quiet and the watermark is its
wall-clock bound (``service.runtime.ends``); a reader takes the watermark as
a watermark either way. Versions before wall-clock bounds set ``IDLE`` on a
source merely read to its end, with its event-time watermark: read that way
too, it is still true.

The first byte tells the two apart from each other and from frames of older
versions, which began with the high byte of the event time (0 for any time
before the year 4000).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import Protocol

from confluent_kafka import KafkaError

from service.core.partitioner import partition_for

DATA = 1
REPORT = 2
DECODED = 3
PACKED = 4
#: kind, event time, watermark, source id
DATA_FRAME = struct.Struct(">BqqI")
#: kind, event time, watermark, source id, length of the decoded event's JSON that follows
DECODED_FRAME = struct.Struct(">BqqII")
#: kind, source id; the entries follow
PACK_HEAD = struct.Struct(">BI")
#: event time, watermark, key length, event length; the key and the event follow
PACK_ENTRY = struct.Struct(">qqII")
#: The most bytes of entries a pack holds (unless one event alone is more): well under the default
#: 1 MB record limit of producers and brokers; ``clients.pack_limit`` lowers it to fit the producer's.
PACK_LIMIT = 256 * 1024
#: Keys whose repartition partition the process remembers, per partition count (about 10 MB at most with keys of
#: 13 bytes, shared by every ``Packer`` of that count): a key seen again costs a cache hit, not a MurmurHash2 in
#: Python (1.6 µs). A full cache is emptied, and fills again with the keys still in use.
PARTITION_CACHE = 1 << 16
_ENTRY_SIZE = PACK_ENTRY.size
#: partitions -> key -> its partition: a dict lookup per event, where an ``lru_cache`` call, which builds and
#: hashes an argument tuple and reorders its list, took 0.2 µs more per event in the source task (bench/stages.py).
_partitions_of: dict[int, dict[bytes, int]] = {}
#: kind, watermark, source id, flags
REPORT_FRAME = struct.Struct(">BqIB")
#: The frame of versions before watermarks: event time, source topic index.
LEGACY_FRAME = struct.Struct(">qB")
#: A watermark report of a source that has read nothing yet.
NO_WATERMARK = -(2**63)
IDLE = 1


def report(watermark: int | None, source: int, idle: bool) -> bytes:
    return REPORT_FRAME.pack(REPORT, NO_WATERMARK if watermark is None else watermark, source, IDLE if idle else 0)


#: ``Collector.send`` as the source task calls it: topic, key, value, partition.
Send = Callable[..., None]


class Frames(Protocol):
    """Where a source task puts its data frames for one repartition topic."""

    def add(self, key: bytes, time_ms: int, watermark: int, event: bytes) -> None: ...

    def flush(self) -> None: ...

    def discard(self) -> None:
        """Forget what is not sent yet: the transaction it belonged to aborted, and the source is read again."""


class Single:
    """A data frame per event, keyed by the event's key (``app.pack_frames = false``)."""

    def __init__(self, topic: str, source: int, send: Send) -> None:
        self._topic = topic
        self._source = source
        self._send = send

    def add(self, key: bytes, time_ms: int, watermark: int, event: bytes) -> None:
        self._send(self._topic, key, DATA_FRAME.pack(DATA, time_ms, watermark, self._source) + event)

    def flush(self) -> None:
        pass

    def discard(self) -> None:
        pass


class Packer:
    """Events packed per repartition partition until ``flush``, or until the next would take a pack past ``limit`` bytes.

    The partition is the producer's own (``murmur2_random``) for the event's
    key, so a key's events reach the same window task packed or not.
    """

    def __init__(self, topic: str, partitions: int, source: int, send: Send, limit: int = PACK_LIMIT) -> None:
        self._topic = topic
        self._partitions = partitions
        self._head = PACK_HEAD.pack(PACKED, source)
        self._send = send
        self._limit = limit
        #: partition -> [bytes of its entries, head, entry, key, event, entry, key, event, ...]
        self._packs: dict[int, list[object]] = {}
        self._partition_of = _partitions_of.setdefault(partitions, {})

    def add(self, key: bytes, time_ms: int, watermark: int, event: bytes) -> None:
        partition = self._partition_of.get(key)
        if partition is None:
            partition = self._partition(key)
        size = _ENTRY_SIZE + len(key) + len(event)
        pack = self._packs.get(partition)
        if pack is None:
            pack = self._packs[partition] = [0, self._head]
        elif pack[0] + size > self._limit:  # type: ignore[operator]  # the first item is the size
            self._send_pack(partition, pack)
            pack = self._packs[partition] = [0, self._head]
        pack += (PACK_ENTRY.pack(time_ms, watermark, len(key), len(event)), key, event)
        pack[0] += size  # type: ignore[operator]

    def _partition(self, key: bytes) -> int:
        known = self._partition_of
        if len(known) >= PARTITION_CACHE:
            known.clear()
        partition = known[key] = partition_for(key, self._partitions)
        return partition

    def flush(self) -> None:
        # Taken out first: a send that fails leaves nothing behind to go out with a later transaction.
        packs, self._packs = self._packs, {}
        for partition, pack in packs.items():
            self._send_pack(partition, pack)

    def discard(self) -> None:
        self._packs.clear()

    def _send_pack(self, partition: int, pack: list[object]) -> None:
        self._send(self._topic, None, b"".join(pack[1:]), partition=partition)  # type: ignore[arg-type]  # bytes after the size


def unpack(value: bytes) -> tuple[int, Iterator[tuple[bytes, int, int, memoryview]]]:
    """A pack's source id, and its events as they are read: (key, event time, watermark, event).

    An event that runs past the pack's end raises ``struct.error`` before it is given.
    """
    _, source = PACK_HEAD.unpack_from(value)
    return source, _events(value)


def _events(value: bytes) -> Iterator[tuple[bytes, int, int, memoryview]]:
    entry = PACK_ENTRY.unpack_from
    view = memoryview(value)
    offset = PACK_HEAD.size
    end = len(value)
    while offset < end:
        time_ms, watermark, key_size, size = entry(value, offset)
        start = offset + _ENTRY_SIZE + key_size
        offset = start + size
        if offset > end:
            raise struct.error("a pack's last event runs past its end")
        yield value[start - key_size : start], time_ms, watermark, view[start:offset]


class Record(Protocol):
    """A message the consumer handed over, as the runtime reads it.

    confluent-kafka types every accessor of ``Message`` as optional, because
    an error event has no offset and a produced message no timestamp yet. A
    record (not an error event) always has its topic, partition, offset and
    timestamp type: the consumer's batch is cast to this once, at the loop's
    edge, instead of checking every field of every record in the hot path.
    """

    def topic(self) -> str: ...

    def partition(self) -> int: ...

    def offset(self) -> int: ...

    def key(self) -> bytes | None: ...

    def value(self) -> bytes | None: ...

    def timestamp(self) -> tuple[int, int]: ...

    def error(self) -> KafkaError | None: ...
