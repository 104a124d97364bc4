"""Registering the output schemas at start-up, and choosing each record's encoder.

The schema of every kind of record a pipeline writes (``service.core.shapes``)
is made from the configuration (``avro_output``, ``json_schema_output``,
``protobuf_output``) and registered before anything is processed, under the
subject ``output.subject_strategy`` names. A configuration that adds an
aggregate makes a schema with a new field, which the registry accepts as a
new version. A change it refuses (an aggregate whose type changed) stops
start-up with one line naming the field, before a record is written: nothing
is ever written with a schema the registry has not accepted.

Imported only when some output is serialized with a registry: the format
libraries come with the ``registry`` extra.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from confluent_kafka.schema_registry import Schema

from service.config import Config, PipelineConfig
from service.core.shapes import RECORD, FieldShape, RecordShape, identifier, output_shapes
from service.errors import ConfigError, RegistryUnavailable
from service.runtime.formats.avro_output import avro_encoder, avro_schema
from service.runtime.formats.framing import Encode
from service.runtime.formats.json_schema_output import json_schema, json_schema_encoder
from service.runtime.formats.protobuf_output import changed_fields, proto_text, protobuf_encoder
from service.runtime.formats.registry import describe

log = structlog.get_logger("sessionizer.schema_registry")

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
        changed = changed_fields(previous, schema_text(shape, serialization, previous))
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
