"""What a valid configuration is: the values the service runs with, and the words a file may use.

Everything here is plain data with no parsing, so the layers above config
(core, state, runtime, ops) can import the types without the loader, and the
parser, the reference page's test and ``service.core.aggregates`` read one
vocabulary instead of keeping copies that drift apart.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

__all__ = [
    "GUARANTEES",
    "WINDOW_TYPES",
    "TIME_FORMATS",
    "OUTPUT_FORMATS",
    "TIMESTAMP_FROM",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "RULE_TYPES",
    "FORMATS",
    "KEY_FORMATS",
    "SUBJECT_STRATEGIES",
    "NAME",
    "KEYS",
    "AGGREGATE_TYPES",
    "AggregateType",
    "WindowConfig",
    "Scalar",
    "ConditionConfig",
    "AggregateConfig",
    "RuleConfig",
    "PairingConfig",
    "OutputConfig",
    "PipelineConfig",
    "TopicsConfig",
    "StateConfig",
    "SourceConfig",
    "SchemaRegistryConfig",
    "Config",
]

GUARANTEES = ("exactly_once", "at_least_once")
WINDOW_TYPES = ("session", "tumbling", "hopping")
TIME_FORMATS = ("auto", "epoch_s", "epoch_ms", "iso8601")
OUTPUT_FORMATS = ("envelope", "flat")
TIMESTAMP_FROM = ("start", "end")
LOG_FORMATS = ("auto", "json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")
RULE_TYPES = ("sequence", "absence")
#: How a source topic's values are written (``[sources."<topic>"] format``), and how output is
#: written (``[pipelines.<p>.output] serialization``): JSON as it is, or Confluent's wire
#: format (magic byte 0, a 4-byte schema id, the body) with a schema from the registry.
FORMATS = ("json", "avro", "protobuf", "json_schema")
#: How a source topic's record keys are written; only pipelines grouped by ``@key`` read them.
KEY_FORMATS = ("string", "avro", "protobuf", "json_schema")
#: Which subject an output schema is registered under: ``<topic>-value``, the record's full
#: name, or ``<topic>-<full name>`` (Confluent's TopicNameStrategy, RecordNameStrategy, TopicRecordNameStrategy).
SUBJECT_STRATEGIES = ("topic", "record", "topic_record")
#: What names of topics, pipelines, aggregates and rules may contain: what Kafka
#: allows in a topic name, since pipeline names end up in internal topic names.
NAME = re.compile(r"^[A-Za-z0-9._-]+$")

# What kind of value a key holds. The parser checks the value itself; the kind
# says how an environment variable's text becomes that value
# (``service.config.loading``), since the environment holds only text.
#: A string, taken exactly as written (``1e5`` stays the text "1e5").
TEXT = "text"
#: A whole number, written in decimal.
INTEGER = "integer"
#: ``true`` or ``false``.
BOOLEAN = "boolean"
#: A duration: text such as ``30m``, or a whole number of milliseconds.
DURATION = "duration"
#: A size: text such as ``64MiB``, or a whole number of bytes.
SIZE = "size"
#: A list: a TOML list (``["a", "b"]``) or comma-separated text (``a,b``).
LIST = "list"
#: A string, number or boolean: a TOML value when the text is one (``3``, ``true``, ``"x"``), the text otherwise.
VALUE = "value"
#: A table: an inline TOML table (``{ field = "page" }``).
TABLE = "table"

#: Environment variables that override keys start with this (``service.config.loading``).
ENV_PREFIX = "SESSIONIZER__"
#: The table whose entries are named by source topic (``[sources."<topic>"]``). A variable's name is
#: read in lower case and, from a shell, holds only letters, digits and ``_``, so
#: ``SESSIONIZER__SOURCES__<TOPIC>__<KEY>`` reaches only topics named so; ``SESSIONIZER__SOURCES``
#: holds entries as an inline TOML table, whose keys are topic names of any spelling.
TOPIC_TABLE = "sources"

#: Every key a config file accepts, as docs/configuration.md lists them, with the
#: kind of value it holds. ``<name>`` stands for a pipeline or aggregate name,
#: ``<property>`` for any librdkafka property. A unit test checks these keys
#: against what ``parse_config`` reads and against the document, so neither can drift.
KEYS: Mapping[str, str] = MappingProxyType(
    {
        "app.id": TEXT,
        "app.instance_id": TEXT,
        "app.state_dir": TEXT,
        "app.processing_guarantee": TEXT,
        "app.commit_interval": DURATION,
        "app.catch_up_commit_interval": DURATION,
        "app.punctuate_interval": DURATION,
        "app.poll_batch": INTEGER,
        "app.pack_frames": BOOLEAN,
        "app.cache_max_keys": INTEGER,
        "app.max_task_idle": DURATION,
        "app.idle_timeout": DURATION,
        "app.max_drift": DURATION,
        "app.num_standby_replicas": INTEGER,
        "app.static_membership": BOOLEAN,
        "state.cache_bytes": SIZE,
        "state.block_cache_bytes": SIZE,
        "state.write_buffer_bytes": SIZE,
        "kafka.bootstrap_servers": TEXT,
        "kafka.<property>": TEXT,
        "kafka.consumer.<property>": TEXT,
        "kafka.producer.<property>": TEXT,
        "topics.partitions": INTEGER,
        "topics.replication_factor": INTEGER,
        "topics.internal_prefix": TEXT,
        "topics.create": BOOLEAN,
        "topics.dead_letter": TEXT,
        "topics.late": TEXT,
        "topics.purge_interval": DURATION,
        "http.host": TEXT,
        "http.port": INTEGER,
        "http.liveness_timeout": DURATION,
        "http.sessions_token": TEXT,
        "http.sessions_port": INTEGER,
        "log.level": TEXT,
        "log.format": TEXT,
        "schema_registry.url": TEXT,
        "schema_registry.timeout": DURATION,
        "schema_registry.retry_backoff": DURATION,
        "schema_registry.retry_backoff_max": DURATION,
        "schema_registry.<property>": TEXT,
        "sources.<topic>.format": TEXT,
        "sources.<topic>.key_format": TEXT,
        "sources.<topic>.validate": BOOLEAN,
        "pipelines.<name>.sources": LIST,
        "pipelines.<name>.key": LIST,
        "pipelines.<name>.time": TEXT,
        "pipelines.<name>.time_format": TEXT,
        "pipelines.<name>.late_topic": TEXT,
        "pipelines.<name>.dead_letter_topic": TEXT,
        "pipelines.<name>.window.type": TEXT,
        "pipelines.<name>.window.grace": DURATION,
        "pipelines.<name>.window.gap": DURATION,
        "pipelines.<name>.window.max_duration": DURATION,
        "pipelines.<name>.window.max_events": INTEGER,
        "pipelines.<name>.window.size": DURATION,
        "pipelines.<name>.window.advance": DURATION,
        "pipelines.<name>.aggregates.<name>.type": TEXT,
        "pipelines.<name>.aggregates.<name>.field": TEXT,
        "pipelines.<name>.aggregates.<name>.equals": VALUE,
        "pipelines.<name>.aggregates.<name>.in": LIST,
        "pipelines.<name>.aggregates.<name>.class": TEXT,
        "pipelines.<name>.aggregates.<name>.params": TABLE,
        "pipelines.<name>.rules.<name>.type": TEXT,
        "pipelines.<name>.rules.<name>.first.field": TEXT,
        "pipelines.<name>.rules.<name>.first.equals": VALUE,
        "pipelines.<name>.rules.<name>.first.in": LIST,
        "pipelines.<name>.rules.<name>.then.field": TEXT,
        "pipelines.<name>.rules.<name>.then.equals": VALUE,
        "pipelines.<name>.rules.<name>.then.in": LIST,
        "pipelines.<name>.rules.<name>.within": DURATION,
        "pipelines.<name>.rules.<name>.topic": TEXT,
        "pipelines.<name>.rules.<name>.event": TEXT,
        "pipelines.<name>.rules.<name>.keep": LIST,
        "pipelines.<name>.pairing.time_field": TEXT,
        "pipelines.<name>.pairing.lone_topic": TEXT,
        "pipelines.<name>.output": TEXT,
        "pipelines.<name>.output.topic": TEXT,
        "pipelines.<name>.output.event": TEXT,
        "pipelines.<name>.output.format": TEXT,
        "pipelines.<name>.output.timestamp": TEXT,
        "pipelines.<name>.output.serialization": TEXT,
        "pipelines.<name>.output.subject_strategy": TEXT,
    }
)


@dataclass(frozen=True)
class AggregateType:
    """What a ``[pipelines.<p>.aggregates]`` entry of one ``type`` is made of.

    The parser reads an entry by these flags rather than by its type's name, so
    a new type is one line in ``AGGREGATE_TYPES`` and one class in
    ``service.core.aggregates``.
    """

    #: ``field`` is required; ``count`` without one counts every event.
    needs_field: bool
    #: ``equals`` or ``in`` next to ``field`` form the condition each event is tested against.
    condition: bool = False
    #: ``class`` and ``params`` name a user's class instead of a field.
    custom: bool = False


#: Every aggregate ``type`` a config may name, in the order the error message lists them.
#: The one list of names: ``service.core.aggregates`` gives each an implementation
#: (a class with that ``type_name``), and a unit test checks the two agree.
AGGREGATE_TYPES: Mapping[str, AggregateType] = MappingProxyType(
    {
        "count": AggregateType(needs_field=False),
        "sum": AggregateType(needs_field=True),
        "min": AggregateType(needs_field=True),
        "max": AggregateType(needs_field=True),
        "avg": AggregateType(needs_field=True),
        "first": AggregateType(needs_field=True),
        "last": AggregateType(needs_field=True),
        "count_distinct": AggregateType(needs_field=True),
        "count_by": AggregateType(needs_field=True),
        "any": AggregateType(needs_field=True, condition=True),
        "all": AggregateType(needs_field=True, condition=True),
        "custom": AggregateType(needs_field=False, custom=True),
    }
)


@dataclass(frozen=True)
class WindowConfig:
    type: str
    grace_ms: int
    gap_ms: int = 0
    size_ms: int = 0
    advance_ms: int = 0
    max_duration_ms: int | None = None
    max_events: int | None = None


Scalar = str | int | float | bool


@dataclass(frozen=True)
class ConditionConfig:
    """Which events a flag or a rule looks at (see ``service.core.conditions``)."""

    field: str
    #: The allowed values; None when the field only has to be present and not null.
    equals: tuple[Scalar, ...] | None = None

    def describe(self) -> str:
        if self.equals is None:
            return f"{self.field} is present"
        if len(self.equals) == 1:
            return f"{self.field} == {self.equals[0]!r}"
        return f"{self.field} in {list(self.equals)!r}"


@dataclass(frozen=True)
class AggregateConfig:
    name: str
    type: str
    field: str | None = None
    #: ``any`` and ``all``: the condition each event is tested against.
    condition: ConditionConfig | None = None
    #: ``custom``: ``"package.module:ClassName"`` and the keyword arguments it is built with.
    class_path: str | None = None
    params: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class RuleConfig:
    """A ``[pipelines.<p>.rules.<name>]`` table: a derived event from a pattern in a session."""

    name: str
    type: str
    first: ConditionConfig
    then: ConditionConfig
    #: ``sequence``: how long after ``first`` a ``then`` may come. ``absence``:
    #: how long to wait for ``then``; None waits until the session closes.
    within_ms: int | None
    topic: str
    event: str
    #: Fields carried from each matching event; None carries the whole event.
    keep: tuple[str, ...] | None = None


@dataclass(frozen=True)
class PairingConfig:
    """``[pipelines.<p>.pairing]``: each session becomes one record merging one event per source."""

    time_field: str = "ts"
    lone_topic: str | None = None


@dataclass(frozen=True)
class OutputConfig:
    topic: str
    event: str
    format: str = "envelope"
    timestamp: str = "start"
    #: How records are written: ``json``, or Avro, Protobuf or JSON Schema through the schema registry.
    serialization: str = "json"
    #: Which subject the schema of a serialized record is registered under (``SUBJECT_STRATEGIES``).
    subject_strategy: str = "topic"


@dataclass(frozen=True)
class PipelineConfig:
    name: str
    sources: tuple[str, ...]
    key: tuple[str, ...]
    time: str | None
    time_format: str
    window: WindowConfig
    aggregates: tuple[AggregateConfig, ...]
    output: OutputConfig
    late_topic: str
    dead_letter_topic: str
    repartition_topic: str
    changelog_topic: str
    rules: tuple[RuleConfig, ...] = ()
    pairing: PairingConfig | None = None
    #: Which layout of the state the internal topics above belong to (``service.core.layout``): 0 until a rescale.
    generation: int = 0

    def derived_topics(self) -> list[str]:
        """Topics this pipeline's rules and pairing write, besides output, late and dead letters."""
        topics = [rule.topic for rule in self.rules]
        if self.pairing is not None and self.pairing.lone_topic is not None:
            topics.append(self.pairing.lone_topic)
        return list(dict.fromkeys(topics))


