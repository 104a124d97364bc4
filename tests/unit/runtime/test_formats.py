"""Decoders, encoders and output schemas of Avro, Protobuf and JSON Schema, against a fake registry.

No registry and no broker: ``FakeRegistryClient`` answers schema lookups from
a dict, and fails them the way the real client does (a 404 error, or a
transport error), so every path a record can take is checked here.
"""

from __future__ import annotations

import base64
import io
import json
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

fastavro = pytest.importorskip("fastavro", reason="the registry extra is not installed: pip install -e '.[registry]'")
pytest.importorskip("google.protobuf", reason="the registry extra is not installed: pip install -e '.[registry]'")

from service.core.extract import BadRecord  # noqa: E402
from service.core.shapes import output_shapes  # noqa: E402
from service.errors import ConfigError, RegistryUnavailable  # noqa: E402
from service.runtime.formats import Formats, avro, json_schema, key_decoder, protobuf  # noqa: E402
from service.runtime.formats.avro_output import avro_encoder, avro_schema  # noqa: E402
from service.runtime.formats.framing import header, read_indexes, write_indexes  # noqa: E402
from service.runtime.formats.gate import SchemaGate  # noqa: E402
from service.runtime.formats.json_schema_output import json_schema_encoder  # noqa: E402
from service.runtime.formats.protobuf_output import proto_text, protobuf_encoder  # noqa: E402
from service.runtime.formats.registration import register_outputs, schema_text  # noqa: E402
from service.runtime.formats.registry import Registry  # noqa: E402
from service.runtime.stats import LoopStats  # noqa: E402
from tests import wire  # noqa: E402
from tests.fakes import FakeMessage  # noqa: E402
from tests.helpers import config_from_toml  # noqa: E402
from tests.unit.runtime.test_task_manager import PARTITIONS, PIPELINE  # noqa: E402, F401  (what ``instance`` runs)

EVENT = {
    "type": "record",
    "name": "Event",
    "namespace": "t",
    "fields": [
        {"name": "user_id", "type": "string"},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "tag", "type": ["null", "bytes"], "default": None},
        {"name": "details", "type": {"type": "record", "name": "D", "fields": [{"name": "page", "type": "string"}]}},
    ],
}


class RegistryError(Exception):
    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message or f"HTTP {status}")
        self.http_status_code = status
        self.error_message = message


class ConnectError(Exception):
    """What httpx raises when the registry does not answer."""


@dataclass
class FakeSchema:
    schema_str: str
    schema_type: str = "AVRO"
    references: list[Any] = field(default_factory=list)


@dataclass
class FakeRegistered:
    schema: FakeSchema
    schema_id: int
    version: int


class FakeRegistryClient:
    def __init__(self) -> None:
        self.schemas: dict[int, FakeSchema] = {}
        self.subjects: dict[str, list[int]] = {}
        self.down = False
        self.lookups = 0
        #: subject -> the message a 409 says, for the next registration
        self.refuse: dict[str, str] = {}

    def add(self, text: Any, schema_type: str = "AVRO") -> int:
        schema_id = len(self.schemas) + 1
        self.schemas[schema_id] = FakeSchema(text if isinstance(text, str) else json.dumps(text), schema_type)
        return schema_id

    def get_schema(self, schema_id: int) -> FakeSchema:
        self.lookups += 1
        if self.down:
            raise ConnectError("connection refused")
        if schema_id not in self.schemas:
            raise RegistryError(404, f"Schema {schema_id} not found.")
        return self.schemas[schema_id]

    def register_schema(self, subject: str, schema: Any) -> int:
        if self.down:
            raise ConnectError("connection refused")
        if subject in self.refuse:
            raise RegistryError(409, self.refuse.pop(subject))
        for existing in self.subjects.get(subject, []):
            if self.schemas[existing].schema_str == schema.schema_str:
                return existing
        schema_id = self.add(schema.schema_str, schema.schema_type)
        self.subjects.setdefault(subject, []).append(schema_id)
        return schema_id

    def get_latest_version(self, subject: str) -> FakeRegistered:
        if subject not in self.subjects:
            raise RegistryError(404, "Subject not found.")
        versions = self.subjects[subject]
        return FakeRegistered(self.schemas[versions[-1]], versions[-1], len(versions))


