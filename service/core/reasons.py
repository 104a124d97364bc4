"""Why a record went to the late or the dead-letter topic: small fixed sets of codes.

Each late or dead-letter record carries its code in the ``sessionizer.reason_code``
header, next to the free-text ``sessionizer.reason`` / ``sessionizer.error``,
and the metrics count records per code (``reason`` label). The sets are fixed,
so a label never grows with the data; the text says the details.

Codes are decided where the record is made, on the cold path only: an
accepted event costs nothing more.
"""

from __future__ import annotations

#: The header holding the code on late and dead-letter records.
REASON_CODE_HEADER = "sessionizer.reason_code"

# -- dead letters ----------------------------------------------------------------

#: The value does not decode as JSON (an empty value, a tombstone, included).
INVALID_JSON = "invalid_json"
#: JSON, but not an object.
NOT_AN_OBJECT = "not_an_object"
#: The key field is missing or null, or (``key = "@key"``) the record has no key.
NO_KEY = "no_key"
#: The key field is empty or neither a string nor an integer.
BAD_KEY = "bad_key"
#: No usable event time: the field is unreadable, or absent with no record timestamp.
BAD_TIMESTAMP = "bad_timestamp"
#: A field an aggregate reads has the wrong type (a non-number for ``sum``).
WRONG_TYPE = "wrong_type"
#: A record of a pipeline grouped by the record key, in a partition its key does not hash to.
WRONG_PARTITION = "wrong_partition"
#: A repartition record the window task cannot unpack (not written by this service's version).
UNREADABLE_FRAME = "unreadable_frame"
#: A source read as Avro, Protobuf or JSON Schema whose record is not in Confluent's wire format
#: (magic byte 0, a 4-byte schema id): wrong magic byte, too short, a tombstone, a JSON text.
BAD_FRAMING = "bad_framing"
#: The record's schema id is one the registry does not know (HTTP 404), or a schema of another format.
UNKNOWN_SCHEMA = "unknown_schema"
#: The body does not decode with its schema (truncated, corrupt, trailing bytes, a body that breaks a validated JSON Schema).
BAD_BODY = "bad_body"
#: Anything else: a custom aggregate's check, offline mode's unreadable wrapped line.
OTHER = "other"

DEAD_LETTER_REASONS = (
    INVALID_JSON,
    NOT_AN_OBJECT,
    NO_KEY,
    BAD_KEY,
    BAD_TIMESTAMP,
    WRONG_TYPE,
    WRONG_PARTITION,
    UNREADABLE_FRAME,
    BAD_FRAMING,
    UNKNOWN_SCHEMA,
    BAD_BODY,
    OTHER,
)

# -- late events ----------------------------------------------------------------------

#: Late against its own source partition's watermark: the source delivered it
#: more than grace out of order. Grace is too short for that source's disorder.
BEHIND_WATERMARK = "behind_watermark"
#: In time for its own source, but the task's stream time had moved past it
#: (other sources ran ahead, or the wall clock moved an idle task's stream
#: time on): its source was quiet or slow and came back with old events.
BEHIND_STREAM_TIME = "behind_stream_time"

LATE_REASONS = (BEHIND_WATERMARK, BEHIND_STREAM_TIME)
