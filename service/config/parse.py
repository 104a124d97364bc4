"""From a TOML document to a ``Config``: one parser per section of the file.

Each parser reads its table through ``Table``, so every problem is collected
with its key, the value found and what is allowed, and parsing goes on: one
start-up shows the operator everything to fix. A section that cannot be built
comes back as None and is left out, so the result is only usable when
``problems`` stayed empty (``load_config`` raises otherwise).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from service.config.plugins import check_custom_class
from service.config.schema import (
    AGGREGATE_TYPES,
    ENV_PREFIX,
    FORMATS,
    GUARANTEES,
    KEY_FORMATS,
    LOG_FORMATS,
    LOG_LEVELS,
    NAME,
    OUTPUT_FORMATS,
    RULE_TYPES,
    SUBJECT_STRATEGIES,
    TIME_FORMATS,
    TIMESTAMP_FROM,
    TOPIC_TABLE,
    WINDOW_TYPES,
    AggregateConfig,
    ConditionConfig,
    Config,
    HttpConfig,
    LogConfig,
    OutputConfig,
    PairingConfig,
    PipelineConfig,
    RuleConfig,
    Scalar,
    SchemaRegistryConfig,
    SourceConfig,
    StateConfig,
    TopicsConfig,
    WindowConfig,
    default_of,
)
from service.config.table import Override, Overrides, Table


def parse_config(
    raw: dict[str, Any], problems: list[str], source: str = "<memory>", overrides: Overrides | None = None
) -> Config | None:
    """Turn a TOML document into a ``Config``; problems are appended, not raised.

    ``overrides`` names the environment variables that set keys (see
    ``service.config.loading``), so that a problem with one names the variable.
    """
    root = Table(raw, "", problems, overrides)
    app = root.table("app")
    app_id = app.topic("id", default_of(Config, "app_id"))
    instance_id = app.str("instance_id") or socket.gethostname()
    app_fields = {
        "app_id": app_id,
        "instance_id": instance_id,
        "state_dir": Path(app.str("state_dir", str(default_of(Config, "state_dir")))),
        "processing_guarantee": app.choice("processing_guarantee", GUARANTEES, default_of(Config, "processing_guarantee")),
        "commit_interval_ms": app.duration("commit_interval", default_of(Config, "commit_interval_ms"), positive=True),
        "catch_up_commit_interval_ms": app.duration(
            "catch_up_commit_interval", default_of(Config, "catch_up_commit_interval_ms"), positive=True
        ),
        "punctuate_interval_ms": app.duration("punctuate_interval", default_of(Config, "punctuate_interval_ms"), positive=True),
        "poll_batch": app.int("poll_batch", default_of(Config, "poll_batch"), minimum=1),
        "cache_max_keys": app.int("cache_max_keys", default_of(Config, "cache_max_keys")),
        "max_task_idle_ms": app.duration("max_task_idle", default_of(Config, "max_task_idle_ms")),
        "max_drift_ms": app.duration("max_drift", default_of(Config, "max_drift_ms"), positive=True),
        "idle_timeout_ms": app.duration("idle_timeout", default_of(Config, "idle_timeout_ms"), positive=True),
        "num_standby_replicas": app.int("num_standby_replicas", default_of(Config, "num_standby_replicas"), minimum=0),
        "static_membership": app.bool("static_membership", default_of(Config, "static_membership")),
        "pack_frames": app.bool("pack_frames", default_of(Config, "pack_frames")),
    }
    app.finish()

    kafka_table = root.table("kafka")
    # [kafka]: bootstrap_servers plus any librdkafka property.
    kafka = _kafka_properties(kafka_table, "a string, number or boolean librdkafka property")
    kafka.setdefault("bootstrap.servers", default_of(Config, "kafka")["bootstrap.servers"])
    consumer = _client_properties(kafka_table, "consumer")
    producer = _client_properties(kafka_table, "producer")
    kafka_table.finish()

    topics_table = root.table("topics")
    default_dlq = topics_table.topic("dead_letter", f"{app_id}-dead-letter")
    default_late = topics_table.topic("late", f"{app_id}-late")
    topics = TopicsConfig(
        partitions=topics_table.int("partitions", TopicsConfig.partitions, minimum=1),
        replication_factor=_replication_factor(topics_table),
        internal_prefix=topics_table.str("internal_prefix", TopicsConfig.internal_prefix, empty=True),
        create=topics_table.bool("create", TopicsConfig.create),
        purge_interval_ms=topics_table.duration("purge_interval", TopicsConfig.purge_interval_ms, positive=True),
        dead_letter=default_dlq,
        late=default_late,
    )
    topics_table.finish()

    state_table = root.table("state")
    state = StateConfig(
        cache_bytes=state_table.size("cache_bytes", StateConfig.cache_bytes),
        block_cache_bytes=state_table.size("block_cache_bytes", StateConfig.block_cache_bytes, minimum=2**20),
        write_buffer_bytes=state_table.size("write_buffer_bytes", StateConfig.write_buffer_bytes, minimum=2**20),
    )
    state_table.finish()

    http_table = root.table("http")
    http = HttpConfig(
        host=http_table.str("host", HttpConfig.host),
        port=http_table.int("port", HttpConfig.port),
        liveness_timeout_ms=http_table.duration("liveness_timeout", HttpConfig.liveness_timeout_ms, positive=True),
        sessions_token=http_table.str("sessions_token"),
        sessions_port=http_table.int("sessions_port", HttpConfig.sessions_port),
    )
    http_table.finish()

    log_table = root.table("log")
    log = LogConfig(
        level=log_table.choice("level", LOG_LEVELS, LogConfig.level), format=log_table.choice("format", LOG_FORMATS, LogConfig.format)
    )
    log_table.finish()

    schema_registry = _parse_schema_registry(root.table("schema_registry")) if root.has("schema_registry") else None

    pipelines_table = root.table("pipelines")
    pipelines = []
    for name in pipelines_table.data:
        pipelines.append(
            _parse_pipeline(name, pipelines_table, app_id, topics.internal_prefix, default_dlq, default_late)
        )
    if not pipelines_table.data:
        root.missing("pipelines", "at least one [pipelines.<name>] table")
    built = tuple(p for p in pipelines if p is not None)
    sources = _parse_sources(root.table("sources"), built)
    config = Config(
        **app_fields,
        pipelines=built,
        kafka=kafka,
        consumer=consumer,
        producer=producer,
        topics=topics,
        state=state,
        http=http,
        log=log,
        sources=sources,
        schema_registry=schema_registry,
        source=source,
    )
    _check_formats(root, config)
    root.finish()
    return config


#: ``[schema_registry]`` keys of the service's own; every other key is a client property.
_REGISTRY_KEYS = ("url", "timeout", "retry_backoff", "retry_backoff_max")


def _parse_schema_registry(table: Table) -> SchemaRegistryConfig | None:
    """``[schema_registry]``: ``url``, patience, and any other key passed to the client as a property."""
    url = table.str("url", required=True)
    if url is not None and not url.startswith(("http://", "https://")):
        table.fail("url", url, "an http:// or https:// URL (several separated by commas)")
    timeout = table.duration("timeout", 5_000, positive=True) or 5_000
    backoff = table.duration("retry_backoff", 1_000, positive=True) or 1_000
    backoff_max = table.duration("retry_backoff_max", 30_000, positive=True) or 30_000
    if backoff_max < backoff:
        table.fail("retry_backoff_max", table.get("retry_backoff_max"), f"a duration >= retry_backoff ({backoff} ms)")
    properties: dict[str, str | int | float | bool] = {}
    for key, value in table.data.items():
        if key in _REGISTRY_KEYS:
            continue
        table.read.add(key)
        if isinstance(value, dict) or not isinstance(value, (str, int, float, bool)):
            table.fail(key, value, "a string, number or boolean schema registry client property")
            continue
        properties[kafka_property(key)] = value
    for reserved in ("url", "timeout"):
        if reserved in properties:
            table.fail(reserved, properties[reserved], f"[schema_registry] {reserved} itself, not a property")
    table.finish()
    if url is None:
        return None
    return SchemaRegistryConfig(url, timeout, backoff, backoff_max, properties)


def _parse_sources(table: Table, pipelines: tuple[PipelineConfig, ...]) -> dict[str, SourceConfig]:
    """``[sources."<topic>"]``: how a source topic's values (and keys) are written."""
    read = {topic for pipeline in pipelines for topic in pipeline.sources}
    out: dict[str, SourceConfig] = {}
    for topic in table.data:
        spec = table.table(topic)
        fmt = spec.choice("format", FORMATS, "json")
        key_format = spec.choice("key_format", KEY_FORMATS, "string")
        validate = spec.bool("validate", False)
        if validate and fmt != "json_schema":
            spec.fail("validate", validate, 'true only with format = "json_schema"')
        spec.finish()
        if pipelines and topic not in read:
            unread = f"no pipeline reads topic {topic!r} (its sources are {sorted(read)})"
            override = table.overrides.get(spec.path)  # set when a variable made the entry
            if override is None:
                table.problems.append(f"{spec.path}: {unread}")
            elif "__" in override.variable[len(ENV_PREFIX) :]:  # SESSIONIZER__SOURCES__<TOPIC>__<KEY>
                table.problems.append(_unreachable_topic(override, topic, read, spec.data))
            else:  # SESSIONIZER__SOURCES, which spells the topic exactly
                table.problems.append(f"{override.describe(value=False)}: {unread}")
        out[topic] = SourceConfig(topic, fmt, key_format, validate)
    return out


