"""Protobuf: message classes built from the registry's schema, records walked into dicts.

No generated code and no protoc: the registry's schema text (either a
base64-encoded ``FileDescriptorProto``, as Python producers register it, or
``.proto`` source, as Java and Go producers do) becomes a descriptor pool per
schema id, and the frame's message indexes pick the message.
``proto-schema-parser`` (pure Python) reads ``.proto`` source.

A message becomes the dict its JSON would be, with the ``.proto`` field
names: 64-bit integers stay integers (``json_format`` would make them
strings), enums become their value's name, ``bytes`` become base64 text (as
in Protobuf's JSON mapping), maps dicts and repeated fields lists. Fields
without presence appear with their value even when it is the default (0,
"", false, empty), as ``json_format``'s ``always_print_fields_with_no_presence``
does; a message field, a proto3 ``optional`` field or a oneof member appears
only when set.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError

from service.core.reasons import BAD_BODY, UNKNOWN_SCHEMA
from service.errors import BadRecord
from service.runtime.formats.framing import HEADER_SIZE, header, read_indexes, schema_id
from service.runtime.formats.registry import Fetched, Registry

Convert = Callable[[Any], Any]

_SCALARS = {
    "double": FieldDescriptor.TYPE_DOUBLE,
    "float": FieldDescriptor.TYPE_FLOAT,
    "int64": FieldDescriptor.TYPE_INT64,
    "uint64": FieldDescriptor.TYPE_UINT64,
    "int32": FieldDescriptor.TYPE_INT32,
    "fixed64": FieldDescriptor.TYPE_FIXED64,
    "fixed32": FieldDescriptor.TYPE_FIXED32,
    "bool": FieldDescriptor.TYPE_BOOL,
    "string": FieldDescriptor.TYPE_STRING,
    "bytes": FieldDescriptor.TYPE_BYTES,
    "uint32": FieldDescriptor.TYPE_UINT32,
    "sfixed32": FieldDescriptor.TYPE_SFIXED32,
    "sfixed64": FieldDescriptor.TYPE_SFIXED64,
    "sint32": FieldDescriptor.TYPE_SINT32,
    "sint64": FieldDescriptor.TYPE_SINT64,
}
_OPTIONAL = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
_REPEATED = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
_REQUIRED = descriptor_pb2.FieldDescriptorProto.LABEL_REQUIRED


# -- schema text -> FileDescriptorProto ----------------------------------------------------------


def file_descriptor(text: str, name: str) -> descriptor_pb2.FileDescriptorProto:
    """A registry schema string as a ``FileDescriptorProto`` called ``name``: base64 descriptor bytes or ``.proto`` source."""
    stripped = text.strip()
    try:
        raw = base64.b64decode(stripped, validate=True)
        fdp = descriptor_pb2.FileDescriptorProto.FromString(raw)
        if fdp.message_type or fdp.enum_type:
            fdp.name = name
            return fdp
    except (binascii.Error, ValueError, DecodeError):
        pass
    return parse_proto(text, name)


def parse_proto(text: str, name: str) -> descriptor_pb2.FileDescriptorProto:
    """``.proto`` source as a ``FileDescriptorProto``: messages, enums, maps, oneofs, imports, proto3 ``optional``.

    Type names are left relative with their kind unset: the pool resolves
    them by protobuf's scoping rules when the file is added.
    """
    from proto_schema_parser import ast
    from proto_schema_parser.parser import Parser

    parsed = Parser().parse(text)
    fdp = descriptor_pb2.FileDescriptorProto(name=name, syntax=parsed.syntax or "proto2")
    for element in parsed.file_elements:
        if isinstance(element, ast.Package):
            fdp.package = element.name
        elif isinstance(element, ast.Import):
            fdp.dependency.append(element.name)
        elif isinstance(element, ast.Message):
            _message(element, fdp.message_type.add(), fdp.syntax == "proto3")
        elif isinstance(element, ast.Enum):
            _enum(element, fdp.enum_type.add())
    return fdp


def _enum(node: Any, out: descriptor_pb2.EnumDescriptorProto) -> None:
    from proto_schema_parser import ast

    out.name = node.name
    for element in node.elements:
        if isinstance(element, ast.EnumValue):
            out.value.add(name=element.name, number=element.number)


def _message(node: Any, out: descriptor_pb2.DescriptorProto, proto3: bool) -> None:
    from proto_schema_parser import ast

    out.name = node.name
    synthetic: list[str] = []
    for element in node.elements:
        if isinstance(element, ast.Field):
            field = out.field.add()
            _field(element, field)
            if element.cardinality == ast.FieldCardinality.OPTIONAL and proto3:
                # proto3 ``optional``: a oneof of its own, after the real ones.
                field.proto3_optional = True
                synthetic.append(element.name)
        elif isinstance(element, ast.MapField):
            entry_name = "".join(part[:1].upper() + part[1:] for part in element.name.split("_")) + "Entry"
            entry = out.nested_type.add(name=entry_name)
            entry.options.map_entry = True
            _field(ast.Field(name="key", number=1, type=element.key_type), entry.field.add())
            _field(ast.Field(name="value", number=2, type=element.value_type), entry.field.add())
            out.field.add(name=element.name, number=element.number, label=_REPEATED, type_name=entry_name)
        elif isinstance(element, ast.OneOf):
            index = len(out.oneof_decl)
            out.oneof_decl.add(name=element.name)
            for member in element.elements:
                if isinstance(member, ast.Field):
                    field = out.field.add()
                    _field(member, field)
                    field.oneof_index = index
        elif isinstance(element, ast.Message):
            _message(element, out.nested_type.add(), proto3)
        elif isinstance(element, ast.Enum):
            _enum(element, out.enum_type.add())
    for field_name in synthetic:
        index = len(out.oneof_decl)
        out.oneof_decl.add(name=f"_{field_name}")
        for field in out.field:
            if field.name == field_name:
                field.oneof_index = index


def _field(node: Any, out: descriptor_pb2.FieldDescriptorProto) -> None:
    from proto_schema_parser import ast

    out.name = node.name
    out.number = node.number
    cardinality = node.cardinality
    out.label = (
        _REPEATED
        if cardinality == ast.FieldCardinality.REPEATED
        else _REQUIRED
        if cardinality == ast.FieldCardinality.REQUIRED
        else _OPTIONAL
    )
    scalar = _SCALARS.get(node.type)
    if scalar is not None:
        out.type = scalar
    else:
        out.type_name = node.type  # relative; the pool resolves it (message or enum)


# -- pools and classes ----------------------------------------------------------------------------


def pool_for(fetched: Fetched) -> tuple[descriptor_pool.DescriptorPool, descriptor_pb2.FileDescriptorProto]:
    """A pool holding the schema, the schemas it imports, and protobuf's well-known types."""
    from google.protobuf import (
        any_pb2,
        api_pb2,
        duration_pb2,
        empty_pb2,
        field_mask_pb2,
        source_context_pb2,
        struct_pb2,
        timestamp_pb2,
        type_pb2,
        wrappers_pb2,
    )

    pool = descriptor_pool.DescriptorPool()
    known = set()
    for module in (
        any_pb2,
        source_context_pb2,
        type_pb2,
        api_pb2,
        duration_pb2,
        empty_pb2,
        field_mask_pb2,
        struct_pb2,
        timestamp_pb2,
        wrappers_pb2,
    ):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        if proto.name not in known:
            pool.Add(proto)
            known.add(proto.name)
    for name, text in fetched.references:
        if name not in known:
            pool.Add(file_descriptor(text, name))
            known.add(name)
    fdp = file_descriptor(fetched.text, f"schema-{fetched.id}.proto")
    pool.Add(fdp)
    return pool, fdp


