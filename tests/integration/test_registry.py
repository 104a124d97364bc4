"""Avro, Protobuf and JSON Schema through the real schema registry (Apicurio, scripts/registry.sh) and the real broker.

Every test produces its events framed the way Confluent's serializers frame
them (magic byte 0, the schema id, the body), registered in the registry
scripts/test.sh started, and checks what comes out against the independent
oracle (``tests.oracle``), and where there is one, against the same events
read as JSON.

The registry-outage test freezes the registry with SIGSTOP rather than
stopping it: Apicurio keeps its schemas in memory, so a restart forgets them
and starts numbering ids from 1 again, and frames produced before it would
then name schemas that no longer exist (or, worse, other schemas under the
same ids). A frozen registry is the outage that matters most besides: it
accepts connections and never answers, which the client's default (no
timeout) would wait for forever.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
from typing import Any

import orjson
import pytest

from tests import oracle, wire
from tests.integration import backlog as bl
from tests.integration.harness import Reader, Record, by_topic, create_topics, producer, read_all, send, wait_until
from tests.integration.test_operations import get, http_port, scrape

fastavro = pytest.importorskip("fastavro", reason="the registry extra is not installed: pip install -e '.[registry]'")
schema_registry_module = pytest.importorskip("confluent_kafka.schema_registry")

EVENT_V1 = {
    "type": "record",
    "name": "Event",
    "namespace": "sessionizer.test",
    "fields": [
        {"name": "user_id", "type": "string"},
        {"name": "ts", "type": "long"},
        {"name": "amount", "type": "long"},
        {"name": "details", "type": {"type": "record", "name": "Details", "fields": [{"name": "page", "type": "string"}]}},
    ],
}
#: v2 adds an optional field: a compatible change (BACKWARD), as producers roll it out mid-stream.
EVENT_V2 = {**EVENT_V1, "fields": [*EVENT_V1["fields"], {"name": "country", "type": ["null", "string"], "default": None}]}
COUNTRIES = ["fr", "de", "it", "es"]

AGGREGATES = """amount = { type = "sum", field = "amount" }
n = { type = "count" }
pages = { type = "count_by", field = "details.page" }
first_page = { type = "first", field = "details.page" }
"""


def client(registry) -> Any:
    return schema_registry_module.SchemaRegistryClient({"url": registry.url, "timeout": 10})


def register(registry, subject: str, schema: dict | str, schema_type: str = "AVRO") -> int:
    text = schema if isinstance(schema, str) else json.dumps(schema)
    return client(registry).register_schema(subject, schema_registry_module.Schema(text, schema_type))


def avro_framer(schema_id: int, schema: dict):
    parsed = fastavro.parse_schema(schema)
    prefix = b"\x00" + schema_id.to_bytes(4, "big")

    def frame(event: dict) -> bytes:
        out = io.BytesIO()
        out.write(prefix)
        fastavro.schemaless_writer(out, parsed, event)
        return out.getvalue()

    return frame


def with_details(backlog: bl.Backlog) -> bl.Backlog:
    """The backlog's events with a nested record, so dotted paths reach into decoded records."""
    for events in backlog.by_topic.values():
        for event in events:
            event["details"] = {"page": f"/p{event['amount'] % 5}"}
    return backlog


def produce_frames(topic: str, events: list[dict], frame, partitions: int = 6, seed: int = 7, extra: list[bytes | None] = ()) -> set[int]:
    """Each event framed by ``frame``, to a random partition (in order), then ``extra`` raw values; the partitions written to."""
    out = producer()
    rng = random.Random(seed)
    values = [frame(e) if isinstance(e, dict) else e for e in events] + list(extra)
    written = set()
    for value in values:
        partition = rng.randrange(partitions)
        written.add(partition)
        send(out, topic, value, partition=partition)
    assert out.flush(120) == 0
    return written