def _unreachable_topic(override: Override, topic: str, read: set[str], settings: dict[str, Any]) -> str:
    """A ``SESSIONIZER__SOURCES__<TOPIC>__…`` variable names no topic read: say why, and the spelling that reaches it.

    The name is read in lower case and a shell allows no ``.`` or ``-`` in it,
    so the topic meant is likely one that reads the same once lower-cased with
    ``_`` for ``.`` and ``-``; ``SESSIONIZER__SOURCES`` spells topics exactly.
    """
    folded = [t for t in sorted(read) if t.lower().replace(".", "_").replace("-", "_") == topic]
    meant = folded[0] if len(folded) == 1 else "<topic>"
    entry = ", ".join(f"{key} = {_inline(value)}" for key, value in settings.items())
    return (
        f"{override.describe(value=False)}: no pipeline reads topic {topic!r} (its sources are {sorted(read)}); "
        "variable names are read in lower case and a shell allows no '.' or '-' in them, "
        f"so set {ENV_PREFIX}{TOPIC_TABLE.upper()}='{{ \"{meant}\" = {{ {entry} }} }}' instead"
    )


def _inline(value: Any) -> str:
    """A value as TOML writes it inline (strings quoted, booleans in lower case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def _check_formats(root: Table, config: Config) -> None:
    """What formats ask of the rest: a registry to read and write schemas, one key format per ``@key`` pipeline."""
    needing = config.needs_registry
    if needing and config.schema_registry is None and not root.has("schema_registry"):
        root.missing("schema_registry", f"a [schema_registry] table with url: {', '.join(needing)} use schemas")
    sources = config.sources
    for pipeline in config.pipelines:
        if pipeline.key == ("@key",):
            formats = {sources[t].key_format if t in sources else "string" for t in pipeline.sources}
            if len(formats) > 1:
                root.problems.append(
                    f"pipelines.{pipeline.name}: its sources' key_format differ ({', '.join(sorted(formats))}); "
                    'sources grouped by the record key (key = "@key") must write their keys alike'
                )


def _replication_factor(topics: Table) -> int:
    """``-1``, the default, leaves it to the broker (``default.replication.factor``), or a whole number >= 1."""
    value = topics.get("replication_factor")
    if value is None:
        return -1
    if isinstance(value, bool) or not isinstance(value, int) or not (value == -1 or value >= 1):
        topics.fail("replication_factor", value, "-1 (the broker's default.replication.factor) or a whole number >= 1")
        return -1
    return value


def kafka_property(key: str) -> str:
    """The librdkafka property a ``[kafka]`` key names.

    librdkafka's names use dots and never underscores, so an underscore stands
    for a dot: ``bootstrap_servers``, and ``SESSIONIZER__KAFKA__SASL_PASSWORD``,
    which a shell can export where ``…SASL.PASSWORD`` is not a valid name.
    """
    return key.replace("_", ".")


def _kafka_properties(table: Table, allowed: str) -> dict[str, str]:
    """The keys of ``table`` that are not tables themselves, as librdkafka properties and strings."""
    props: dict[str, str] = {}
    for key, value in table.data.items():
        if isinstance(value, dict):
            continue  # a nested table such as [kafka.consumer], read on its own
        table.read.add(key)
        if isinstance(value, bool):
            value = "true" if value else "false"
        if not isinstance(value, (str, int, float)):
            table.fail(key, value, allowed)
            continue
        props[kafka_property(key)] = str(value)
    return props


def _client_properties(kafka: Table, name: str) -> dict[str, str]:
    """``[kafka.consumer]`` or ``[kafka.producer]``: properties for one client only."""
    value = kafka.get(name)
    if value is not None and not isinstance(value, dict):
        kafka.fail(name, value, "a table of librdkafka properties")
        return {}
    return _kafka_properties(kafka.table(name), "a string, number or boolean")


def _parse_pipeline(
    name: str,
    parent: Table,
    app_id: str,
    prefix: str,
    default_dlq: str | None,
    default_late: str | None,
) -> PipelineConfig | None:
    table = parent.entry(name, "pipeline")
    sources = table.str_list("sources", required=True)
    for topic in sources:
        if not NAME.match(topic):
            table.fail("sources", topic, "topic names of letters, digits, '.', '_' and '-'")
    key = table.str_list("key", required=True)
    time_field = table.str("time")
    time_format = table.choice("time_format", TIME_FORMATS, "auto")
    window = _parse_window(table.table("window"))
    aggregates = _parse_aggregates(table.table("aggregates"))
    output = _parse_output(table.get("output"), table, window)
    late = table.topic("late_topic", default_late) or f"{app_id}-late"
    dlq = table.topic("dead_letter_topic", default_dlq) or f"{app_id}-dead-letter"
    rules = _parse_rules(table.table("rules"))
    pairing = _parse_pairing(table.table("pairing")) if table.has("pairing") else None
    _check_session_features(table, window, sources, aggregates, rules, pairing)
    table.finish()
    if window is None or output is None:
        return None
    return PipelineConfig(
        name=name,
        sources=sources,
        key=key,
        time=time_field,
        time_format=time_format,
        window=window,
        aggregates=aggregates,
        output=output,
        late_topic=late,
        dead_letter_topic=dlq,
        repartition_topic=f"{prefix}{app_id}-{name}-repartition",
        changelog_topic=f"{prefix}{app_id}-{name}-changelog",
        rules=rules,
        pairing=pairing,
    )


def _parse_window(table: Table) -> WindowConfig | None:
    if not table.data:
        table.missing("", "a table with type = " + " | ".join(WINDOW_TYPES))
        return None
    kind = table.kind(WINDOW_TYPES)
    if kind is None:
        return None
    grace = table.duration("grace", 0) or 0
    if kind == "session":
        gap = table.duration("gap", None, required=True, positive=True) or 0
        max_duration = table.duration("max_duration", None, positive=True)
        max_events = table.int("max_events", None, minimum=1)
        table.finish()
        return WindowConfig("session", grace, gap_ms=gap, max_duration_ms=max_duration, max_events=max_events)
    size = table.duration("size", None, required=True, positive=True) or 0
    if kind == "tumbling":
        table.finish()
        return WindowConfig("tumbling", grace, size_ms=size, advance_ms=size)
    advance = table.duration("advance", None, required=True, positive=True) or 0
    if size and advance and (advance > size or size % advance):
        table.fail("advance", table.get("advance"), f"a duration that divides the window size ({size} ms)")
    table.finish()
    return WindowConfig("hopping", grace, size_ms=size, advance_ms=advance)


def _parse_aggregates(table: Table) -> tuple[AggregateConfig, ...]:
    """``[pipelines.x.aggregates]``: ``name = { type = "sum", field = "stake" }``."""
    out = []
    for name, kind, spec in table.entries("aggregate", AGGREGATE_TYPES):
        aggregate_type = AGGREGATE_TYPES[kind]
        if aggregate_type.custom:
            custom = _parse_custom(name, kind, spec)
            if custom is not None:
                out.append(custom)
            continue
        field_path = spec.str("field", required=aggregate_type.needs_field)
        condition = None
        if aggregate_type.condition and field_path is not None:
            condition = ConditionConfig(field_path, _condition_values(spec))
        spec.finish()
        out.append(AggregateConfig(name=name, type=kind, field=field_path, condition=condition))
    return tuple(out)


def _parse_custom(name: str, kind: str, spec: Table) -> AggregateConfig | None:
    """``{ type = "custom", class = "package.module:ClassName", params = { … } }``.

    The class is imported and built here, so a typo or a wrong parameter is
    reported with the other problems at start-up rather than on the first event.
    """
    class_path = spec.str("class", required=True)
    params = spec.get("params")
    if params is None:
        params = {}
    elif not isinstance(params, dict):
        spec.fail("params", params, "a table of keyword arguments for the class")
        params = {}
    spec.finish()
    if class_path is None:
        return None
    if not check_custom_class(class_path, params, spec):
        return None
    return AggregateConfig(name=name, type=kind, class_path=class_path, params=params)


def _condition_values(spec: Table) -> tuple[Scalar, ...] | None:
    """``equals = v`` or ``in = [v, …]`` next to ``field``; neither means "present"."""
    equals = spec.get("equals")
    options = spec.get("in")
    if equals is not None and options is not None:
        spec.fail("in", options, "either equals or in, not both")
        return None
    if equals is not None:
        if not _is_scalar(equals):
            spec.fail("equals", equals, "a string, number or boolean")
            return None
        return (equals,)
    if options is not None:
        if not isinstance(options, list) or not options or not all(_is_scalar(o) for o in options):
            spec.fail("in", options, "a non-empty list of strings, numbers or booleans")
            return None
        return tuple(options)
    return None


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool))


def _parse_condition(parent: Table, name: str) -> ConditionConfig | None:
    """A rule's ``first`` or ``then``: ``{ field = "type", equals = "checkout" }``."""
    allowed = "a table such as { field = 'type', equals = 'checkout' }"
    value = parent.get(name)
    if value is None:
        parent.missing(name, allowed)
        return None
    if not isinstance(value, dict):
        parent.fail(name, value, allowed)
        return None
    spec = parent.table(name)
    field_path = spec.str("field", required=True)
    values = _condition_values(spec)
    spec.finish()
    if field_path is None:
        return None
    return ConditionConfig(field_path, values)