@pytest.fixture
def client() -> FakeRegistryClient:
    return FakeRegistryClient()


def avro_frame(schema_id: int, schema: Any, record: Any) -> bytes:
    out = io.BytesIO()
    out.write(header(schema_id))
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


def reason(call) -> str:
    with pytest.raises(BadRecord) as info:
        call()
    return info.value.code


# -- framing ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("indexes", [(0,), (1,), (0, 2), (3, 1, 4)])
def test_message_indexes_round_trip(indexes):
    data = write_indexes(indexes) + b"body"
    assert read_indexes(data, 0) == (indexes, len(data) - 4)


def test_message_indexes_are_confluents():
    assert write_indexes((0,)) == b"\x00"
    assert write_indexes((1,)) == b"\x02\x02"  # zigzag: a count of 1, then index 1
    confluent = pytest.importorskip("confluent_kafka.schema_registry.common.serde")
    for indexes in [(1,), (0, 2), (3, 1, 4)]:
        schema_id = confluent.SchemaId("PROTOBUF", 7, message_indexes=list(indexes))
        framed = schema_id.id_to_bytes()
        assert framed == header(7) + write_indexes(indexes)


@pytest.mark.parametrize("indexes", [(0,), (1,), (0, 2), (3, 1, 4), (70, 200)])
def test_the_tests_own_frame_reader_agrees_with_confluents_serde(indexes):
    """tests/wire.py, which reads the service's output in the tests, reads what confluent-kafka frames."""
    confluent = pytest.importorskip("confluent_kafka.schema_registry.common.serde")
    framed = confluent.SchemaId("PROTOBUF", 300, message_indexes=list(indexes)).id_to_bytes() + b"body"
    frame = wire.split_header(framed)
    assert frame.schema_id == 300
    assert wire.split_indexes(frame.body) == (list(indexes), b"body")


# -- Avro in -------------------------------------------------------------------------------------------


def test_avro_records_decode_as_json_events_would(client):
    schema_id = client.add(EVENT)
    decode = avro.decoder(Registry(client))
    frame = avro_frame(schema_id, EVENT, {"user_id": "u1", "ts": 1_700_000_000_000, "tag": b"\x00\xff", "details": {"page": "/a"}})
    # Logical types stay their underlying type (epoch ms), bytes become text (Avro's JSON encoding), nested records dicts.
    assert decode(frame) == {"user_id": "u1", "ts": 1_700_000_000_000, "tag": "\x00\xff", "details": {"page": "/a"}}
    assert decode(frame) == decode(frame)
    assert client.lookups == 1, "the schema is fetched once per id"


def test_avro_bad_records_are_told_apart(client):
    schema_id = client.add(EVENT)
    decode = avro.decoder(Registry(client))
    good = avro_frame(schema_id, EVENT, {"user_id": "u1", "ts": 1, "details": {"page": "/a"}})
    assert reason(lambda: decode(b'{"user_id": "u1"}')) == "bad_framing"
    assert reason(lambda: decode(b"\x00\x00")) == "bad_framing"
    assert reason(lambda: decode(None)) == "bad_framing"
    assert reason(lambda: decode(header(999) + good[5:])) == "unknown_schema"
    assert reason(lambda: decode(good[:-2])) == "bad_body"
    assert reason(lambda: decode(good + b"\x01")) == "bad_body"
    assert reason(lambda: decode(header(schema_id) + b"\x02\xff\xff")) == "bad_body"
    other = client.add('syntax = "proto3"; message M { string a = 1; }', "PROTOBUF")
    assert reason(lambda: decode(header(other) + b"\x00")) == "unknown_schema"
    primitive = client.add('"string"')
    assert reason(lambda: decode(avro_frame(primitive, "string", "x"))) == "not_an_object"