def body(app, registry, pipelines: dict[str, dict[str, str]], sources: dict[str, str], validate: bool = False) -> str:
    """``pipelines``: name -> {"sources": source name, "serialization": …, "aggregates": …}; ``sources``: name -> format."""
    out = [f'[schema_registry]\nurl = "{registry.url}"\ntimeout = "2s"\nretry_backoff = "300ms"\nretry_backoff_max = "1s"\n']
    for name, fmt in sources.items():
        out.append(f'[sources."{app.topic(name)}"]\nformat = "{fmt}"\n' + ("validate = true\n" if validate else ""))
    for name, spec in pipelines.items():
        out.append(
            f"""
[pipelines.{name}]
sources = ["{app.topic(spec["sources"])}"]
key = "user_id"
time = "ts"
[pipelines.{name}.output]
topic = "{app.topic(name)}"
serialization = "{spec.get("serialization", "json")}"
[pipelines.{name}.window]
type = "session"
gap = "{bl.GAP_MS}ms"
grace = "{bl.GRACE_MS}ms"
[pipelines.{name}.aggregates]
{spec.get("aggregates", AGGREGATES)}
"""
        )
    return "\n".join(out)


class Outputs:
    """Output values decoded whatever their serialization, with the tests' own means (tests/wire.py), never the service's decoders.

    JSON as it is; framed records by the schema their header names, fetched
    from the registry: Avro with fastavro, Protobuf with a message class built
    from the ``.proto`` text the registry holds (compiled by protoc), JSON
    Schema validated by jsonschema against the schema the registry holds.
    """

    def __init__(self, registry) -> None:
        self.client = client(registry)
        self.readers: dict[tuple[int, tuple[int, ...]], Any] = {}

    def decode(self, value: bytes) -> dict:
        if value[:1] != b"\x00":
            return orjson.loads(value)
        frame = wire.split_header(value)
        schema = self.client.get_schema(frame.schema_id)
        if schema.schema_type == "PROTOBUF":
            indexes, message = wire.split_indexes(frame.body)
            assert indexes == [0], "the record's message is the schema's first"
            cls = self._reader((frame.schema_id, (0,)), lambda: wire.message_class(schema.schema_str, indexes))
            return wire.message_dict(cls.FromString(message))
        if schema.schema_type == "JSON":
            return self._reader((frame.schema_id, ()), lambda: wire.json_schema_reader(schema.schema_str))(frame.body)
        parsed = self._reader((frame.schema_id, ()), lambda: fastavro.parse_schema(json.loads(schema.schema_str)))
        stream = io.BytesIO(frame.body)
        record = fastavro.schemaless_reader(stream, parsed, None)
        assert stream.tell() == len(frame.body), "the output record is exactly one Avro record"
        return record

    def _reader(self, key: tuple[int, tuple[int, ...]], make) -> Any:
        if key not in self.readers:
            self.readers[key] = make()
        return self.readers[key]

    def assert_registered(self, records: list[Record], topic: str) -> None:
        """Every record of ``topic`` is framed with the schema id registered (latest version) under its subject, ``<topic>-value``."""
        registered = self.client.get_latest_version(f"{topic}-value").schema_id
        assert {wire.split_header(r.value).schema_id for r in records} == {registered}


def normalized(value: dict) -> dict:
    """A decoded output as its JSON twin would be: JSON-text fields parsed, whole floats as ints."""
    out = dict(value)
    inner = dict(out["value"])
    for name in ("first_page",):
        if isinstance(inner.get(name), str):
            inner[name] = orjson.loads(inner[name])
    for name, item in inner.items():
        if isinstance(item, float) and item.is_integer():
            inner[name] = int(item)
    out["value"] = inner
    return out


def sessions(values: list[dict], key: str = "user_id") -> list[oracle.Session]:
    out = []
    for value in values:
        v = value["value"]
        out.append(oracle.Session(value[key], v["session_start_ms"], v["session_end_ms"], v["event_count"], int(v["amount"])))
    return sorted(out)


def run(app, outputs: dict[str, int]) -> dict[str, list[Record]]:
    """Start one service, wait for every expected session, stop it, read outputs, late and dead letters."""
    return bl.run_to_completion(app, outputs, timeout=240)


