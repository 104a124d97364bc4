"""Output in Avro, Protobuf or JSON Schema: schemas made from each record's shape, registered at start-up, then encoders.

The schema of every kind of record a pipeline writes (``service.core.shapes``)
is made from the configuration and registered before anything is processed,
under the subject ``output.subject_strategy`` names. A configuration that adds
an aggregate makes a schema with a new field, which has a default (Avro), is
optional (JSON Schema) or takes a new field number (Protobuf, which keeps the
numbers of the fields it already had and reserves those of removed ones):
the registry accepts it as a new version. A change it refuses (an aggregate
whose type changed) stops start-up with one line naming the field, before a
record is written: nothing is ever written with a schema the registry has not
accepted.

Field names are the rendered dict's keys made identifiers (``user.id`` ->
``user_id``) in Avro and Protobuf, and kept as they are in JSON Schema, whose
body is the very JSON the ``json`` serialization writes.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from service.config import Config, PipelineConfig
from service.core.shapes import (
    BOOLEAN,
    DOUBLE,
    JSON,
    LONG,
    MAP_LONG,
    MAP_STRING,
    RECORD,
    STRING,
    FieldShape,
    RecordShape,
    identifier,
    output_shapes,
)
from service.errors import ConfigError, RegistryUnavailable
from service.runtime.formats.framing import header, write_indexes
from service.runtime.formats.registry import describe

log = structlog.get_logger("sessionizer.schema_registry")

Encode = Callable[[dict[str, Any]], bytes]
SCHEMA_TYPES = {"avro": "AVRO", "protobuf": "PROTOBUF", "json_schema": "JSON"}
_POINTER = re.compile(r"at (/\S+?)[\],]")


def subject(shape: RecordShape, strategy: str) -> str:
    if strategy == "record":
        return shape.full_name
    if strategy == "topic_record":
        return f"{shape.topic}-{shape.full_name}"
    return f"{shape.topic}-value"


def _check_names(shape: RecordShape, fields: tuple[FieldShape, ...], where: str) -> None:
    seen: dict[str, str] = {}
    for field in fields:
        name = identifier(field.name)
        if name in seen:
            raise ConfigError([f"{where}: fields {seen[name]!r} and {field.name!r} both become {name!r} in the schema; rename one"])
        seen[name] = field.name
        if field.type == RECORD:
            _check_names(shape, field.fields, where)


# -- Avro ---------------------------------------------------------------------------------------------


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
    import fastavro

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


# -- JSON Schema -----------------------------------------------------------------------------------------


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


# -- Protobuf ----------------------------------------------------------------------------------------------


@dataclass
class _Numbers:
    """Field numbers of one message in the latest registered version: kept for fields still there, reserved for the others."""

    by_name: dict[str, int]
    reserved: set[int]

    def assign(self, names: list[str]) -> tuple[dict[str, int], list[int]]:
        used = set(self.by_name.values()) | self.reserved
        out = {}
        next_number = max(used, default=0) + 1
        for name in names:
            if name in self.by_name:
                out[name] = self.by_name[name]
            else:
                out[name] = next_number
                next_number += 1
        reserved = sorted(self.reserved | {n for name, n in self.by_name.items() if name not in out})
        return out, reserved


def _previous_numbers(text: str | None) -> dict[str, _Numbers]:
    """Message full name (without package) -> its numbers, from the latest registered ``.proto`` text."""
    if not text:
        return {}
    from service.runtime.formats.protobuf import file_descriptor

    fdp = file_descriptor(text, "previous.proto")
    out: dict[str, _Numbers] = {}

    def walk(messages: Any, prefix: str) -> None:
        for message in messages:
            name = prefix + message.name
            reserved = {n for r in message.reserved_range for n in range(r.start, r.end)}
            out[name] = _Numbers({f.name: f.number for f in message.field}, reserved)
            walk(message.nested_type, name + ".")

    walk(fdp.message_type, "")
    return out


def proto_text(shape: RecordShape, previous: str | None = None) -> str:
    """The record as ``.proto`` source (proto3), numbered compatibly with the previous version's text."""
    numbers = _previous_numbers(previous)
    lines = ['syntax = "proto3";', "", f"package {shape.namespace};", ""]
    lines += _proto_message(shape.name, shape.fields, numbers, shape.name, "")
    return "\n".join(lines) + "\n"


def _proto_type(field: FieldShape) -> str:
    return {
        STRING: "string",
        LONG: "int64",
        DOUBLE: "double",
        BOOLEAN: "bool",
        JSON: "string",
        MAP_LONG: "map<string, int64>",
        MAP_STRING: "map<string, string>",
    }.get(field.type, field.type_name)


