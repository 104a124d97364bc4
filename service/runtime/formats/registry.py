"""The schema registry as the service uses it: schemas looked up by id, once, and what a failure means.

Two kinds of failure are kept apart, because they call for opposite answers:

- **the record is bad**: the registry says there is no schema with that id
  (HTTP 404). Its record goes to the dead-letter topic (``unknown_schema``);
- **the registry is in trouble**: no connection, a timeout, a 5xx, an
  authentication error. Nothing is wrong with the record, so it waits: the
  caller gets ``RegistryUnavailable`` and retries later.

A schema never changes under its id, so a schema fetched once is kept, and a
steady stream never calls the registry. An id found unknown is remembered for
``UNKNOWN_TTL`` seconds, so a stream of such records does not ask for it on
every record. Both are bounded (``SCHEMA_CACHE_SIZE``): ids come from the
records, and a producer that churns through schemas, or writes garbage ids,
must not grow the process without end. Beyond the bound the entry least
recently looked up here goes, with what the decoders and the gate built from
it (``on_evict``); a record naming it again waits for it as for a new id.

The client is confluent-kafka's ``SchemaRegistryClient``, with the service's
timeout (its own default waits forever) and no retries of its own: the
service retries without blocking, partition by partition (``gate``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from service.config import SchemaRegistryConfig
from service.core.reasons import UNKNOWN_SCHEMA
from service.errors import BadRecord, ConfigError, RegistryUnavailable

#: How long an id the registry said it does not know is taken as unknown without asking again (seconds).
UNKNOWN_TTL = 60.0
#: Most schemas kept, and most ids remembered as unknown, per process (docs/formats.md). Far above what
#: a deployment's topics use (a few per topic, a version per change), far below what would weigh.
SCHEMA_CACHE_SIZE = 1000

K = TypeVar("K")
V = TypeVar("V")
#: Client properties that are numbers; from the environment they arrive as text.
_NUMERIC = ("max.retries", "retries.wait.ms", "retries.max.wait.ms", "cache.capacity", "cache.latest.ttl.sec")


def client_config(config: SchemaRegistryConfig) -> dict[str, Any]:
    """The ``SchemaRegistryClient`` configuration: the url, a bounded timeout, no retries unless asked for."""
    conf: dict[str, Any] = {"url": config.url, "timeout": config.timeout_ms / 1000, "max.retries": 0}
    for name, value in config.properties.items():
        if name in _NUMERIC and isinstance(value, str):
            try:
                value = float(value) if "." in value else int(value)
            except ValueError:
                raise ConfigError([f"schema_registry.{name} = {value!r}: expected a number"]) from None
        conf[name] = value
    return conf


def make_client(config: SchemaRegistryConfig) -> Any:
    """confluent-kafka's client; a property it refuses is a ``ConfigError`` naming it."""
    try:
        from confluent_kafka.schema_registry import SchemaRegistryClient
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ConfigError([f"[schema_registry] needs the registry extra: pip install 'sessionizer[registry]' ({exc})"]) from None
    try:
        return SchemaRegistryClient(client_config(config))
    except (ValueError, TypeError) as exc:
        raise ConfigError([f"schema_registry: {exc}"]) from None


class BoundedCache(Generic[K, V]):
    """At most ``size`` entries; adding one more drops the least recently used, and tells ``on_evict`` its key.

    ``get`` counts as a use; ``in`` does not (a look that changes nothing).
    """

    def __init__(self, size: int, on_evict: Callable[[K], None] | None = None) -> None:
        if size < 1:
            raise ValueError(f"size {size}: expected at least 1")
        self.size = size
        self._on_evict = on_evict
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def __setitem__(self, key: K, value: V) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            evicted, _ = self._entries.popitem(last=False)
            if self._on_evict is not None:
                self._on_evict(evicted)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def pop(self, key: K) -> V | None:
        return self._entries.pop(key, None)

    def keys(self) -> list[K]:
        """Least recently used first."""
        return list(self._entries)