@dataclass(frozen=True)
class TopicsConfig:
    partitions: int = 6
    #: -1: the broker's ``default.replication.factor``.
    replication_factor: int = -1
    internal_prefix: str = ""
    create: bool = True
    #: Defaults for the pipelines' ``dead_letter_topic`` and ``late_topic``.
    dead_letter: str = ""
    late: str = ""
    #: How often consumed repartition records are deleted.
    purge_interval_ms: int = 30_000


@dataclass(frozen=True)
class StateConfig:
    """``[state]``: the memory of every store of one process, each part bounded and shared.

    The defaults keep a process's state near 200 MiB however many keys are open:
    the rest of the state lives on disk, in RocksDB.
    """

    #: Decoded windows kept in memory between commits (the write-back cache), for all stores together.
    cache_bytes: int = 64 * 2**20
    #: RocksDB's block cache for data blocks, shared by all stores (bloom filters stay with their tables).
    block_cache_bytes: int = 64 * 2**20
    #: RocksDB's memtables, all stores together (a write-buffer manager).
    write_buffer_bytes: int = 64 * 2**20


@dataclass(frozen=True)
class SourceConfig:
    """``[sources."<topic>"]``: how one source topic's records are written."""

    topic: str
    #: The values: one of ``FORMATS``.
    format: str = "json"
    #: The keys, for pipelines grouped by ``@key``: one of ``KEY_FORMATS``.
    key_format: str = "string"
    #: ``json_schema`` only: check each value against its schema (slower; without it the body is only parsed).
    validate: bool = False

    @property
    def framed(self) -> bool:
        """Whether values or keys carry Confluent's framing (a schema id)."""
        return self.format != "json" or self.key_format != "string"

    @property
    def values_need_registry(self) -> bool:
        """Reading the values looks schemas up: JSON Schema bodies are only parsed, unless validated."""
        return self.format in ("avro", "protobuf") or self.validate

    @property
    def keys_need_registry(self) -> bool:
        """Reading the keys (of a pipeline grouped by ``@key``) looks schemas up; JSON Schema keys are only parsed."""
        return self.key_format in ("avro", "protobuf")