def _proto_message(name: str, fields: tuple[FieldShape, ...], numbers: dict[str, _Numbers], path: str, indent: str) -> list[str]:
    known = numbers.get(path, _Numbers({}, set()))
    assigned, reserved = known.assign([identifier(f.name) for f in fields])
    lines = [f"{indent}message {name} {{"]
    for field in fields:
        if field.type == RECORD:
            lines += _proto_message(field.type_name, field.fields, numbers, f"{path}.{field.type_name}", indent + "  ")
    if reserved:
        lines.append(f"{indent}  reserved {', '.join(str(n) for n in reserved)};")
    for field in fields:
        label = "optional " if field.nullable or field.type == JSON else ""
        if field.type in (MAP_LONG, MAP_STRING, RECORD):
            label = ""
        comment = "  // JSON text" if field.type == JSON else ""
        target = identifier(field.name)
        lines.append(f"{indent}  {label}{_proto_type(field)} {target} = {assigned[target]};{comment}")
    lines.append(f"{indent}}}")
    return lines


def protobuf_encoder(shape: RecordShape, schema_id: int, text: str) -> Encode:
    from google.protobuf import descriptor_pool, message_factory

    from service.runtime.formats.protobuf import parse_proto

    pool = descriptor_pool.DescriptorPool()
    pool.Add(parse_proto(text, f"{shape.full_name}.proto"))
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(shape.full_name))
    prefix = header(schema_id) + write_indexes((0,))
    fill = _filler(shape.fields)

    def encode(record: dict[str, Any]) -> bytes:
        message = cls()
        fill(message, record)
        return prefix + message.SerializeToString()

    return encode


def _filler(fields: tuple[FieldShape, ...]) -> Callable[[Any, dict[str, Any]], None]:
    plan: list[tuple[str, str, str, Any]] = []
    for field in fields:
        nested = _filler(field.fields) if field.type == RECORD else None
        plan.append((field.name, identifier(field.name), field.type, nested))

    def fill(message: Any, record: dict[str, Any]) -> None:
        for name, target, kind, nested in plan:
            value = record.get(name)
            if value is None:
                continue
            if kind == RECORD:
                nested(getattr(message, target), value)
                getattr(message, target).SetInParent()
            elif kind in (MAP_LONG, MAP_STRING):
                getattr(message, target).update(value)
            elif kind == JSON:
                setattr(message, target, orjson.dumps(value).decode())
            elif kind == DOUBLE:
                setattr(message, target, float(value))
            else:
                setattr(message, target, value)

    return fill


# -- registration -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Registered:
    shape: RecordShape
    serialization: str
    subject: str
    schema_id: int
    text: str


def schema_text(shape: RecordShape, serialization: str, previous: str | None) -> str:
    if serialization == "avro":
        return orjson.dumps(avro_schema(shape)).decode()
    if serialization == "json_schema":
        return orjson.dumps(json_schema(shape)).decode()
    return proto_text(shape, previous)


def _field_at(pointer: str, shape: RecordShape, serialization: str) -> str | None:
    """The dotted field a registry's JSON pointer into the new schema points at (``/fields/3/type/fields/1`` -> ``value.n``)."""
    parts = [p for p in pointer.split("/") if p]
    names = []
    fields = shape.fields
    index = 0
    while index < len(parts):
        part = parts[index]
        if serialization == "avro" and part == "fields" and index + 1 < len(parts) and parts[index + 1].isdigit():
            position = int(parts[index + 1])
            if position >= len(fields):
                break
            field = fields[position]
            names.append(field.name)
            fields = field.fields
            index += 2
            continue
        if serialization == "json_schema" and part == "properties" and index + 1 < len(parts):
            names.append(parts[index + 1])
            found = next((f for f in fields if f.name == parts[index + 1]), None)
            fields = found.fields if found is not None else ()
            index += 2
            continue
        index += 1
    return ".".join(names) or None


def _proto_changed(previous: str | None, text: str) -> list[str]:
    """Fields whose type differs between two versions of a generated ``.proto`` (the registry names only the message)."""
    if not previous:
        return []
    from service.runtime.formats.protobuf import file_descriptor

    def types(source: str) -> dict[str, tuple[int, str, int]]:
        out: dict[str, tuple[int, str, int]] = {}

        def walk(messages: Any, prefix: str) -> None:
            for message in messages:
                for field in message.field:
                    out[f"{prefix}{message.name}.{field.name}"] = (field.type, field.type_name.rsplit(".", 1)[-1], field.label)
                walk(message.nested_type, f"{prefix}{message.name}.")

        for message in file_descriptor(source, "x.proto").message_type:
            walk(message.nested_type, "")  # the record's own fields are named without its message
            for field in message.field:
                out[field.name] = (field.type, field.type_name.rsplit(".", 1)[-1], field.label)
        return out

    before, after = types(previous), types(text)
    return [name for name, kind in after.items() if name in before and before[name] != kind]


