"""The service's configuration: a TOML file, overridable by environment variables.

Loading never stops at the first mistake. Every problem is collected with the
key it belongs to, the value found and what is allowed, so one start-up shows
the operator everything to fix.
"""

from __future__ import annotations

import importlib
import os
import socket
import tomllib
from pathlib import Path
from typing import Any

from service.config.durations import DURATION_HELP, parse_duration_ms
from service.config.schema import (
    AGGREGATE_TYPES,
    FLAG_TYPES,
    GUARANTEES,
    KEYS,
    LOG_FORMATS,
    LOG_LEVELS,
    NAME,
    OUTPUT_FORMATS,
    RULE_TYPES,
    TIME_FORMATS,
    TIMESTAMP_FROM,
    WINDOW_TYPES,
    AggregateConfig,
    ConditionConfig,
    Config,
    OutputConfig,
    PairingConfig,
    PipelineConfig,
    RuleConfig,
    Scalar,
    TopicsConfig,
    WindowConfig,
)
from service.errors import ConfigError

ENV_PREFIX = "SESSIONIZER__"

def load_config(path: str | Path, environ: dict[str, str] | None = None) -> Config:
    """Read ``path``, apply ``SESSIONIZER__…`` overrides from ``environ`` and validate."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError([f"config file {str(path)!r} does not exist"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"config file {str(path)!r} is not valid TOML: {exc}"]) from None
    problems: list[str] = []
    apply_env_overrides(raw, os.environ if environ is None else environ, problems)
    config = parse_config(raw, problems, source=str(path))
    if problems:
        raise ConfigError(problems)
    assert config is not None
    return config


def apply_env_overrides(raw: dict[str, Any], environ: dict[str, str], problems: list[str]) -> None:
    """``SESSIONIZER__APP__ID=x`` sets ``[app] id = "x"``; ``__`` separates levels.

    Values are read as TOML values when they parse (``100``, ``true``, ``["a", "b"]``)
    and as plain strings otherwise. Librdkafka property names contain dots:
    ``SESSIONIZER__KAFKA__SASL_PASSWORD`` (or ``…SASL.PASSWORD`` where the
    environment allows dots in names) reaches ``[kafka] "sasl.password"``.
    """
    for name, text in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX):].split("__")]
        if not all(parts):
            problems.append(f"environment variable {name}: empty path segment")
            continue
        table = raw
        for part in parts[:-1]:
            child = table.setdefault(part, {})
            if not isinstance(child, dict):
                problems.append(f"environment variable {name}: {part!r} is not a table")
                break
            table = child
        else:
            table[parts[-1]] = _env_value(text)


def _env_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


class _Table:
    """Typed reads from one TOML table, recording problems under a dotted path."""

    def __init__(self, data: Any, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.fail("", data, "a table")
            data = {}
        self.data: dict[str, Any] = data
        self.read: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, value: Any, allowed: str) -> None:
        where = self.key(name) if name else self.path
        self.problems.append(f"{where} = {value!r}: expected {allowed}")

    def get(self, name: str) -> Any:
        self.read.add(name)
        return self.data.get(name)

    def has(self, name: str) -> bool:
        return name in self.data

    def str(
        self, name: str, default: str | None = None, *, required: bool = False, empty: bool = False
    ) -> str | None:
        value = self.get(name)
        if value is None:
            if required:
                self.problems.append(f"{self.key(name)} is missing: expected a non-empty string")
            return default
        if not isinstance(value, str) or not (value or empty):
            self.fail(name, value, "a string" if empty else "a non-empty string")
            return default
        return value

    def topic(self, name: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self.str(name, default, required=required)
        # A default is checked where it was written (an invalid [topics] late is reported once).
        if value is not None and self.has(name) and not NAME.match(value):
            self.fail(name, value, "a topic name of letters, digits, '.', '_' and '-'")
        return value

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(name)
        if value is None:
            return default
        if value not in choices:
            self.fail(name, value, "one of " + ", ".join(repr(c) for c in choices))
            return default
        return value

    def int(self, name: str, default: int | None, *, minimum: int = 0) -> int | None:
        value = self.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(name, value, f"a whole number >= {minimum}")
            return default
        return value

    def bool(self, name: str, default: bool) -> bool:
        value = self.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(name, value, "true or false")
            return default
        return value

    def duration(self, name: str, default: int | None, *, required: bool = False, positive: bool = False) -> int | None:
        value = self.get(name)
        if value is None:
            if required:
                self.problems.append(f"{self.key(name)} is missing: expected {DURATION_HELP}")
            return default
        try:
            ms = parse_duration_ms(value)
        except ValueError:
            self.fail(name, value, DURATION_HELP)
            return default
        if positive and ms <= 0:
            self.fail(name, value, "a duration greater than zero")
            return default
        return ms

    def str_list(self, name: str, *, required: bool = False) -> tuple[str, ...]:
        value = self.get(name)
        if value is None:
            if required:
                self.problems.append(f"{self.key(name)} is missing: expected a string or a list of strings")
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            self.fail(name, value, "a non-empty string or a list of non-empty strings")
            return ()
        return tuple(value)

    def table(self, name: str) -> _Table:
        return _Table(self.get(name), self.key(name), self.problems)

    def properties(self, name: str) -> dict[str, str]:
        """A table of librdkafka properties, passed through as strings (see ``kafka_property``)."""
        value = self.get(name)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(name, value, "a table of librdkafka properties")
            return {}
        out: dict[str, str] = {}
        for key, item in value.items():
            if isinstance(item, dict):
                continue  # a nested table such as [kafka.consumer], read on its own
            if isinstance(item, bool):
                item = "true" if item else "false"
            if not isinstance(item, (str, int, float)):
                self.problems.append(f"{self.key(name)}.{key} = {item!r}: expected a string, number or boolean")
                continue
            out[kafka_property(key)] = str(item)
        return out

    def finish(self, *, allow_extra: bool = False) -> None:
        if allow_extra:
            return
        for name in self.data:
            if name not in self.read:
                self.problems.append(f"{self.key(name)}: unknown key")


def parse_config(raw: dict[str, Any], problems: list[str], source: str = "<memory>") -> Config | None:
    """Turn a TOML document into a ``Config``; problems are appended, not raised."""
    root = _Table(raw, "", problems)
    app = root.table("app")
    app_id = app.topic("id", "sessionizer") or "sessionizer"
    instance_id = app.str("instance_id") or socket.gethostname()
    state_dir = Path(app.str("state_dir", "./state") or "./state")
    guarantee = app.choice("processing_guarantee", GUARANTEES, "exactly_once")
    commit_ms = app.duration("commit_interval", 100, positive=True) or 100
    punctuate_ms = app.duration("punctuate_interval", 1000, positive=True) or 1000
    poll_batch = app.int("poll_batch", 5000, minimum=1) or 5000
    cache_max_keys = app.int("cache_max_keys", 100_000, minimum=0)
    app.finish()

    kafka_table = root.table("kafka")
    kafka = _kafka_properties(kafka_table)
    consumer = kafka_table.properties("consumer")
    producer = kafka_table.properties("producer")
    kafka_table.finish()

    topics_table = root.table("topics")
    default_dlq = topics_table.topic("dead_letter", f"{app_id}-dead-letter")
    default_late = topics_table.topic("late", f"{app_id}-late")
    topics = TopicsConfig(
        partitions=topics_table.int("partitions", 6, minimum=1) or 6,
        replication_factor=topics_table.int("replication_factor", 1, minimum=1) or 1,
        internal_prefix=topics_table.str("internal_prefix", "", empty=True) or "",
        create=topics_table.bool("create", True),
        purge_interval_ms=topics_table.duration("purge_interval", 30_000, positive=True) or 30_000,
        dead_letter=default_dlq or f"{app_id}-dead-letter",
        late=default_late or f"{app_id}-late",
    )
    topics_table.finish()

    http = root.table("http")
    http_host = http.str("host", "0.0.0.0") or "0.0.0.0"
    http_port = http.int("port", 9108, minimum=0)
    liveness_ms = http.duration("liveness_timeout", 60_000, positive=True) or 60_000
    http.finish()

    log = root.table("log")
    log_level = log.choice("level", LOG_LEVELS, "info")
    log_format = log.choice("format", LOG_FORMATS, "auto")
    log.finish()

    pipelines_table = root.table("pipelines")
    pipelines = []
    for name in pipelines_table.data:
        pipelines.append(
            _parse_pipeline(name, pipelines_table, app_id, topics.internal_prefix, default_dlq, default_late)
        )
    if not pipelines_table.data:
        problems.append("pipelines is missing: expected at least one [pipelines.<name>] table")
    root.finish()

    return Config(
        app_id=app_id,
        instance_id=instance_id,
        state_dir=state_dir,
        processing_guarantee=guarantee,
        commit_interval_ms=commit_ms,
        punctuate_interval_ms=punctuate_ms,
        poll_batch=poll_batch,
        cache_max_keys=cache_max_keys if cache_max_keys is not None else 100_000,
        kafka=kafka,
        consumer=consumer,
        producer=producer,
        topics=topics,
        http_host=http_host,
        http_port=http_port if http_port is not None else 9108,
        http_liveness_timeout_ms=liveness_ms,
        log_level=log_level,
        log_format=log_format,
        pipelines=tuple(p for p in pipelines if p is not None),
        source=source,
    )


def kafka_property(key: str) -> str:
    """The librdkafka property a ``[kafka]`` key names.

    librdkafka's names use dots and never underscores, so an underscore stands
    for a dot: ``bootstrap_servers``, and ``SESSIONIZER__KAFKA__SASL_PASSWORD``,
    which a shell can export where ``…SASL.PASSWORD`` is not a valid name.
    """
    return key.replace("_", ".")


def _kafka_properties(table: _Table) -> dict[str, str]:
    """``[kafka]``: ``bootstrap_servers`` plus any librdkafka property."""
    props: dict[str, str] = {}
    for key, value in table.data.items():
        if isinstance(value, dict):
            continue
        table.read.add(key)
        name = kafka_property(key)
        if isinstance(value, bool):
            value = "true" if value else "false"
        if not isinstance(value, (str, int, float)):
            table.fail(key, value, "a string, number or boolean librdkafka property")
            continue
        props[name] = str(value)
    props.setdefault("bootstrap.servers", "127.0.0.1:9092")
    return props


def _parse_pipeline(
    name: str,
    parent: _Table,
    app_id: str,
    prefix: str,
    default_dlq: str | None,
    default_late: str | None,
) -> PipelineConfig | None:
    table = parent.table(name)
    if not NAME.match(name):
        table.problems.append(f"{table.path}: pipeline name {name!r} must use letters, digits, '.', '_' and '-'")
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


def _parse_window(table: _Table) -> WindowConfig | None:
    if not table.data:
        table.problems.append(f"{table.path} is missing: expected a table with type = " + " | ".join(WINDOW_TYPES))
        return None
    kind = table.get("type")
    if kind not in WINDOW_TYPES:
        table.fail("type", kind, "one of " + ", ".join(repr(t) for t in WINDOW_TYPES))
        table.finish(allow_extra=True)
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


CUSTOM_METHODS = ("init", "add", "merge", "result")


def _parse_aggregates(table: _Table) -> tuple[AggregateConfig, ...]:
    """``[pipelines.x.aggregates]``: ``name = { type = "sum", field = "stake" }``."""
    out = []
    for name in table.data:
        spec = table.table(name)
        if not NAME.match(name):
            table.problems.append(f"{spec.path}: aggregate name {name!r} must use letters, digits, '.', '_' and '-'")
        kind = spec.get("type")
        if kind not in AGGREGATE_TYPES:
            spec.fail("type", kind, "one of " + ", ".join(repr(t) for t in AGGREGATE_TYPES))
            spec.finish(allow_extra=True)
            continue
        if kind == "custom":
            custom = _parse_custom(name, spec)
            if custom is not None:
                out.append(custom)
            continue
        field_path = spec.str("field", required=AGGREGATE_TYPES[kind])
        condition = None
        if kind in FLAG_TYPES and field_path is not None:
            condition = ConditionConfig(field_path, _condition_values(spec))
        spec.finish()
        out.append(AggregateConfig(name=name, type=kind, field=field_path, condition=condition))
    table.finish(allow_extra=True)
    return tuple(out)


def _parse_custom(name: str, spec: _Table) -> AggregateConfig | None:
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
    if not _check_custom_class(class_path, params, spec):
        return None
    return AggregateConfig(name=name, type="custom", class_path=class_path, params=params)


def import_class(class_path: str) -> Any:
    """``"package.module:ClassName"`` -> the class; raises ``ImportError`` or ``AttributeError``."""
    module_name, _, class_name = class_path.partition(":")
    if not module_name or not class_name:
        raise ImportError("expected 'module:ClassName'")
    return getattr(importlib.import_module(module_name), class_name)


def _check_custom_class(class_path: str, params: dict[str, Any], spec: _Table) -> bool:
    allowed = "an importable 'package.module:ClassName' with methods " + ", ".join(CUSTOM_METHODS)
    try:
        cls = import_class(class_path)
    except Exception as exc:  # user code: any error while importing is a config problem
        spec.fail("class", class_path, f"{allowed} ({type(exc).__name__}: {exc})")
        return False
    missing = [m for m in CUSTOM_METHODS if not callable(getattr(cls, m, None))]
    if missing:
        spec.fail("class", class_path, f"{allowed} (missing: {', '.join(missing)})")
        return False
    try:
        cls(**params)
    except Exception as exc:
        spec.fail("params", params, f"keyword arguments {class_path} accepts ({type(exc).__name__}: {exc})")
        return False
    return True


def _condition_values(spec: _Table) -> tuple[Scalar, ...] | None:
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


def _parse_condition(parent: _Table, name: str) -> ConditionConfig | None:
    """A rule's ``first`` or ``then``: ``{ field = "type", equals = "checkout" }``."""
    allowed = "a table such as { field = 'type', equals = 'checkout' }"
    value = parent.get(name)
    if value is None:
        parent.problems.append(f"{parent.key(name)} is missing: expected {allowed}")
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