def test_a_registry_that_does_not_answer_is_not_a_bad_record(client):
    schema_id = client.add(EVENT)
    decode = avro.decoder(Registry(client))
    client.down = True
    frame = avro_frame(schema_id, EVENT, {"user_id": "u1", "ts": 1, "details": {"page": "/a"}})
    with pytest.raises(RegistryUnavailable, match="connection refused"):
        decode(frame)
    client.down = False
    assert decode(frame)["user_id"] == "u1"


def test_avro_keys_decode_to_their_text(client):
    string_id = client.add('"string"')
    long_id = client.add('"long"')
    decode = key_decoder(avro.decoder(Registry(client), records_only=False, what="key"))
    assert decode(avro_frame(string_id, "string", "user-1")) == b"user-1"
    assert decode(avro_frame(long_id, "long", 42)) == b"42"
    assert decode(None) is None
    assert reason(lambda: decode(b"user-1")) == "bad_framing"


# -- Protobuf in --------------------------------------------------------------------------------------------

PROTO = """syntax = "proto3";
package shop;
import "google/protobuf/timestamp.proto";
message Other { string x = 1; }
message Event {
  string user_id = 1;
  int64 ts = 2;
  optional string note = 3;
  map<string, int64> counts = 4;
  repeated Item items = 5;
  Kind kind = 6;
  oneof payment { string card = 7; int32 points = 8; }
  bytes blob = 9;
  google.protobuf.Timestamp at = 10;
  message Item { string sku = 1; uint64 qty = 2; }
  enum Kind { UNKNOWN = 0; WEB = 1; }
}
"""


def proto_class(text: str, name: str):
    from google.protobuf import message_factory

    fetched = protobuf.Fetched(0, "PROTOBUF", text)
    pool, _ = protobuf.pool_for(fetched)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(name)), pool


def test_protobuf_records_from_proto_text_decode_keeping_int64s(client):
    schema_id = client.add(PROTO, "PROTOBUF")
    Event, _ = proto_class(PROTO, "shop.Event")
    message = Event(user_id="u1", ts=1_700_000_000_000_123, counts={"a": 2}, kind=1, card="visa", blob=b"\x01\x02")
    message.items.add(sku="s1", qty=2**63)
    message.at.seconds = 5
    decode = protobuf.decoder(Registry(client))
    value = decode(header(schema_id) + write_indexes((1,)) + message.SerializeToString())
    assert value == {
        "user_id": "u1",
        "ts": 1_700_000_000_000_123,
        "counts": {"a": 2},
        "items": [{"sku": "s1", "qty": 2**63}],
        "kind": "WEB",
        "card": "visa",
        "blob": base64.b64encode(b"\x01\x02").decode(),
        "at": {"seconds": 5, "nanos": 0},
    }, "proto3 optional and unset oneof members are absent, fields without presence present"
    other = decode(header(schema_id) + write_indexes((0,)) + b"")
    assert other == {"x": ""}


def test_protobuf_from_a_base64_descriptor(client):
    from google.protobuf import descriptor_pb2

    Event, pool = proto_class(PROTO, "shop.Event")
    fdp = descriptor_pb2.FileDescriptorProto()
    pool.FindFileByName("schema-0.proto").CopyToProto(fdp)
    schema_id = client.add(base64.b64encode(fdp.SerializeToString()).decode(), "PROTOBUF")
    decode = protobuf.decoder(Registry(client))
    assert decode(header(schema_id) + b"\x02\x02" + Event(user_id="u2", ts=3).SerializeToString())["user_id"] == "u2"
    assert reason(lambda: decode(header(schema_id) + b"\x02\x02" + b"\xff\xff\xff")) == "bad_body"
    assert reason(lambda: decode(header(schema_id) + b"\x02\x0a")) == "bad_body"  # message index 5 does not exist
    assert reason(lambda: decode(header(schema_id) + b"\x02")) == "bad_framing"  # indexes cut short


# -- JSON Schema in --------------------------------------------------------------------------------------------


