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
from typing import Protocol

from confluent_kafka import KafkaError

DATA = 1
REPORT = 2
DECODED = 3
#: kind, event time, watermark, source id
DATA_FRAME = struct.Struct(">BqqI")
#: kind, event time, watermark, source id, length of the decoded event's JSON that follows
DECODED_FRAME = struct.Struct(">BqqII")
#: kind, watermark, source id, flags
REPORT_FRAME = struct.Struct(">BqIB")
#: The frame of versions before watermarks: event time, source topic index.
LEGACY_FRAME = struct.Struct(">qB")
#: A watermark report of a source that has read nothing yet.
NO_WATERMARK = -(2**63)
IDLE = 1


def report(watermark: int | None, source: int, idle: bool) -> bytes:
    return REPORT_FRAME.pack(REPORT, NO_WATERMARK if watermark is None else watermark, source, IDLE if idle else 0)


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