def read(app, outputs: list[str]) -> dict[str, list[Record]]:
    topics = [app.topic(name) for name in outputs] + [app.topic("late"), app.topic("dlq")]
    return by_topic(read_all(topics), topics)


def test_avro_in_and_out_gives_the_sessions_json_gives(app, schema_registry):
    """The same events as Avro and as JSON, through two pipelines of one service: the Avro sessions, decoded, are the JSON ones."""
    backlog = with_details(bl.generate([app.topic("web")], users=int(os.environ.get("REG_USERS", "400")), seed=31))
    events = backlog.by_topic[app.topic("web")]
    create_topics([app.topic("web-avro"), app.topic("web-json")], partitions=6)
    schema_id = register(schema_registry, f"{app.topic('web-avro')}-value", EVENT_V1)
    produce_frames(app.topic("web-avro"), events, avro_framer(schema_id, EVENT_V1))
    produce_frames(app.topic("web-json"), events, orjson.dumps)
    app.configure(
        body(
            app,
            schema_registry,
            {"avro": {"sources": "web-avro", "serialization": "avro"}, "json": {"sources": "web-json"}},
            {"web-avro": "avro"},
        ),
        partitions=6,
    )
    expected = backlog.expected()
    got = run(app, {"avro": len(expected), "json": len(expected)})
    assert got[app.topic("late")] == [] and got[app.topic("dlq")] == []
    outputs = Outputs(schema_registry)
    avro_values = [outputs.decode(r.value) for r in got[app.topic("avro")]]
    assert all(r.value[:1] == b"\x00" for r in got[app.topic("avro")]), "the Avro pipeline writes framed records"
    outputs.assert_registered(got[app.topic("avro")], app.topic("avro"))
    json_values = [orjson.loads(r.value) for r in got[app.topic("json")]]
    oracle.assert_each_once(sessions(avro_values), expected)
    oracle.assert_each_once(sessions(json_values), expected)
    canonical = lambda values: sorted(orjson.dumps(v, option=orjson.OPT_SORT_KEYS) for v in values)  # noqa: E731
    assert canonical(normalized(v) for v in avro_values) == canonical(json_values)
    # The pages were read through the nested record's dotted path.
    assert sum(sum(v["value"]["pages"].values()) for v in avro_values) == len(events)


PROTO_TEXT = """syntax = "proto3";
package sessionizer.test;

message Event {
  string user_id = 1;
  int64 ts = 2;
  int64 amount = 3;
  Details details = 4;
  message Details {
    string page = 1;
  }
}
"""