def test_json_schema_bodies_are_parsed_and_validated_only_when_asked(client):
    schema_id = client.add({"type": "object", "properties": {"ts": {"type": "integer"}}, "required": ["ts"]}, "JSON")
    plain = json_schema.decoder(None)
    frame = header(schema_id) + b'{"ts": "soon", "user_id": "u1"}'
    assert plain(frame) == {"ts": "soon", "user_id": "u1"}
    validating = json_schema.decoder(Registry(client), validate=True)
    assert reason(lambda: validating(frame)) == "bad_body"
    assert validating(header(schema_id) + b'{"ts": 5}') == {"ts": 5}
    assert reason(lambda: plain(header(schema_id) + b"[1]")) == "not_an_object"
    assert reason(lambda: plain(header(schema_id) + b"{nope")) == "bad_body"
    assert reason(lambda: plain(b'{"ts": 5}')) == "bad_framing"


# -- the gate -------------------------------------------------------------------------------------------------------


class InlineExecutor:
    """Runs a submitted fetch at once; its future is done when ``submit`` returns."""

    def __init__(self) -> None:
        self.submitted = 0

    def submit(self, fn, *args):
        self.submitted += 1
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:
            future.set_exception(exc)
        return future

    def shutdown(self, **kwargs) -> None:
        pass


def gate_for(client, now):
    stats = LoopStats()
    executor = InlineExecutor()
    gate = SchemaGate(Registry(client), {"web": (True, False)}, stats, backoff=1.0, backoff_max=4.0, clock=lambda: now[0], executor=executor)
    return gate, stats, executor


def messages(*values: bytes) -> list[FakeMessage]:
    return [FakeMessage("web", 0, offset, value=value) for offset, value in enumerate(values)]


def test_the_gate_stops_a_partition_at_its_first_unknown_schema_and_resumes_it(client):
    known = client.add(EVENT)
    new = client.add(EVENT)
    now = [0.0]
    gate, stats, executor = gate_for(client, now)
    body = avro_frame(known, EVENT, {"user_id": "u", "ts": 1, "details": {"page": "/"}})[5:]
    group = messages(header(known) + body, b"{not framed}", header(new) + body, header(known) + body)
    assert gate.admit(("web", 0), group) == 0, "the first id is not fetched yet"
    assert stats.schema_registry_waiting == 1
    assert gate.poll() == [("web", 0)]
    assert gate.admit(("web", 0), group) == 2, "unframed records pass (they are dead-lettered); the new id stops it"
    assert gate.poll() == [("web", 0)]
    assert gate.admit(("web", 0), group) == 4
    assert gate.admit(("json", 0), messages(b"{}")) == 1, "topics without schemas pass"
    assert stats.schema_registry_waiting == 0 and stats.schema_registry_errors == 0


def test_the_gate_retries_a_registry_that_is_down_with_a_backoff_and_never_dead_letters(client):
    schema_id = client.add(EVENT)
    now = [0.0]
    gate, stats, executor = gate_for(client, now)
    client.down = True
    group = messages(header(schema_id) + b"\x00")
    assert gate.admit(("web", 0), group) == 0
    assert gate.poll() == []
    assert stats.schema_registry_errors == 1
    assert stats.schema_registry_waiting == 1
    assert "connection refused" in (stats.schema_registry_problem or "")
    assert gate.poll() == [] and executor.submitted == 1, "not retried before the backoff"
    now[0] = 1.1
    assert gate.poll() == [] and executor.submitted == 2, "retried after the backoff"
    assert gate.poll() == [] and stats.schema_registry_errors == 2, "its failure taken in at the next poll"
    client.down = False
    now[0] = 10.0
    assert gate.poll() == [], "retried now; its answer is taken in at the next poll"
    assert gate.poll() == [("web", 0)]
    assert stats.schema_registry_waiting == 0 and stats.schema_registry_problem is None
    assert gate.admit(("web", 0), group) == 1


def test_an_id_the_registry_does_not_know_resumes_the_partition_for_its_dead_letter(client):
    now = [0.0]
    gate, stats, _ = gate_for(client, now)
    group = messages(header(77) + b"\x00")
    assert gate.admit(("web", 0), group) == 0
    assert gate.poll() == [("web", 0)]
    assert gate.admit(("web", 0), group) == 1
    assert reason(lambda: avro.decoder(gate.registry)(group[0].value())) == "unknown_schema"
    assert stats.schema_registry_errors == 0
    assert client.lookups == 1, "the unknown id is remembered"


