"""Avro: records decoded with fastavro's ``schemaless_reader``, the writer schema parsed once per id.

What a record becomes is what a JSON event would be: a dict, nested records
as nested dicts, unions as their value, enums as their symbol. Logical types
are left as their underlying type, so ``timestamp-millis`` stays epoch
milliseconds (what ``time`` reads best), ``date`` days since the epoch,
``decimal`` its bytes, ``uuid`` its text. ``bytes`` and ``fixed`` become text
as in Avro's own JSON encoding: one character per byte (ISO-8859-1); they are
walked only in schemas that have them.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import fastavro
import orjson

from service.core.reasons import BAD_BODY, NOT_AN_OBJECT, UNKNOWN_SCHEMA
from service.errors import BadRecord
from service.runtime.formats.framing import HEADER_SIZE, header, schema_id
from service.runtime.formats.registry import Fetched, Registry

#: What fastavro raises for a body that does not fit its schema (the spike's census of random bodies).
BODY_ERRORS = (EOFError, IndexError, UnicodeDecodeError, ValueError, TypeError, OverflowError, KeyError, AttributeError, StopIteration)

Convert = Callable[[Any], Any]


def strip_logical_types(schema: Any) -> Any:
    """The schema without ``logicalType``: values come back as their underlying Avro type."""
    if isinstance(schema, dict):
        return {k: strip_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [strip_logical_types(v) for v in schema]
    return schema


def parse(fetched: Fetched) -> tuple[Any, dict[str, Any]]:
    """The writer schema parsed for ``schemaless_reader``, and the named types it may refer to."""
    named: dict[str, Any] = {}
    for _, text in fetched.references:
        fastavro.parse_schema(strip_logical_types(orjson.loads(text)), named)
    return fastavro.parse_schema(strip_logical_types(orjson.loads(fetched.text)), named), named


def _converter(schema: Any, named: dict[str, Any], seen: set[str]) -> Convert | None:
    """A function turning bytes in a decoded value into text; None when the schema holds no bytes."""
    if isinstance(schema, str):
        if schema in ("bytes", "fixed"):
            return _latin1
        if schema in named and schema not in seen:
            return _converter(named[schema], named, seen | {schema})
        return None
    if isinstance(schema, list):
        branches = [_converter(branch, named, seen) for branch in schema]
        if not any(branches):
            return None
        return _union_converter([b for b in branches if b is not None])
    if isinstance(schema, dict):
        kind = schema.get("type")
        if kind == "fixed":
            return _latin1
        if kind == "record" or kind == "error":
            name = schema.get("name")
            if isinstance(name, str):
                named.setdefault(name, schema)
            inner = seen | ({name} if isinstance(name, str) else set())
            fields: list[tuple[str, Convert]] = []
            for spec in schema.get("fields", []):
                conv = _converter(spec["type"], named, inner)
                if conv is not None:
                    fields.append((spec["name"], conv))
            return _record_converter(fields) if fields else None
        if kind == "array":
            item = _converter(schema.get("items"), named, seen)
            return None if item is None else (lambda value: [item(v) for v in value])
        if kind == "map":
            value_conv = _converter(schema.get("values"), named, seen)
            return None if value_conv is None else (lambda value: {k: value_conv(v) for k, v in value.items()})
        return _converter(kind, named, seen)
    return None


def _latin1(value: Any) -> Any:
    return value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else value


def _union_converter(branches: list[Convert]) -> Convert:
    def convert(value: Any) -> Any:
        if value is None or isinstance(value, (str, int, float, bool)):
            return value
        if isinstance(value, (bytes, bytearray)):
            return value.decode("latin-1")
        for branch in branches:
            value = branch(value)
        return value

    return convert


def _record_converter(fields: list[tuple[str, Convert]]) -> Convert:
    def convert(record: Any) -> Any:
        if not isinstance(record, dict):
            return record
        for name, conv in fields:
            if name in record and record[name] is not None:
                record[name] = conv(record[name])
        return record

    return convert


def decoder(registry: Registry, records_only: bool = True, what: str = "value") -> Callable[[bytes | None], Any]:
    """Decode framed Avro values (``records_only``: the top level must be a record, as an event is)."""
    readers: dict[bytes, tuple[Any, Convert | None]] = {}
    registry.on_evict(lambda sid: readers.pop(header(sid), None))  # bounded as the registry's cache is
    read = fastavro.schemaless_reader
    BytesIO = io.BytesIO

    def resolve(raw: bytes | None) -> tuple[Any, Convert | None]:
        sid = schema_id(raw, what)
        assert raw is not None
        fetched = registry.schema(sid)
        if fetched.schema_type != "AVRO":
            raise BadRecord(f"schema id {sid} is a {fetched.schema_type} schema; this topic's {what}s are read as Avro", UNKNOWN_SCHEMA)
        try:
            parsed, named = parse(fetched)
        except Exception as exc:
            raise BadRecord(f"schema id {sid} is not an Avro schema fastavro can read: {exc}", UNKNOWN_SCHEMA) from None
        top = parsed.get("type") if isinstance(parsed, dict) else parsed
        if records_only and top not in ("record", "error"):
            raise BadRecord(f"schema id {sid} is an Avro {top}, not a record: an event must be a record", NOT_AN_OBJECT)
        entry = (parsed, _converter(parsed, dict(named), set()))
        readers[raw[:HEADER_SIZE]] = entry
        return entry

    def decode(raw: bytes | None) -> Any:
        entry = readers.get(raw[:HEADER_SIZE]) if raw is not None else None
        if entry is None:
            entry = resolve(raw)
        assert raw is not None
        parsed, convert = entry
        stream = BytesIO(raw)
        stream.seek(HEADER_SIZE)
        try:
            value = read(stream, parsed, None)
        except BODY_ERRORS as exc:
            raise BadRecord(
                f"{what} does not decode with Avro schema {int.from_bytes(raw[1:5], 'big')}: {type(exc).__name__}: {exc}", BAD_BODY
            ) from None
        if stream.tell() != len(raw):
            raise BadRecord(
                f"{what} has {len(raw) - stream.tell()} bytes left over after its Avro record (schema {int.from_bytes(raw[1:5], 'big')})",
                BAD_BODY,
            )
        return convert(value) if convert is not None else value

    return decode
