"""JSON Schema output: the schema made from a record's shape, and its encoder.

Field names are kept as they are: the body is the very JSON the ``json``
serialization writes, behind Confluent's header. Fields every record has are
required; others may be added by a later version.
"""

from __future__ import annotations

from typing import Any

import orjson

from service.core.shapes import (
    BOOLEAN,
    DOUBLE,
    JSON,
    LONG,
    MAP_LONG,
    MAP_STRING,
    STRING,
    FieldShape,
    RecordShape,
)
from service.runtime.formats.framing import Encode, header


def json_schema(shape: RecordShape) -> dict[str, Any]:
    """The record as a JSON Schema (draft-07): the fields every record has are required, others may be added later."""
    body = _json_object(shape.fields)
    return {"$schema": "http://json-schema.org/draft-07/schema#", "title": shape.full_name, **body}


def _json_object(fields: tuple[FieldShape, ...]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {f.name: _json_type(f) for f in fields},
        "additionalProperties": False,
    }


def _json_type(field: FieldShape) -> dict[str, Any]:
    simple = {STRING: "string", LONG: "integer", DOUBLE: "number", BOOLEAN: "boolean"}
    if field.type in simple:
        kind: Any = simple[field.type]
        return {"type": [kind, "null"] if field.nullable else kind}
    if field.type == JSON:
        return {}
    if field.type == MAP_LONG:
        return {"type": "object", "additionalProperties": {"type": "integer"}}
    if field.type == MAP_STRING:
        return {"type": "object", "additionalProperties": {"type": "string"}}
    return _json_object(field.fields)


def json_schema_encoder(shape: RecordShape, schema_id: int) -> Encode:
    prefix = header(schema_id)
    dumps = orjson.dumps

    def encode(record: dict[str, Any]) -> bytes:
        return prefix + dumps(record)

    return encode