# -- output -----------------------------------------------------------------------------------------------------------

OUTPUT_CONFIG = """
[schema_registry]
url = "http://registry"
[pipelines.p]
sources = ["in"]
key = ["user.id"]
[pipelines.p.output]
topic = "out"
serialization = "SER"
FORMAT
[pipelines.p.window]
type = "session"
gap = "1m"
[pipelines.p.aggregates]
n = { type = "count" }
total = { type = "sum", field = "amount" }
low = { type = "min", field = "amount" }
mean = { type = "avg", field = "amount" }
first_page = { type = "first", field = "page" }
users = { type = "count_distinct", field = "page" }
by_type = { type = "count_by", field = "type" }
paid = { type = "any", field = "type", equals = "pay" }
top = { type = "custom", class = "examples.aggregates:TopValues", params = { field = "page" } }
[pipelines.p.rules.buy]
type = "sequence"
first = { field = "type", equals = "cart" }
then = { field = "type", equals = "pay" }
within = "5m"
topic = "buys"
[pipelines.p.rules.left]
type = "absence"
first = { field = "type", equals = "cart" }
then = { field = "type", equals = "pay" }
topic = "abandoned"
"""
VALUES = {
    "session_start_ms": 1,
    "session_end_ms": 9,
    "event_count": 3,
    "duration_ms": 8,
    "n": 3,
    "total": 12,
    "low": None,
    "mean": 4.5,
    "first_page": {"path": "/a"},
    "users": 2,
    "by_type": {"cart": 2, "pay": 1},
    "paid": True,
    "top": [["/a", 2]],
}


def output_config(serialization: str, fmt: str = ""):
    return config_from_toml(OUTPUT_CONFIG.replace("SER", serialization).replace("FORMAT", fmt))


def test_shapes_follow_the_aggregates_and_the_envelope():
    shapes = output_shapes(output_config("avro").pipelines[0])
    assert [(s.topic, s.name, s.origin) for s in shapes] == [("out", "session", "output"), ("buys", "buy", "rules.buy"), ("abandoned", "left", "rules.left")]
    value = {f.name: (f.type, f.nullable) for f in shapes[0].fields[3].fields}
    assert value == {
        "session_start_ms": ("long", False),
        "session_end_ms": ("long", False),
        "event_count": ("long", False),
        "duration_ms": ("long", False),
        "n": ("long", False),
        "total": ("double", False),
        "low": ("double", True),
        "mean": ("double", True),
        "first_page": ("json", True),
        "users": ("long", False),
        "by_type": ("map_long", False),
        "paid": ("boolean", False),
        "top": ("json", True),
    }
    assert [f.name for f in shapes[0].fields] == ["event", "user.id", "timestamp", "value", "user_attributes"]
    flat = output_shapes(output_config("avro", 'format = "flat"').pipelines[0])[0]
    assert [f.name for f in flat.fields][:4] == ["event", "user.id", "timestamp", "session_start_ms"]
    session = {f.name: f for f in shapes[2].fields[3].fields}["session"]
    assert [f.name for f in session.fields] == list(VALUES)


def rendered(envelope_values: dict) -> dict:
    return {"event": "session", "user.id": "u1", "timestamp": "2023-11-14 22:13:20", "value": envelope_values, "user_attributes": {}}


def test_avro_output_round_trips_with_its_schema():
    shape = output_shapes(output_config("avro").pipelines[0])[0]
    schema = avro_schema(shape)
    assert schema["name"] == "session" and schema["namespace"] == "sessionizer.p"
    assert [f["name"] for f in schema["fields"]][:2] == ["event", "user_id"], "names become identifiers"
    assert all("default" in f for f in schema["fields"]), "every field has a default: adding one is compatible"
    encoded = avro_encoder(shape, 42)(rendered(VALUES))
    assert encoded[:5] == header(42)
    decoded = fastavro.schemaless_reader(io.BytesIO(encoded[5:]), fastavro.parse_schema(schema), None)
    assert decoded["user_id"] == "u1"
    value = decoded["value"]
    assert value["total"] == 12.0 and value["low"] is None and value["mean"] == 4.5
    assert orjson.loads(value["first_page"]) == {"path": "/a"} and orjson.loads(value["top"]) == [["/a", 2]]
    assert value["by_type"] == {"cart": 2, "pay": 1} and value["paid"] is True


