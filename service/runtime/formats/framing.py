"""Confluent's wire format: magic byte 0, a 4-byte big-endian schema id, then the body.

Protobuf bodies are preceded by the message indexes, the path from the
file's top-level messages to the record's message: zigzag varints, their
count first, with ``[0]`` (the first message) written as a single 0 byte.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from service.core.reasons import BAD_FRAMING
from service.errors import BadRecord

#: An output format's encoder: a rendered record to its bytes (header included).
Encode = Callable[[dict[str, Any]], bytes]

MAGIC = 0
#: Magic byte and schema id.
HEADER_SIZE = 5


def schema_id(raw: bytes | None, what: str = "value") -> int:
    """The schema id of a framed record; ``BadRecord`` (``bad_framing``) when it is not framed."""
    if raw is None:
        raise BadRecord(f"no {what} (a tombstone): expected Confluent's wire format", BAD_FRAMING)
    if len(raw) < HEADER_SIZE:
        raise BadRecord(f"{what} of {len(raw)} bytes: Confluent's wire format needs at least {HEADER_SIZE}", BAD_FRAMING)
    if raw[0] != MAGIC:
        hint = " (a JSON text?)" if raw[:1] in (b"{", b"[") else ""
        raise BadRecord(f"{what} has magic byte 0x{raw[0]:02x}{hint}; Confluent's wire format starts with 0x00", BAD_FRAMING)
    return int.from_bytes(raw[1:HEADER_SIZE], "big")


def header(schema: int) -> bytes:
    return bytes([MAGIC]) + schema.to_bytes(4, "big")


def _zigzag(value: int) -> int:
    return (value << 1) ^ (value >> 63)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def write_indexes(indexes: tuple[int, ...]) -> bytes:
    """Protobuf message indexes as Confluent's serializers write them."""
    if indexes == (0,):
        return b"\x00"
    return _varint(_zigzag(len(indexes))) + b"".join(_varint(_zigzag(i)) for i in indexes)


def read_indexes(raw: bytes, position: int) -> tuple[tuple[int, ...], int]:
    """The message indexes at ``position`` and where the body starts; ``BadRecord`` when they are cut short."""
    count, position = _read_zigzag(raw, position)
    if count == 0:
        return (0,), position
    if count < 0 or count > 100:
        raise BadRecord(f"implausible protobuf message index count {count}", BAD_FRAMING)
    indexes = []
    for _ in range(count):
        index, position = _read_zigzag(raw, position)
        if index < 0:
            raise BadRecord(f"negative protobuf message index {index}", BAD_FRAMING)
        indexes.append(index)
    return tuple(indexes), position


def _read_zigzag(raw: bytes, position: int) -> tuple[int, int]:
    shift = 0
    value = 0
    while True:
        if position >= len(raw) or shift > 63:
            raise BadRecord("protobuf message indexes cut short", BAD_FRAMING)
        byte = raw[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (value >> 1) ^ -(value & 1), position
        shift += 7