def incompatible(
    pipeline: PipelineConfig,
    registered_subject: str,
    shape: RecordShape,
    serialization: str,
    error: Exception,
    previous: str | None = None,
) -> ConfigError:
    """One line naming the field the registry refused, when it says which (its text is the registry's own)."""
    message = getattr(error, "error_message", None) or str(error)
    fields = [f for f in (_field_at(p, shape, serialization) for p in _POINTER.findall(message)) if f]
    if serialization == "protobuf":
        changed = _proto_changed(previous, schema_text(shape, serialization, previous))
        fields = [name.replace(f"{shape.name}_value.", "value.", 1) for name in changed]
    fields = [f for f in fields if not any(other.startswith(f + ".") for other in fields)]  # the deepest only
    what = f"field {', '.join(dict.fromkeys(fields))}" if fields else "a field"
    detail = message.split("list of diff types:")[-1].strip() if "list of diff types:" in message else message
    return ConfigError(
        [
            f"pipelines.{pipeline.name}.output: the {serialization} schema of {shape.origin} changes {what} in a way the "
            f"schema registry refuses for subject {registered_subject!r} (its compatibility rule; registry says: {detail[:300]}); "
            "revert the change, or write to a new topic or subject"
        ]
    )


def register_outputs(config: Config, client: Any) -> list[tuple[PipelineConfig, Registered]]:
    """Register every pipeline's output schemas; raises ``ConfigError`` (incompatible) or ``RegistryUnavailable``."""
    from confluent_kafka.schema_registry import Schema

    out: list[tuple[PipelineConfig, Registered]] = []
    subjects: dict[str, tuple[str, str]] = {}
    for pipeline in config.pipelines:
        serialization = pipeline.output.serialization
        if serialization == "json":
            continue
        schema_type = SCHEMA_TYPES[serialization]
        for shape in output_shapes(pipeline):
            _check_names(shape, shape.fields, f"pipelines.{pipeline.name}.output ({shape.origin})")
            name = subject(shape, pipeline.output.subject_strategy)
            previous_type, previous = _latest(client, name)
            if previous_type is not None and previous_type != schema_type:
                raise ConfigError(
                    [
                        f"pipelines.{pipeline.name}.output: subject {name!r} holds {previous_type} schemas; "
                        f"this pipeline writes {schema_type}"
                    ]
                )
            text = schema_text(shape, serialization, previous if serialization == "protobuf" else None)
            if name in subjects and subjects[name][1] != text:
                raise ConfigError(
                    [
                        f"pipelines.{pipeline.name}.output: {shape.origin} and {subjects[name][0]} write records of different shapes "
                        f'under one subject {name!r}; set output.subject_strategy = "topic_record" or give them different topics'
                    ]
                )
            subjects[name] = (shape.origin, text)
            try:
                schema_id = client.register_schema(name, Schema(text, schema_type))
            except Exception as exc:
                status = getattr(exc, "http_status_code", None)
                if status in (409, 422):
                    raise incompatible(pipeline, name, shape, serialization, exc, previous) from None
                raise RegistryUnavailable(f"schema registry: registering subject {name!r} failed: {describe(exc)}") from None
            log.info("output schema registered", pipeline=pipeline.name, record=shape.origin, subject=name, schema_id=schema_id)
            out.append((pipeline, Registered(shape, serialization, name, schema_id, text)))
    return out


def _latest(client: Any, name: str) -> tuple[str | None, str | None]:
    try:
        latest = client.get_latest_version(name)
    except Exception as exc:
        if getattr(exc, "http_status_code", None) == 404:
            return None, None
        raise RegistryUnavailable(f"schema registry: reading subject {name!r} failed: {describe(exc)}") from None
    return latest.schema.schema_type or "AVRO", latest.schema.schema_str


def encoder(registered: Registered) -> Encode:
    if registered.serialization == "avro":
        return avro_encoder(registered.shape, registered.schema_id)
    if registered.serialization == "json_schema":
        return json_schema_encoder(registered.shape, registered.schema_id)
    return protobuf_encoder(registered.shape, registered.schema_id, registered.text)