def test_json_schema_output_is_the_json_behind_a_header_and_valid_against_its_schema():
    shape = output_shapes(output_config("json_schema").pipelines[0])[0]
    record = rendered(VALUES)
    encoded = json_schema_encoder(shape, 7)(record)
    assert encoded == header(7) + orjson.dumps(record)
    # Read back by the tests' own means (tests/wire.py): jsonschema validates it against the text registered for it.
    frame = wire.split_header(encoded)
    assert frame.schema_id == 7
    registered = schema_text(shape, "json_schema", None)
    read = wire.json_schema_reader(registered)
    assert read(frame.body) == record
    import jsonschema

    with pytest.raises(jsonschema.ValidationError, match="'3' is not of type 'integer'"):
        read(orjson.dumps({**record, "value": {**VALUES, "n": "3"}}))


def test_protobuf_output_round_trips_and_keeps_field_numbers_across_versions(client):
    config = output_config("protobuf")
    shape = output_shapes(config.pipelines[0])[0]
    text = proto_text(shape)
    schema_id = client.add(text, "PROTOBUF")
    encoded = protobuf_encoder(shape, schema_id, text)(rendered(VALUES))
    # Read back by the tests' own means (tests/wire.py), not the service's decoder: the header and the
    # message indexes split by test code, the .proto text compiled by protoc, the message parsed by protobuf.
    frame = wire.split_header(encoded)
    assert frame.schema_id == schema_id
    indexes, message = wire.split_indexes(frame.body)
    assert indexes == [0]
    cls = wire.message_class(text, indexes)
    assert cls.DESCRIPTOR.full_name == shape.full_name == "sessionizer.p.session"
    decoded = wire.message_dict(cls.FromString(message))
    # The record field for field: names made identifiers, `low` (None) unset, free-form values as their JSON text.
    value = {k: v for k, v in VALUES.items() if k != "low"} | {"total": 12.0, "first_page": '{"path":"/a"}', "top": '[["/a",2]]'}
    assert decoded == {"event": "session", "user_id": "u1", "timestamp": "2023-11-14 22:13:20", "value": value, "user_attributes": {}}
    assert isinstance(decoded["value"]["total"], float) and isinstance(decoded["value"]["n"], int)
    # A later config drops `low` and adds `extra`: old numbers kept, `low`'s reserved, `extra` numbered after all.
    changed = config_from_toml(
        OUTPUT_CONFIG.replace("SER", "protobuf").replace("FORMAT", "").replace(
            'low = { type = "min", field = "amount" }', 'extra = { type = "max", field = "amount" }'
        )
    )
    later = proto_text(output_shapes(changed.pipelines[0])[0], previous=text)
    assert "int64 n = 5;" in text and "int64 n = 5;" in later
    assert "reserved 7;" in later and "optional double extra = 14;" in later
    later_value = wire.message_class(later, [0]).DESCRIPTOR.fields_by_name["value"].message_type
    assert later_value.fields_by_name["n"].number == 5 and later_value.fields_by_name["extra"].number == 14, "protoc reads it so too"


def test_output_schemas_are_registered_and_an_incompatible_change_names_its_field(client):
    config = output_config("avro")
    registered = register_outputs(config, client)
    assert [(r.subject, r.shape.origin) for _, r in registered] == [
        ("out-value", "output"),
        ("buys-value", "rules.buy"),
        ("abandoned-value", "rules.left"),
    ]
    assert register_outputs(config, client)[0][1].schema_id == registered[0][1].schema_id, "registering again changes nothing"
    client.refuse["out-value"] = (
        "Incompatible artifact: out-value [AVRO], num of incompatible diffs: {1}, list of diff types: "
        "[reader type: BOOLEAN not compatible with writer type: MAP at /fields/3/type/fields/10/type]"
    )
    with pytest.raises(ConfigError) as info:
        register_outputs(config, client)
    (problem,) = info.value.problems
    assert problem.startswith("pipelines.p.output: the avro schema of output changes field value.by_type")
    client.down = True
    with pytest.raises(RegistryUnavailable):
        register_outputs(config, client)