def _parse_rules(table: Table) -> tuple[RuleConfig, ...]:
    """``[pipelines.x.rules.<name>]`` tables (see docs/rules.md)."""
    out = []
    for name, kind, spec in table.entries("rule", RULE_TYPES):
        first = _parse_condition(spec, "first")
        then = _parse_condition(spec, "then")
        within = spec.duration("within", None, required=kind == "sequence")
        topic = spec.topic("topic", required=True)
        event = spec.str("event", name) or name
        keep = spec.str_list("keep") if spec.has("keep") else None
        spec.finish()
        if first is None or then is None or topic is None or (kind == "sequence" and within is None):
            continue
        out.append(RuleConfig(name, kind, first, then, within, topic, event, keep or None))
    return tuple(out)


def _parse_pairing(table: Table) -> PairingConfig:
    time_field = table.str("time_field", "ts") or "ts"
    lone_topic = table.topic("lone_topic")
    table.finish()
    return PairingConfig(time_field=time_field, lone_topic=lone_topic)


def _check_session_features(
    table: Table,
    window: WindowConfig | None,
    sources: tuple[str, ...],
    aggregates: tuple[AggregateConfig, ...],
    rules: tuple[RuleConfig, ...],
    pairing: PairingConfig | None,
) -> None:
    """Rules and pairing work on sessions; pairing needs two sources and renders no summary."""
    if window is not None and window.type != "session":
        if rules:
            table.fail("rules", [r.name for r in rules], 'rules only in a pipeline whose window.type = "session"')
        if pairing is not None:
            table.fail("pairing", {}, 'pairing only in a pipeline whose window.type = "session"')
    if pairing is not None:
        if len(sources) < 2:
            table.fail("sources", list(sources), "at least two source topics with [pairing]")
        if aggregates:
            table.fail(
                "aggregates",
                [a.name for a in aggregates],
                "no aggregates with [pairing]: a pairing pipeline emits the paired events, not a summary",
            )


