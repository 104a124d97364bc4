"""The schema cache is bounded (``SCHEMA_CACHE_SIZE``, docs/formats.md): beyond it the schema least recently
looked up goes, with what the decoders and the gate built from it, and a record naming it again waits for it
as for a new id. Ids found unknown are bounded the same way."""

from __future__ import annotations

import pytest

pytest.importorskip("fastavro", reason="the registry extra is not installed: pip install -e '.[registry]'")
pytest.importorskip("google.protobuf", reason="the registry extra is not installed: pip install -e '.[registry]'")

from service.runtime.formats import avro, json_schema, protobuf
from service.runtime.formats.framing import header, write_indexes
from service.runtime.formats.gate import SchemaGate
from service.runtime.formats.registry import SCHEMA_CACHE_SIZE, BoundedCache, Registry
from service.runtime.stats import LoopStats
from tests.unit.runtime.test_formats import (
    EVENT,
    PROTO,
    FakeRegistryClient,
    InlineExecutor,
    avro_frame,
    messages,
    proto_class,
    reason,
)

RECORD = {"user_id": "u", "ts": 1, "details": {"page": "/"}}


@pytest.fixture
def client() -> FakeRegistryClient:
    return FakeRegistryClient()


def test_the_cache_drops_the_least_recently_used_beyond_its_size():
    evicted: list[str] = []
    cache: BoundedCache[str, int] = BoundedCache(3, evicted.append)
    for n, key in enumerate("abc"):
        cache[key] = n
    assert cache.get("a") == 0  # a use: "b" is now the least recent
    assert "b" in cache  # a look, not a use
    cache["d"] = 3
    assert evicted == ["b"] and len(cache) == 3
    assert cache.keys() == ["c", "a", "d"]
    cache["c"] = 9  # setting again is a use too
    cache["e"] = 4
    assert evicted == ["b", "a"] and cache.get("a") is None
    with pytest.raises(ValueError):
        BoundedCache(0)


def test_the_registry_keeps_at_most_schema_cache_size_schemas(client):
    assert SCHEMA_CACHE_SIZE == 1000  # the figure docs/formats.md gives
    ids = [client.add(EVENT) for _ in range(SCHEMA_CACHE_SIZE + 1)]
    registry = Registry(client)
    for schema_id in ids:
        registry.schema(schema_id)
    assert len(registry.schemas) == SCHEMA_CACHE_SIZE
    assert registry.cached(ids[0]) is None and registry.cached(ids[-1]) is not None
    registry.schema(ids[0])
    assert client.lookups == SCHEMA_CACHE_SIZE + 2, "the dropped schema is fetched again"
    assert registry.cached(ids[1]) is None, "and the next least recently used made room for it"


def test_a_schema_in_use_outlives_newer_ones(client):
    first, second, third = (client.add(EVENT) for _ in range(3))
    registry = Registry(client, size=2)
    registry.schema(first)
    registry.schema(second)
    registry.schema(first)
    registry.schema(third)
    assert registry.cached(first) is not None and registry.cached(second) is None


def test_ids_found_unknown_are_bounded_too(client):
    registry = Registry(client, size=2)
    for schema_id in (901, 902, 903):
        assert reason(lambda: registry.schema(schema_id)) == "unknown_schema"  # noqa: B023
    assert client.lookups == 3
    assert not registry.known_unknown(901) and registry.known_unknown(903)
    assert reason(lambda: registry.schema(901)) == "unknown_schema"
    assert client.lookups == 4, "asked again once forgotten"


def test_decoders_drop_what_they_built_from_a_dropped_schema(client):
    """Their parsed schemas stay as bounded as the registry's cache: after a drop, the next record fetches again."""
    a, b = client.add(EVENT), client.add(EVENT)
    registry = Registry(client, size=1)
    decode = avro.decoder(registry)
    for schema_id in (a, a, b, b, a):
        assert decode(avro_frame(schema_id, EVENT, RECORD))["user_id"] == "u"
    assert client.lookups == 3

    p, q = client.add(PROTO, "PROTOBUF"), client.add(PROTO, "PROTOBUF")
    Event, _ = proto_class(PROTO, "shop.Event")
    body = write_indexes((1,)) + Event(user_id="u").SerializeToString()
    decode = protobuf.decoder(registry)
    for schema_id in (p, p, q, p):
        assert decode(header(schema_id) + body)["user_id"] == "u"
    assert client.lookups == 6

    j, k = client.add({"type": "object"}, "JSON"), client.add({"type": "object"}, "JSON")
    decode = json_schema.decoder(registry, validate=True)
    for schema_id in (j, j, k, j):
        assert decode(header(schema_id) + b'{"user_id": "u"}') == {"user_id": "u"}
    assert client.lookups == 9


def test_the_gate_stops_at_a_dropped_schema_as_at_a_new_one(client):
    """A record is admitted only while its schema is in the cache, so a decoder never calls the registry in the loop."""
    a, b = client.add(EVENT), client.add(EVENT)
    registry = Registry(client, size=1)
    gate = SchemaGate(registry, {"web": (True, False)}, LoopStats(), executor=InlineExecutor())
    body = avro_frame(a, EVENT, RECORD)[5:]
    with_a, with_b = messages(header(a) + body), messages(header(b) + body)
    assert gate.admit(("web", 0), with_a) == 0
    assert gate.poll() == [("web", 0)]
    assert gate.admit(("web", 0), with_a) == 1
    assert gate.admit(("web", 1), with_b) == 0
    assert gate.poll() == [("web", 1)]  # b's schema arrives: a's is dropped
    assert gate.admit(("web", 1), with_b) == 1
    assert gate.admit(("web", 0), with_a) == 0, "a's partition waits for its schema again"
    assert gate.poll() == [("web", 0)]
    assert gate.admit(("web", 0), with_a) == 1
    assert client.lookups == 3