def test_subject_strategies_and_a_shared_topic(client):
    text = OUTPUT_CONFIG.replace("SER", "avro").replace("FORMAT", 'subject_strategy = "topic_record"').replace('topic = "buys"', 'topic = "out"')
    registered = register_outputs(config_from_toml(text), client)
    assert [r.subject for _, r in registered] == ["out-sessionizer.p.session", "out-sessionizer.p.buy", "abandoned-sessionizer.p.left"]
    shared = OUTPUT_CONFIG.replace("SER", "avro").replace("FORMAT", "").replace('topic = "buys"', 'topic = "out"')
    with pytest.raises(ConfigError, match='different shapes under one subject \'out-value\'; set output.subject_strategy = "topic_record"'):
        register_outputs(config_from_toml(shared), client)


def test_formats_of_a_json_only_config_need_nothing():
    config = config_from_toml('[pipelines.p]\nsources = ["in"]\nkey = "k"\noutput = "out"\n[pipelines.p.window]\ntype = "session"\ngap = "1m"\n')
    formats = Formats(config)
    assert formats.registry is None and formats.decoders == {} and formats.gate(LoopStats()) is None


# -- through the task manager: the gate, decoded frames, window tasks ------------------------------------------


def test_an_avro_source_waits_for_its_schema_then_reaches_the_window_tasks_as_decoded_frames(client, cluster, instance, monkeypatch):
    from service.runtime.frames import DECODED, DECODED_FRAME
    from tests.unit.runtime.test_task_manager import MINUTE, REPARTITION, SOURCE, T0, events, sessions

    schema = {"type": "record", "name": "E", "fields": [{"name": "user_id", "type": "string"}, {"name": "ts", "type": "long"}]}
    schema_id = client.add(schema)
    monkeypatch.setattr(Registry, "from_config", classmethod(lambda cls, config: Registry(client)))
    a = instance(schema_registry={"url": "http://registry"}, sources={SOURCE: {"format": "avro"}})
    a.tasks.schemas._executor = InlineExecutor()
    a.assign((SOURCE, 0), (REPARTITION, 0), (REPARTITION, 1))
    frames = [avro_frame(schema_id, schema, {"user_id": "u1", "ts": T0 + n * MINUTE}) for n in range(2)]
    frames.append(avro_frame(schema_id, schema, {"user_id": "u2", "ts": T0 + 30 * MINUTE}))
    batch = [FakeMessage(SOURCE, 0, n, value=v, timestamp_ms=T0) for n, v in enumerate(frames)]
    from tests.fakes import eof

    a.tasks.route([*batch, eof(SOURCE, 0, 3)])
    source = a.tasks.source_tasks[(SOURCE, 0)]
    assert a.consumer.seeks[-1] == (SOURCE, 0, 0), "put back at the record whose schema is being fetched"
    assert (SOURCE, 0) in a.consumer.paused
    assert not source.caught_up, "records wait: the partition is not read to its end"
    assert a.tasks.checkpoint.offsets() == []
    a.tasks.poll_schemas()
    assert (SOURCE, 0) not in a.consumer.paused
    a.tasks.route([*batch, eof(SOURCE, 0, 3)])
    assert source.caught_up
    a.tasks.commit()
    sent = events(cluster.visible(REPARTITION))
    assert len(sent) == 3
    kind, time_ms, _, _, size = DECODED_FRAME.unpack_from(sent[0].value)
    assert kind == DECODED and time_ms == T0
    assert orjson.loads(sent[0].value[DECODED_FRAME.size : DECODED_FRAME.size + size]) == {"user_id": "u1", "ts": T0}
    assert sent[0].value[DECODED_FRAME.size + size :] == frames[0], "the original bytes follow, for the late topic"
    # The window task reads the decoded frames as it reads JSON ones.
    for record in cluster.visible(REPARTITION):
        a.tasks.route([FakeMessage(REPARTITION, record.partition, record.offset, key=record.key, value=record.value, timestamp_ms=T0)])
    a.tasks.commit()
    assert sessions(cluster.visible("out")) == [(b"u1", T0, T0 + MINUTE, 2)]