def _parse_rules(table: _Table) -> tuple[RuleConfig, ...]:
    """``[pipelines.x.rules.<name>]`` tables (see docs/rules.md)."""
    out = []
    for name in table.data:
        spec = table.table(name)
        if not NAME.match(name):
            table.problems.append(f"{spec.path}: rule name {name!r} must use letters, digits, '.', '_' and '-'")
        kind = spec.get("type")
        if kind not in RULE_TYPES:
            spec.fail("type", kind, "one of " + ", ".join(repr(t) for t in RULE_TYPES))
            spec.finish(allow_extra=True)
            continue
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
    table.finish(allow_extra=True)
    return tuple(out)


def _parse_pairing(table: _Table) -> PairingConfig:
    time_field = table.str("time_field", "ts") or "ts"
    lone_topic = table.topic("lone_topic")
    table.finish()
    return PairingConfig(time_field=time_field, lone_topic=lone_topic)


def _check_session_features(
    table: _Table,
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


def _parse_output(value: Any, pipeline: _Table, window: WindowConfig | None) -> OutputConfig | None:
    """``output = "topic"`` or ``[pipelines.x.output]`` with ``topic``, ``event``, ``format``."""
    default_event = "session" if window is None or window.type == "session" else "session_summary"
    if isinstance(value, str):
        value = {"topic": value}
    if value is None:
        pipeline.problems.append(f"{pipeline.key('output')} is missing: expected a topic name or a table with topic")
        return None
    table = _Table(value, pipeline.key("output"), pipeline.problems)
    topic = table.topic("topic", required=True)
    event = table.str("event", default_event) or default_event
    fmt = table.choice("format", OUTPUT_FORMATS, "envelope")
    timestamp = table.choice("timestamp", TIMESTAMP_FROM, "start")
    table.finish()
    if topic is None:
        return None
    return OutputConfig(topic=topic, event=event, format=fmt, timestamp=timestamp)