def message_name(fdp: descriptor_pb2.FileDescriptorProto, indexes: tuple[int, ...]) -> str:
    """The full name of the message the indexes point at (``[0]``: the file's first message)."""
    messages = fdp.message_type
    names = []
    for index in indexes:
        if index >= len(messages):
            raise BadRecord(f"protobuf message index {list(indexes)} is not in schema {fdp.name}", BAD_BODY)
        names.append(messages[index].name)
        messages = messages[index].nested_type
    return ".".join(([fdp.package] if fdp.package else []) + names)


def to_dict_function(descriptor: Descriptor) -> Convert:
    """A function turning a message of ``descriptor`` into a dict (see the module's docstring)."""
    cache: dict[str, Convert] = {}
    return _message_converter(descriptor, cache)


def _message_converter(descriptor: Descriptor, cache: dict[str, Convert]) -> Convert:
    found = cache.get(descriptor.full_name)
    if found is not None:
        return found
    specs: list[tuple[str, bool, Convert | None]] = []

    def convert(message: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, presence, conv in specs:
            if presence and not message.HasField(name):
                continue
            value = getattr(message, name)
            out[name] = conv(value) if conv is not None else value
        return out

    cache[descriptor.full_name] = convert  # before the fields: a message may contain itself
    for field in descriptor.fields:
        specs.append((field.name, field.has_presence and not field.is_repeated, _field_converter(field, cache)))
    return convert


def _value_converter(field: FieldDescriptor, cache: dict[str, Convert]) -> Convert | None:
    if field.type == FieldDescriptor.TYPE_MESSAGE or field.type == FieldDescriptor.TYPE_GROUP:
        return _message_converter(field.message_type, cache)
    if field.type == FieldDescriptor.TYPE_ENUM:
        names = {value.number: value.name for value in field.enum_type.values}
        return lambda number: names.get(number, number)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return lambda data: base64.b64encode(data).decode()
    return None


def _field_converter(field: FieldDescriptor, cache: dict[str, Convert]) -> Convert | None:
    message = field.message_type
    if field.is_repeated and message is not None and message.GetOptions().map_entry:
        value_conv = _value_converter(message.fields_by_name["value"], cache)
        if value_conv is None:
            return dict
        return lambda mapping: {k: value_conv(v) for k, v in mapping.items()}
    item = _value_converter(field, cache)
    if field.is_repeated:
        return list if item is None else (lambda values: [item(v) for v in values])
    return item


def decoder(registry: Registry, records_only: bool = True, what: str = "value") -> Callable[[bytes | None], Any]:
    """Decode framed Protobuf values into dicts (a message is always a record)."""
    #: header + message index bytes -> (message class, its converter)
    classes: dict[bytes, tuple[Any, Convert]] = {}
    files: dict[int, tuple[Any, descriptor_pb2.FileDescriptorProto]] = {}

    def evicted(sid: int) -> None:
        """The registry dropped the schema: so do these, which stay as bounded as its cache."""
        files.pop(sid, None)
        prefix = header(sid)
        for framing in [key for key in classes if key.startswith(prefix)]:
            del classes[framing]

    registry.on_evict(evicted)

    def resolve(raw: bytes | None) -> tuple[tuple[Any, Convert], int]:
        sid = schema_id(raw, what)
        assert raw is not None
        indexes, start = read_indexes(raw, HEADER_SIZE)
        cached = classes.get(raw[:start])
        if cached is not None:
            return cached, start
        built = files.get(sid)
        if built is None:
            fetched = registry.schema(sid)
            if fetched.schema_type != "PROTOBUF":
                raise BadRecord(
                    f"schema id {sid} is a {fetched.schema_type} schema; this topic's {what}s are read as Protobuf", UNKNOWN_SCHEMA
                )
            try:
                built = files[sid] = pool_for(fetched)
            except Exception as exc:
                raise BadRecord(f"schema id {sid} is not a Protobuf schema this service can read: {exc}", UNKNOWN_SCHEMA) from None
        pool, fdp = built
        descriptor = pool.FindMessageTypeByName(message_name(fdp, indexes))
        entry = (message_factory.GetMessageClass(descriptor), to_dict_function(descriptor))
        classes[raw[:start]] = entry
        return entry, start

    def decode(raw: bytes | None) -> Any:
        if raw is not None and len(raw) > HEADER_SIZE and raw[HEADER_SIZE] == 0:
            start = HEADER_SIZE + 1  # message indexes [0], the common case: one byte
            entry = classes.get(raw[:start])
            if entry is None:
                entry, start = resolve(raw)
        else:
            entry, start = resolve(raw)
        assert raw is not None
        cls, convert = entry
        message = cls()
        try:
            message.ParseFromString(raw[start:])
        except (DecodeError, ValueError, RuntimeError) as exc:
            raise BadRecord(f"{what} does not decode with Protobuf schema {int.from_bytes(raw[1:5], 'big')}: {exc}", BAD_BODY) from None
        return convert(message)

    return decode