@dataclass(frozen=True)
class SchemaRegistryConfig:
    """``[schema_registry]``: where schemas are looked up and registered, and how patiently."""

    url: str
    #: Longest wait for one request; never unbounded (the client's own default is no timeout at all).
    timeout_ms: int = 5_000
    #: The first pause after a failed request while partitions wait, doubled each time up to ``retry_backoff_max_ms``.
    retry_backoff_ms: int = 1_000
    retry_backoff_max_ms: int = 30_000
    #: Other client properties (``basic.auth.user.info``, ``ssl.ca.location``…), passed as they are.
    properties: Mapping[str, str | int | float | bool] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class HttpConfig:
    """``[http]``: the operations port, and the queries' own port and token."""

    host: str = "0.0.0.0"
    #: 0: any free port.
    port: int = 9108
    #: ``/healthz`` fails once the loop has not moved for this long.
    liveness_timeout_ms: int = 60_000
    #: What ``/sessions/{key}`` requests must present; None leaves the queries open. A secret.
    sessions_token: str | None = None
    #: The port ``/sessions/{key}`` is served on; 0 serves it on ``port`` with ``/metrics``.
    sessions_port: int = 0


@dataclass(frozen=True)
class LogConfig:
    """``[log]``: how much is logged, and how."""

    #: One of ``LOG_LEVELS``.
    level: str = "info"
    #: One of ``LOG_FORMATS``: ``auto`` is JSON unless the output is a terminal.
    format: str = "auto"


