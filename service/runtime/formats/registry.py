"""The schema registry as the service uses it: schemas looked up by id, once, and what a failure means.

Two kinds of failure are kept apart, because they call for opposite answers:

- **the record is bad**: the registry says there is no schema with that id
  (HTTP 404). Its record goes to the dead-letter topic (``unknown_schema``);
- **the registry is in trouble**: no connection, a timeout, a 5xx, an
  authentication error. Nothing is wrong with the record, so it waits: the
  caller gets ``RegistryUnavailable`` and retries later.

A schema never changes under its id, so a schema fetched once is kept for the
life of the process (one entry per id: schema versions are few), and a steady
stream never calls the registry. An id found unknown is remembered for
``UNKNOWN_TTL`` seconds, so a stream of such records does not ask for it on
every record.

The client is confluent-kafka's ``SchemaRegistryClient``, with the service's
timeout (its own default waits forever) and no retries of its own: the
service retries without blocking, partition by partition (``gate``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from service.config import SchemaRegistryConfig
from service.core.reasons import UNKNOWN_SCHEMA
from service.errors import BadRecord, ConfigError, RegistryUnavailable

#: How long an id the registry said it does not know is taken as unknown without asking again (seconds).
UNKNOWN_TTL = 60.0
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
    """Schemas by id, fetched once; the one place the client is called to read them."""

    def __init__(self, client: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self._clock = clock
        self.schemas: dict[int, Fetched] = {}
        #: id -> when it stops counting as unknown
        self._unknown: dict[int, float] = {}

    @classmethod
    def from_config(cls, config: SchemaRegistryConfig) -> Registry:
        return cls(make_client(config))

    def cached(self, schema_id: int) -> Fetched | None:
        return self.schemas.get(schema_id)

    def known_unknown(self, schema_id: int) -> bool:
        """The registry said lately that it has no schema ``schema_id``."""
        until = self._unknown.get(schema_id)
        if until is None:
            return False
        if self._clock() >= until:
            del self._unknown[schema_id]
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
        self.schemas[schema_id] = fetched
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
        self.schemas.update(schemas)
