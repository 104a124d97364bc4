"""Protobuf output: ``.proto`` text made from a record's shape, numbered compatibly, and its encoder.

A new version keeps the field numbers of the fields the previous version had,
gives new fields new numbers, and reserves those of removed ones, so the
registry accepts it. Field names are the rendered dict's keys made identifiers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from google.protobuf import descriptor_pool, message_factory

from service.core.shapes import BOOLEAN, DOUBLE, JSON, LONG, MAP_LONG, MAP_STRING, RECORD, STRING, FieldShape, RecordShape, identifier
from service.runtime.formats.framing import Encode, header, write_indexes
from service.runtime.formats.protobuf import file_descriptor, parse_proto


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
    pool = descriptor_pool.DescriptorPool()
    pool.Add(parse_proto(text, f"{shape.full_name}.proto"))
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(shape.full_name))
    prefix = header(schema_id) + write_indexes((0,))
    fill = _filler(shape.fields)

    def encode(record: dict[str, Any]) -> bytes:
        message = cls()
        fill(message, record)
        body: bytes = message.SerializeToString()
        return prefix + body

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


def changed_fields(previous: str | None, text: str) -> list[str]:
    """Fields whose type differs between two versions of a generated ``.proto`` (the registry names only the message)."""
    if not previous:
        return []

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