def proto_event_class():
    """The message class built by hand (independent of the service's .proto parser), for the text registered above."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FileDescriptorProto(name="event.proto", package="sessionizer.test", syntax="proto3")
    event = fdp.message_type.add(name="Event")
    types = descriptor_pb2.FieldDescriptorProto
    event.field.add(name="user_id", number=1, type=types.TYPE_STRING, label=types.LABEL_OPTIONAL)
    event.field.add(name="ts", number=2, type=types.TYPE_INT64, label=types.LABEL_OPTIONAL)
    event.field.add(name="amount", number=3, type=types.TYPE_INT64, label=types.LABEL_OPTIONAL)
    event.field.add(name="details", number=4, type=types.TYPE_MESSAGE, label=types.LABEL_OPTIONAL, type_name=".sessionizer.test.Event.Details")
    details = event.nested_type.add(name="Details")
    details.field.add(name="page", number=1, type=types.TYPE_STRING, label=types.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("sessionizer.test.Event"))


def test_protobuf_in_from_a_proto_text_schema(app, schema_registry):
    """Protobuf records whose schema is registered as .proto text (as Java and Go producers do): int64s stay numbers."""
    backlog = with_details(bl.generate([app.topic("web")], users=300, seed=32))
    events = backlog.by_topic[app.topic("web")]
    create_topics([app.topic("web")], partitions=6)
    schema_id = register(schema_registry, f"{app.topic('web')}-value", PROTO_TEXT, "PROTOBUF")
    event_class = proto_event_class()
    prefix = b"\x00" + schema_id.to_bytes(4, "big") + b"\x00"  # message indexes [0]
    produce_frames(app.topic("web"), events, lambda e: prefix + event_class(**e).SerializeToString())
    app.configure(body(app, schema_registry, {"sessions": {"sources": "web"}}, {"web": "protobuf"}), partitions=6)
    expected = backlog.expected()
    got = run(app, {"sessions": len(expected)})
    assert got[app.topic("late")] == [] and got[app.topic("dlq")] == []
    values = [orjson.loads(r.value) for r in got[app.topic("sessions")]]
    oracle.assert_each_once(sessions(values), expected)
    assert {type(v["value"]["first_page"]) for v in values} == {str}


def test_json_schema_in_validated_protobuf_and_json_schema_out(app, schema_registry):
    """JSON Schema records framed by confluent-kafka's own serializer, validated; sessions written as Protobuf, JSON Schema and JSON.

    The framed outputs are read with the tests' own means (``Outputs``): each
    carries the schema id registered for its topic, Protobuf decodes with the
    ``.proto`` text the registry holds compiled by protoc, JSON Schema bodies
    are valid against the registered schema and are the JSON output's bytes.
    """
    from confluent_kafka.schema_registry.json_schema import JSONSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    schema = {
        "type": "object",
        "properties": {"user_id": {"type": "string"}, "ts": {"type": "integer"}, "amount": {"type": "integer"}, "details": {"type": "object"}},
        "required": ["user_id", "ts", "amount"],
    }
    backlog = with_details(bl.generate([app.topic("web")], users=300, seed=33))
    events = backlog.by_topic[app.topic("web")]
    create_topics([app.topic("web")], partitions=6)
    serializer = JSONSerializer(json.dumps(schema), client(schema_registry))
    context = SerializationContext(app.topic("web"), MessageField.VALUE)
    # One record breaks its schema: with validate = true it is dead-lettered as bad_body.
    breaking = serializer(events[0], context)[:5] + orjson.dumps({"user_id": 7, "ts": 1, "amount": 1})
    produce_frames(app.topic("web"), events, lambda e: serializer(e, context), extra=[breaking])
    pipelines = {
        "sessions": {"sources": "web", "serialization": "protobuf"},
        "schemaed": {"sources": "web", "serialization": "json_schema"},
        "json": {"sources": "web"},
    }
    app.configure(body(app, schema_registry, pipelines, {"web": "json_schema"}, validate=True), partitions=6)
    expected = backlog.expected()
    got = run(app, {name: len(expected) for name in pipelines})
    outputs = Outputs(schema_registry)
    protobuf_records, schemaed_records = got[app.topic("sessions")], got[app.topic("schemaed")]
    outputs.assert_registered(protobuf_records, app.topic("sessions"))
    outputs.assert_registered(schemaed_records, app.topic("schemaed"))
    assert outputs.client.get_schema(wire.split_header(schemaed_records[0].value).schema_id).schema_type == "JSON"
    protobuf_values = [outputs.decode(r.value) for r in protobuf_records]
    schemaed_values = [outputs.decode(r.value) for r in schemaed_records]  # validated against the registered schema
    json_values = [orjson.loads(r.value) for r in got[app.topic("json")]]
    for values in (protobuf_values, schemaed_values, json_values):
        oracle.assert_each_once(sessions(values), expected)
    # Field for field what the JSON pipeline wrote: Protobuf once its JSON-text fields are parsed, JSON Schema byte for byte.
    canonical = lambda values: sorted(orjson.dumps(v, option=orjson.OPT_SORT_KEYS) for v in values)  # noqa: E731
    assert canonical(normalized(v) for v in protobuf_values) == canonical(json_values)
    assert sorted(wire.split_header(r.value).body for r in schemaed_records) == sorted(r.value for r in got[app.topic("json")])
    assert sum(sum(v["value"]["pages"].values()) for v in protobuf_values) == len(events)
    dead = got[app.topic("dlq")]
    assert [r.headers["sessionizer.reason_code"] for r in dead] == [b"bad_body"]
    assert dead[0].value == breaking


def test_schema_evolution_mid_stream(app, schema_registry):
    """Producers switch to v2 (a new optional field) halfway through: sessions span both versions, a new aggregate reads the field."""
    backlog = with_details(bl.generate([app.topic("web")], users=400, seed=34))
    events = backlog.by_topic[app.topic("web")]
    subject = f"{app.topic('web')}-value"
    create_topics([app.topic("web")], partitions=6)
    v1 = avro_framer(register(schema_registry, subject, EVENT_V1), EVENT_V1)
    v2 = avro_framer(register(schema_registry, subject, EVENT_V2), EVENT_V2)
    switch = sorted(e["ts"] for e in events)[len(events) // 2]
    rng = random.Random(5)
    for event in events:
        if event["ts"] >= switch:
            event["country"] = rng.choice(COUNTRIES)
    produce_frames(app.topic("web"), events, lambda e: v2(e) if "country" in e else v1(e))
    aggregates = AGGREGATES + 'countries = { type = "count_distinct", field = "country" }\n'
    app.configure(
        body(app, schema_registry, {"sessions": {"sources": "web", "serialization": "avro", "aggregates": aggregates}}, {"web": "avro"}),
        partitions=6,
    )
    expected = backlog.expected()
    got = run(app, {"sessions": len(expected)})
    assert got[app.topic("late")] == [] and got[app.topic("dlq")] == []
    outputs = Outputs(schema_registry)
    values = [outputs.decode(r.value) for r in got[app.topic("sessions")]]
    oracle.assert_each_once(sessions(values), expected)
    # Each session's distinct countries, from the events it holds: v1 events have none.
    by_user: dict[str, list[dict]] = {}
    for event in events:
        by_user.setdefault(event["user_id"], []).append(event)

    def held(user: str, start: int, end: int) -> list[dict]:
        return [e for e in by_user[user] if start <= e["ts"] <= end]

    for value in values:
        v = value["value"]
        countries = {e["country"] for e in held(value["user_id"], v["session_start_ms"], v["session_end_ms"]) if "country" in e}
        assert v["countries"] == len(countries)
    # The sessions that hold events of both versions, as many as the oracle's sessions that do (some).
    both = [s for s in expected if len({"country" in e for e in held(s.key, s.start, s.end)}) == 2]
    spanning = [v for v in values if len({"country" in e for e in held(v["user_id"], v["value"]["session_start_ms"], v["value"]["session_end_ms"])}) == 2]
    assert len(spanning) == len(both) > 0, "sessions holding events of both versions"


def test_unknown_schema_id_corrupt_body_and_bad_framing_go_to_the_dead_letter_topic(app, schema_registry):
    backlog = with_details(bl.generate([app.topic("web")], users=50, seed=35))
    events = backlog.by_topic[app.topic("web")]
    create_topics([app.topic("web")], partitions=6)
    frame = avro_framer(register(schema_registry, f"{app.topic('web')}-value", EVENT_V1), EVENT_V1)
    good = frame(events[0])
    bad = {
        b"\x00" + (987_654).to_bytes(4, "big") + good[5:]: b"unknown_schema",
        good[:-3]: b"bad_body",  # truncated
        good + b"\x01\x02": b"bad_body",  # trailing bytes
        orjson.dumps(events[0]): b"bad_framing",  # JSON where Avro was expected
        b"\x00\x00": b"bad_framing",  # too short for the header
    }
    produce_frames(app.topic("web"), events, frame, extra=list(bad))
    app.configure(body(app, schema_registry, {"sessions": {"sources": "web"}}, {"web": "avro"}), partitions=6)
    expected = backlog.expected()
    got = run(app, {"sessions": len(expected)})
    oracle.assert_each_once(sessions([orjson.loads(r.value) for r in got[app.topic("sessions")]]), expected)
    dead = got[app.topic("dlq")]
    assert sorted((r.value, r.headers["sessionizer.reason_code"]) for r in dead) == sorted(bad.items())
    # Each dead letter names the very record it was: the source record at that partition and offset has its bytes.
    source = {(r.partition, r.offset): r.value for r in read_all([app.topic("web")])}
    for record in dead:
        assert record.headers["sessionizer.topic"] == app.topic("web").encode()
        where = (int(record.headers["sessionizer.partition"]), int(record.headers["sessionizer.offset"]))
        assert source[where] == record.value, where
        assert record.headers["sessionizer.error"]


#: The frozen-registry test's idle timeout: far more than the seconds between its two halves.
FROZEN_IDLE_TIMEOUT = "20s"


def test_a_frozen_registry_pauses_partitions_and_loses_nothing(app, schema_registry):
    """SIGSTOP the registry while records with a schema id the service has not seen arrive.

    Those partitions wait: nothing reaches the dead-letter topic, ``/readyz``
    and the metrics say why, and once the registry answers again processing
    resumes on its own, every session exactly once.

    The registry stays frozen until what the test waits for has happened, not
    for a fixed time: every partition written to has stopped at its first new
    record, and lookups have failed twice (each after the 2 s
    ``schema_registry.timeout``), i.e. were retried while it was frozen.

    Both halves are a backlog (event times of 2023), so the sources must not be
    found quiet between them: a quiet source's watermark is the wall clock
    (``service.runtime.ends``), and every event of the second half would be
    late behind it, as a live producer's events are when written that long
    after their time. With the suite's 2 s idle timeout, a loaded machine took
    that long between reading the first half and producing the second (one CI
    run: a partition's second-half events all late). The test's idle timeout,
    ``FROZEN_IDLE_TIMEOUT``, is ten times that; the last sessions close that
    long after everything is read.
    """
    backlog = with_details(bl.generate([app.topic("web")], users=400, seed=36))
    events = backlog.by_topic[app.topic("web")]
    subject = f"{app.topic('web')}-value"
    create_topics([app.topic("web")], partitions=6)
    v1 = avro_framer(register(schema_registry, subject, EVENT_V1), EVENT_V1)
    middle = sorted(e["ts"] for e in events)[len(events) // 2]
    first = [e for e in events if e["ts"] < middle]
    second = [e for e in events if e["ts"] >= middle]
    produce_frames(app.topic("web"), first, v1)
    app.configure(
        body(app, schema_registry, {"sessions": {"sources": "web", "serialization": "avro"}}, {"web": "avro"}),
        partitions=6,
        app_extra=f'idle_timeout = "{FROZEN_IDLE_TIMEOUT}"',
    )
    expected = backlog.expected()
    service = app.service().start()
    service.wait_started()
    port = http_port(service)
    reader = Reader([app.topic("sessions")])
    pid = schema_registry.pid()
    try:
        reader.wait_for(1, timeout=120, topic=app.topic("sessions"))  # v1's schema is cached by now
        v2 = avro_framer(register(schema_registry, subject, EVENT_V2), EVENT_V2)  # an id the service has not seen
        os.kill(pid, signal.SIGSTOP)
        try:
            stopping = produce_frames(app.topic("web"), second, v2, seed=8)  # every partition has a v2 record to stop at

            def all_waiting() -> dict | None:
                status, ready = get(port, "/readyz")
                if status != 503 or "schema registry" not in ready.get("reason", ""):
                    return None
                return ready if ready.get("partitions_waiting_for_schema_registry") == len(stopping) else None

            # The waits end on events, each within a barrier; frozen at most a minute in all.
            ready = wait_until(all_waiting, 30, f"/readyz to say {len(stopping)} partitions wait for the schema registry")
            assert ready["status"].startswith(f"{len(stopping)} partition(s) waiting for the schema registry"), ready

            def retried() -> dict | None:
                metrics = scrape(port)
                return metrics if metrics["sessionizer_schema_registry_errors_total"] >= 2 else None

            metrics = wait_until(retried, 30, "a lookup to fail twice (retried while the registry is frozen)")
            assert metrics["sessionizer_schema_registry_waiting_partitions"] == len(stopping)
            assert metrics['sessionizer_dead_letter_records_total{{app_id="{}",reason="unknown_schema",topic="{}"}}'.format(app.id, app.topic("dlq"))] == 0
        finally:
            os.kill(pid, signal.SIGCONT)
        try:
            reader.wait_for(len(expected), timeout=240, topic=app.topic("sessions"))
        except AssertionError as exc:
            timed_out: AssertionError | None = exc  # the checks below say which sessions, and why
        else:
            timed_out = None
            wait_until(lambda: get(port, "/readyz")[0] == 200, 30, "/readyz to be ready again")
    finally:
        reader.close()
    assert service.stop() == 0
    got = read(app, ["sessions"])
    assert got[app.topic("dlq")] == [], "a registry outage is not bad input"
    late = got[app.topic("late")]
    assert late == [], f"{len(late)} late, e.g. {[(r.partition, r.headers) for r in late[:3]]}"
    outputs = Outputs(schema_registry)
    oracle.assert_each_once(sessions([outputs.decode(r.value) for r in got[app.topic("sessions")]]), expected)
    assert timed_out is None, str(timed_out)
    assert '"schema registry unavailable; partitions wait for it"' in service.log()
    assert '"schema registry answered again"' in service.log()


def test_kill_9_with_avro_in_and_out_is_exactly_once(app, schema_registry):
    """A smaller test_event_time kill test: kill -9 twice during an Avro replay, local state wiped once."""
    backlog = with_details(bl.generate([app.topic("web")], users=2_000, seed=37))
    events = backlog.by_topic[app.topic("web")]
    create_topics([app.topic("web")], partitions=6)
    frame = avro_framer(register(schema_registry, f"{app.topic('web')}-value", EVENT_V1), EVENT_V1)
    produce_frames(app.topic("web"), events, frame)
    app.configure(
        body(app, schema_registry, {"sessions": {"sources": "web", "serialization": "avro"}}, {"web": "avro"}),
        partitions=6,
        app_extra="cache_max_keys = 2000",
    )
    expected = backlog.expected()
    service = app.service().start()
    service.wait_started()
    bl.kill_while_replaying(app, service, len(expected), kills=2)
    assert service.stop() == 0
    got = read(app, ["sessions"])
    assert got[app.topic("late")] == [] and got[app.topic("dlq")] == []
    outputs = Outputs(schema_registry)
    got_sessions = sessions([outputs.decode(r.value) for r in got[app.topic("sessions")]])
    oracle.assert_each_once(got_sessions, expected)
    assert oracle.conserved(got_sessions, late=0, produced=len(events))


@pytest.mark.parametrize("serialization", ["avro", "protobuf", "json_schema"])
def test_output_schemas_evolve_when_an_aggregate_is_added_and_an_incompatible_change_is_refused(app, schema_registry, serialization):
    """Against the real registry's compatibility rule (BACKWARD): start-up registration, a compatible v2, a refused v3."""
    from service.config import load_config
    from service.errors import ConfigError
    from service.runtime.formats import Formats

    def config(aggregates: str):
        app.configure(
            body(app, schema_registry, {"sessions": {"sources": "web", "serialization": serialization, "aggregates": aggregates}}, {})
        )
        return load_config(app.config_path, {})

    v1 = Formats(config(AGGREGATES))
    v1.register_outputs()
    v2 = Formats(config(AGGREGATES + 'last_page = { type = "last", field = "details.page" }\n'))
    v2.register_outputs()
    assert v2.registered[0][1].schema_id != v1.registered[0][1].schema_id, "a new version of the subject"
    assert v2.registered[0][1].subject == v1.registered[0][1].subject == f"{app.topic('sessions')}-value"
    incompatible = AGGREGATES.replace('pages = { type = "count_by", field = "details.page" }', 'pages = { type = "any", field = "type", equals = "x" }')
    with pytest.raises(ConfigError) as info:
        Formats(config(incompatible)).register_outputs()
    (problem,) = info.value.problems
    assert problem.startswith(f"pipelines.sessions.output: the {serialization} schema of output changes field value.pages"), problem