@dataclass(frozen=True)
class Fetched:
    """A schema as the registry holds it, with the schemas it references (Protobuf imports, Avro named types)."""

    id: int
    schema_type: str
    text: str
    #: (name the schema refers to it by, its text), dependencies before what depends on them.
    references: tuple[tuple[str, str], ...] = ()


def is_unknown(error: BaseException) -> bool:
    """The registry's "no such schema" (HTTP 404), as opposed to trouble reaching it."""
    return getattr(error, "http_status_code", None) == 404


def describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}" if type(error).__name__ not in text else text


class Registry:
    """Schemas by id, fetched once and kept up to ``size``; the one place the client is called to read them."""

    def __init__(self, client: Any, clock: Callable[[], float] = time.monotonic, size: int = SCHEMA_CACHE_SIZE) -> None:
        self.client = client
        self._clock = clock
        #: Told the id of each schema dropped from the cache, to drop what they built from it.
        self._listeners: list[Callable[[int], object]] = []
        self.schemas: BoundedCache[int, Fetched] = BoundedCache(size, self._evicted)
        #: id -> when it stops counting as unknown
        self._unknown: BoundedCache[int, float] = BoundedCache(size)

    @classmethod
    def from_config(cls, config: SchemaRegistryConfig) -> Registry:
        return cls(make_client(config))

    def on_evict(self, listener: Callable[[int], object]) -> None:
        """Call ``listener(schema_id)`` when a schema leaves the cache: a decoder drops its parsed copy, the gate its pass."""
        self._listeners.append(listener)

    def _evicted(self, schema_id: int) -> None:
        for listener in self._listeners:
            listener(schema_id)

    def cached(self, schema_id: int) -> Fetched | None:
        return self.schemas.get(schema_id)

    def remember(self, fetched: Fetched) -> None:
        """Keep a schema fetched elsewhere (the gate's background thread)."""
        self.schemas[fetched.id] = fetched

    def known_unknown(self, schema_id: int) -> bool:
        """The registry said lately that it has no schema ``schema_id``."""
        until = self._unknown.get(schema_id)
        if until is None:
            return False
        if self._clock() >= until:
            self._unknown.pop(schema_id)
            return False
        return True

    def schema(self, schema_id: int) -> Fetched:
        """The schema ``schema_id``, from the cache or the registry (a blocking call, bounded by the timeout).

        Raises ``BadRecord`` (``unknown_schema``) when the registry does not
        know it, ``RegistryUnavailable`` when it cannot say.
        """
        found = self.schemas.get(schema_id)
        if found is not None:
            return found
        if self.known_unknown(schema_id):
            raise BadRecord(f"unknown schema id {schema_id}: the schema registry has no such schema", UNKNOWN_SCHEMA)
        try:
            fetched = self.fetch(schema_id)
        except BadRecord:
            self.mark_unknown(schema_id)
            raise
        self.remember(fetched)
        return fetched

    def mark_unknown(self, schema_id: int) -> None:
        self._unknown[schema_id] = self._clock() + UNKNOWN_TTL

    def fetch(self, schema_id: int) -> Fetched:
        """Ask the registry (any thread): the schema and, depth first, every schema it references."""
        try:
            schema = self.client.get_schema(schema_id)
            references = self._references(schema.references or [], {})
        except Exception as exc:
            if is_unknown(exc):
                raise BadRecord(f"unknown schema id {schema_id}: the schema registry has no such schema", UNKNOWN_SCHEMA) from None
            raise RegistryUnavailable(f"schema registry: looking up schema {schema_id} failed: {describe(exc)}") from None
        return Fetched(schema_id, schema.schema_type or "AVRO", schema.schema_str, tuple(references.items()))

    def _references(self, references: list[Any], found: dict[str, str]) -> dict[str, str]:
        for reference in references:
            if reference.name in found:
                continue
            registered = self.client.get_version(reference.subject, reference.version)
            self._references(registered.schema.references or [], found)
            found[reference.name] = registered.schema.schema_str
        return found

    def seed(self, schemas: Mapping[int, Fetched]) -> None:
        """Schemas known without asking (tests, and schemas this process registered)."""
        for schema_id, fetched in schemas.items():
            self.schemas[schema_id] = fetched