def test_offline_mode_reads_base64_lines_of_framed_records(client, monkeypatch, tmp_path):
    from service.commands.process import process_lines

    schema = {"type": "record", "name": "E", "fields": [{"name": "user_id", "type": "string"}, {"name": "ts", "type": "long"}]}
    schema_id = client.add(schema)
    monkeypatch.setattr(Registry, "from_config", classmethod(lambda cls, config: Registry(client)))
    config = config_from_toml(
        '[schema_registry]\nurl = "http://registry"\n[sources.in]\nformat = "avro"\n'
        '[pipelines.p]\nsources = ["in"]\nkey = "user_id"\ntime = "ts"\noutput = "out"\n[pipelines.p.window]\ntype = "session"\ngap = "1m"\n'
    )
    frames = [avro_frame(schema_id, schema, {"user_id": "u1", "ts": 1_700_000_000_000 + n * 1000}) for n in range(3)]
    lines = [base64.b64encode(f) for f in frames] + [b"not base64!", base64.b64encode(header(99) + frames[0][5:])]
    out: list[dict] = []
    process_lines(config, lines, lambda line: out.append(orjson.loads(line)), topic="in")
    (session,) = [r["value"] for r in out if r["topic"] == "out"]
    assert session["value"]["event_count"] == 3
    assert sorted(r["headers"]["sessionizer.reason_code"] for r in out if r["topic"].endswith("dead-letter")) == ["bad_framing", "unknown_schema"]
    wrapped = [orjson.dumps({"topic": "in", "value": base64.b64encode(f).decode()}) for f in frames]
    out.clear()
    process_lines(config, wrapped, lambda line: out.append(orjson.loads(line)), wrapped=True)
    assert [r["value"]["value"]["event_count"] for r in out if r["topic"] == "out"] == [3]


def test_a_direct_pipeline_groups_avro_keys_by_their_text_and_checks_partitions_by_their_bytes(client, monkeypatch, tmp_path):
    from service.core.partitioner import partition_for
    from tests.unit.runtime.instances import MOBILE, OUTPUT, WEB, direct_instance

    string_id = client.add('"string"')
    monkeypatch.setattr(Registry, "from_config", classmethod(lambda cls, config: Registry(client)))
    made = direct_instance(
        tmp_path, schema_registry={"url": "http://registry"}, sources={WEB: {"key_format": "avro"}, MOBILE: {"key_format": "avro"}}
    )
    try:
        made.tasks.schemas._executor = InlineExecutor()
        made.assign((WEB, 0), (MOBILE, 0), (WEB, 1), (MOBILE, 1))
        keys = [avro_frame(string_id, "string", f"user-{n}") for n in range(40)]
        key = next(k for k in keys if partition_for(k, 2) == 0)
        wrong = next(k for k in keys if partition_for(k, 2) == 1)
        batch = [
            FakeMessage(WEB, 0, 0, key=key, value=orjson.dumps({"ts": 1_700_000_000_000}), timestamp_ms=1),
            FakeMessage(WEB, 0, 1, key=wrong, value=orjson.dumps({"ts": 1_700_000_001_000}), timestamp_ms=1),
        ]
        made.tasks.route(batch)
        made.tasks.poll_schemas()
        made.tasks.route(batch)
        task = made.direct_task(0)
        assert task.dead_letter_reasons == {"wrong_partition": 1}
        expected = key[5:]  # the Avro string: a length byte, then the text
        assert list(task.store.keys()) == [expected[1:]]
        task.processor.close_all()
        made.tasks.commit()
        (record,) = made.cluster.visible(OUTPUT)
        assert record.key == expected[1:] and orjson.loads(record.value)["key"] == "user-" + expected[1:].decode().split("-")[1]
    finally:
        made.close()

