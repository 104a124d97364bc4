"""Avro output: the schema made from a record's shape, and its encoder.

Field names are the rendered dict's keys made identifiers (``user.id`` ->
``user_id``); every field has a default, so a configuration that adds an
aggregate makes a compatible new version.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import fastavro
import orjson

from service.core.shapes import BOOLEAN, DOUBLE, JSON, LONG, MAP_LONG, MAP_STRING, RECORD, STRING, FieldShape, RecordShape, identifier
from service.runtime.formats.framing import Encode, header


def avro_schema(shape: RecordShape) -> dict[str, Any]:
    """The record as an Avro schema; every field has a default, so adding one is a compatible change."""
    return {"type": "record", "name": shape.name, "namespace": shape.namespace, "fields": [_avro_field(f) for f in shape.fields]}


def _avro_type(field: FieldShape) -> tuple[Any, Any]:
    """(Avro type, default) of a non-null field."""
    if field.type == STRING:
        return "string", ""
    if field.type == LONG:
        return "long", 0
    if field.type == DOUBLE:
        return "double", 0.0
    if field.type == BOOLEAN:
        return "boolean", False
    if field.type == JSON:
        return "string", ""
    if field.type == MAP_LONG:
        return {"type": "map", "values": "long"}, {}
    if field.type == MAP_STRING:
        return {"type": "map", "values": "string"}, {}
    fields = [_avro_field(f) for f in field.fields]
    record = {"type": "record", "name": field.type_name, "fields": fields}
    return record, {f["name"]: f["default"] for f in fields}


def _avro_field(field: FieldShape) -> dict[str, Any]:
    kind, default = _avro_type(field)
    doc = "JSON text" if field.type == JSON else None
    if field.nullable:
        out = {"name": identifier(field.name), "type": ["null", kind], "default": None}
    else:
        out = {"name": identifier(field.name), "type": kind, "default": default}
    if doc:
        out["doc"] = doc
    return out


def _to_datum(fields: tuple[FieldShape, ...]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The rendered dict as the datum Avro and Protobuf encoders take: names made identifiers, JSON as text."""
    plan: list[tuple[str, str, Callable[[Any], Any] | None]] = []
    for field in fields:
        convert: Callable[[Any], Any] | None = None
        if field.type == JSON:
            convert = _json_text
        elif field.type == DOUBLE:
            convert = _float
        elif field.type == RECORD:
            convert = _to_datum(field.fields)
        plan.append((field.name, identifier(field.name), convert))

    def to_datum(record: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for name, target, convert in plan:
            value = record.get(name)
            out[target] = convert(value) if convert is not None and value is not None else value
        return out

    return to_datum


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def _float(value: Any) -> float:
    return float(value)


def avro_encoder(shape: RecordShape, schema_id: int) -> Encode:
    parsed = fastavro.parse_schema(avro_schema(shape))
    prefix = header(schema_id)
    to_datum = _to_datum(shape.fields)
    write = fastavro.schemaless_writer

    def encode(record: dict[str, Any]) -> bytes:
        out = io.BytesIO()
        out.write(prefix)
        write(out, parsed, to_datum(record))
        return out.getvalue()

    return encode