@dataclass(frozen=True)
class Config:
    """The whole file. The ``[app]`` keys are its own fields; each other table is a dataclass.

    Every default is written here, once: the parser reads them from these
    fields (``default_of``), and docs/configuration.md shows them.
    """

    #: ``app.instance_id``: the host name unless given.
    instance_id: str
    pipelines: tuple[PipelineConfig, ...]
    app_id: str = "sessionizer"
    state_dir: Path = Path("./state")
    #: One of ``GUARANTEES``.
    processing_guarantee: str = "exactly_once"
    commit_interval_ms: int = 100
    #: How often to commit while behind (each poll comes back full); never more often than ``commit_interval_ms``.
    catch_up_commit_interval_ms: int = 1_000
    punctuate_interval_ms: int = 1_000
    poll_batch: int = 5_000
    cache_max_keys: int = 100_000
    #: How long a task's input that has delivered nothing yet holds the others back.
    max_task_idle_ms: int = 2_000
    #: How far (event time) an input may run ahead of the slowest one before it is paused.
    max_drift_ms: int = 300_000
    #: How long a source partition must have had no records, while read to its end, before
    #: its watermark follows the wall clock (``service.runtime.ends``).
    idle_timeout_ms: int = 30_000
    #: How many other instances keep a warm copy of each task's store, by tailing its changelog.
    num_standby_replicas: int = 0
    #: Join the group as a static member (``group.instance.id`` = the instance id, KIP-345).
    static_membership: bool = False
    #: Pack a poll's events per repartition partition into one record (``service.runtime.frames``).
    pack_frames: bool = True
    #: ``[kafka]``: librdkafka properties every client gets; ``[kafka.consumer]`` and ``[kafka.producer]``: one kind.
    kafka: dict[str, str] = dataclasses.field(default_factory=lambda: {"bootstrap.servers": "127.0.0.1:9092"})
    consumer: dict[str, str] = dataclasses.field(default_factory=dict)
    producer: dict[str, str] = dataclasses.field(default_factory=dict)
    topics: TopicsConfig = TopicsConfig()
    state: StateConfig = StateConfig()
    http: HttpConfig = HttpConfig()
    log: LogConfig = LogConfig()
    #: ``[sources."<topic>"]`` entries, by topic; a topic without one is JSON.
    sources: Mapping[str, SourceConfig] = dataclasses.field(default_factory=dict)
    schema_registry: SchemaRegistryConfig | None = None
    #: Where the configuration was read from (a path, or ``<memory>``).
    source: str = "<memory>"

    @property
    def exactly_once(self) -> bool:
        return self.processing_guarantee == "exactly_once"

    @property
    def needs_registry(self) -> list[str]:
        """What asks for a schema registry: sources whose records carry schemas, outputs serialized with one."""
        needing = [f'sources."{t}"' for t, s in self.sources.items() if s.values_need_registry or s.keys_need_registry]
        return needing + [f"pipelines.{p.name}.output" for p in self.pipelines if p.output.serialization != "json"]

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka["bootstrap.servers"]

    def source_config(self, topic: str) -> SourceConfig:
        """How ``topic``'s records are written (JSON values unless ``[sources]`` says otherwise)."""
        found = self.sources.get(topic)
        return found if found is not None else SourceConfig(topic)

    def source_topics(self) -> list[str]:
        """Every source topic, each once, in the order first named."""
        seen: dict[str, None] = {}
        for pipeline in self.pipelines:
            seen.update(dict.fromkeys(pipeline.sources))
        return list(seen)


def default_of(cls: type[Any], name: str) -> Any:
    """The default a dataclass declares for its field ``name``: the one place each default is written."""
    found = cls.__dataclass_fields__[name]
    if found.default is not dataclasses.MISSING:
        return found.default
    return found.default_factory()