def _parse_output(value: Any, pipeline: Table, window: WindowConfig | None) -> OutputConfig | None:
    """``output = "topic"`` or ``[pipelines.x.output]`` with ``topic``, ``event``, ``format``."""
    default_event = "session" if window is None or window.type == "session" else "session_summary"
    path = pipeline.key("output")
    overrides = pipeline.overrides
    if isinstance(value, str):
        value = {"topic": value}
        if path in overrides:  # the variable that set output set its topic
            overrides = {**overrides, f"{path}.topic": overrides[path]}
    if value is None:
        pipeline.missing("output", "a topic name or a table with topic")
        return None
    table = Table(value, path, pipeline.problems, overrides)
    topic = table.topic("topic", required=True)
    event = table.str("event", default_event) or default_event
    fmt = table.choice("format", OUTPUT_FORMATS, "envelope")
    timestamp = table.choice("timestamp", TIMESTAMP_FROM, "start")
    serialization = table.choice("serialization", FORMATS, "json")
    strategy = table.choice("subject_strategy", SUBJECT_STRATEGIES, "topic")
    if serialization != "json" and pipeline.has("pairing"):
        table.fail(
            "serialization",
            serialization,
            '"json" with [pairing]: a paired record merges the source events as they are, which no fixed schema describes',
        )
    table.finish()
    if topic is None:
        return None
    return OutputConfig(
        topic=topic, event=event, format=fmt, timestamp=timestamp, serialization=serialization, subject_strategy=strategy
    )
