"""Confluent's wire format read by the tests' own code, independent of ``service.runtime.formats``.

The service's encoders are what the tests check, so their output is read
here without the service's decoders: the header (magic byte 0, the schema's
4-byte id) and Protobuf's message indexes by the few lines below; ``.proto``
text by protoc (the ``grpcio-tools`` package), not by the service's parser,
compiled into a descriptor set from which the ``protobuf`` package's own pool
and message factory build the message class; and JSON Schema bodies by the
``jsonschema`` package, against the schema they name.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import orjson


@dataclass(frozen=True)
class Frame:
    schema_id: int
    #: What follows the header (for Protobuf, the message indexes and then the message).
    body: bytes


def split_header(value: bytes) -> Frame:
    """The schema id and the body of a framed record; an assertion error when it is not framed."""
    assert len(value) >= 5 and value[0] == 0, f"not Confluent's wire format (magic byte 0, 4-byte schema id): {value[:8]!r}"
    return Frame(int.from_bytes(value[1:5], "big"), value[5:])


def _varint(data: bytes, position: int) -> tuple[int, int]:
    """An unsigned varint at ``position``, and the position after it."""
    value = shift = 0
    while True:
        assert position < len(data), f"varint cut short in {data[:16]!r}"
        byte = data[position]
        value |= (byte & 0x7F) << shift
        position += 1
        if byte < 0x80:
            return value, position
        shift += 7


def _signed(value: int) -> int:
    """Zigzag decoding: 0, 1, 2, 3, ... -> 0, -1, 1, -2, ..."""
    return (value >> 1) if value % 2 == 0 else -((value + 1) >> 1)


def split_indexes(body: bytes) -> tuple[list[int], bytes]:
    """Protobuf's message indexes (zigzag varints, their count first; a count of 0 stands for ``[0]``) and the message after them."""
    count, position = _varint(body, 0)
    count = _signed(count)
    if count == 0:
        return [0], body[position:]
    assert count > 0, f"negative message index count {count}"
    indexes = []
    for _ in range(count):
        index, position = _varint(body, position)
        indexes.append(_signed(index))
    return indexes, body[position:]


def compile_proto(text: str) -> Any:
    """``.proto`` source compiled by protoc (grpcio-tools) into a ``FileDescriptorSet``, its imports first and the file last."""
    from google.protobuf import descriptor_pb2

    includes = resources.files("grpc_tools") / "_proto"  # google/protobuf/*.proto, as `python -m grpc_tools.protoc` adds them
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "schema.proto").write_text(text)
        out = Path(tmp) / "schema.desc"
        done = subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"-I{tmp}", f"-I{includes}", f"--descriptor_set_out={out}", "--include_imports", "schema.proto"],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, f"protoc refused the schema:\n{done.stderr}\n{text}"
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def message_class(text: str, indexes: Sequence[int]) -> Any:
    """The message class of the message ``indexes`` names in the ``.proto`` text: top-level message, then nested ones."""
    from google.protobuf import descriptor_pool, message_factory

    files = compile_proto(text).file
    pool = descriptor_pool.DescriptorPool()
    for file in files:
        pool.Add(file)
    schema = files[-1]
    assert schema.name == "schema.proto", [f.name for f in files]
    message = schema.message_type[indexes[0]]
    name = f"{schema.package}.{message.name}" if schema.package else message.name
    for index in indexes[1:]:
        message = message.nested_type[index]
        name = f"{name}.{message.name}"
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))


def message_dict(message: Any) -> dict[str, Any]:
    """A message as a dict, by its descriptor: 64-bit integers stay numbers; fields with presence only when set.

    Enough for the service's output messages (scalars, maps, nested messages,
    proto3 ``optional``); enums stay numbers, bytes stay bytes. A field the
    schema does not know (kept by protobuf as an unknown field) fails it.
    """
    from google.protobuf.unknown_fields import UnknownFieldSet

    assert len(UnknownFieldSet(message)) == 0, f"fields {message.DESCRIPTOR.full_name} does not have: {[f.field_number for f in UnknownFieldSet(message)]}"
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        if field.has_presence and not message.HasField(field.name):
            continue
        value = getattr(message, field.name)
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            nested = entry.fields_by_name["value"].message_type is not None
            out[field.name] = {k: message_dict(v) if nested else v for k, v in value.items()}
        elif field.is_repeated:
            out[field.name] = [message_dict(v) if entry is not None else v for v in value]
        elif entry is not None:
            out[field.name] = message_dict(value)
        else:
            out[field.name] = value
    return out


def json_schema_reader(schema_text: str) -> Callable[[bytes], Any]:
    """Parses a JSON Schema record's body and validates it with ``jsonschema`` against the schema text (itself checked first)."""
    import jsonschema

    schema = orjson.loads(schema_text)
    validator = jsonschema.validators.validator_for(schema)
    validator.check_schema(schema)
    validate = validator(schema).validate

    def read(body: bytes) -> Any:
        record = orjson.loads(body)
        validate(record)
        return record

    return read
