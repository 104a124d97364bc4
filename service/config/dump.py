"""The effective configuration, written back in the file's own layout.

``sessionizer check-config FILE --print`` shows what the service would run
with: the file, the environment overrides and every default, with secrets
redacted. The output is TOML that loads to the same configuration, so an
operator can diff it against the file or keep it as a record.
"""

from __future__ import annotations

import json
from typing import Any

from service.config.durations import format_duration_ms, format_size_bytes
from service.config.schema import AggregateConfig, ConditionConfig, Config, PipelineConfig, RuleConfig
from service.config.secrets import REDACTED, redact_properties, redact_url


def effective_config(config: Config) -> dict[str, Any]:
    """``config`` as nested tables keyed like the TOML file; secrets redacted."""
    kafka: dict[str, Any] = {"bootstrap_servers": config.bootstrap_servers}
    kafka.update(redact_properties({k: v for k, v in config.kafka.items() if k != "bootstrap.servers"}))
    if config.consumer:
        kafka["consumer"] = redact_properties(config.consumer)
    if config.producer:
        kafka["producer"] = redact_properties(config.producer)
    http: dict[str, Any] = {
        "host": config.http.host,
        "port": config.http.port,
        "liveness_timeout": format_duration_ms(config.http.liveness_timeout_ms),
        "sessions_port": config.http.sessions_port,
    }
    if config.http.sessions_token is not None:
        http["sessions_token"] = REDACTED
    document: dict[str, Any] = {
        "app": {
            "id": config.app_id,
            "instance_id": config.instance_id,
            "state_dir": str(config.state_dir),
            "processing_guarantee": config.processing_guarantee,
            "commit_interval": format_duration_ms(config.commit_interval_ms),
            "catch_up_commit_interval": format_duration_ms(config.catch_up_commit_interval_ms),
            "punctuate_interval": format_duration_ms(config.punctuate_interval_ms),
            "poll_batch": config.poll_batch,
            "pack_frames": config.pack_frames,
            "cache_max_keys": config.cache_max_keys,
            "max_task_idle": format_duration_ms(config.max_task_idle_ms),
            "max_drift": format_duration_ms(config.max_drift_ms),
            "idle_timeout": format_duration_ms(config.idle_timeout_ms),
            "num_standby_replicas": config.num_standby_replicas,
            "static_membership": config.static_membership,
        },
        "kafka": kafka,
        "topics": {
            "partitions": config.topics.partitions,
            "replication_factor": config.topics.replication_factor,
            "internal_prefix": config.topics.internal_prefix,
            "create": config.topics.create,
            "dead_letter": config.topics.dead_letter,
            "late": config.topics.late,
            "purge_interval": format_duration_ms(config.topics.purge_interval_ms),
        },
        "state": {
            "cache_bytes": format_size_bytes(config.state.cache_bytes),
            "block_cache_bytes": format_size_bytes(config.state.block_cache_bytes),
            "write_buffer_bytes": format_size_bytes(config.state.write_buffer_bytes),
        },
        "http": http,
        "log": {"level": config.log.level, "format": config.log.format},
    }
    registry = config.schema_registry
    if registry is not None:
        document["schema_registry"] = {
            "url": redact_url(registry.url),
            "timeout": format_duration_ms(registry.timeout_ms),
            "retry_backoff": format_duration_ms(registry.retry_backoff_ms),
            "retry_backoff_max": format_duration_ms(registry.retry_backoff_max_ms),
            **redact_properties(registry.properties),
        }
    if config.sources:
        document["sources"] = {
            topic: {"format": s.format, "key_format": s.key_format, "validate": s.validate}
            for topic, s in config.sources.items()
        }
    document["pipelines"] = {p.name: _pipeline(p) for p in config.pipelines}
    return document


def _pipeline(pipeline: PipelineConfig) -> dict[str, Any]:
    window = pipeline.window
    table: dict[str, Any] = {"type": window.type, "grace": format_duration_ms(window.grace_ms)}
    if window.type == "session":
        table["gap"] = format_duration_ms(window.gap_ms)
        if window.max_duration_ms is not None:
            table["max_duration"] = format_duration_ms(window.max_duration_ms)
        if window.max_events is not None:
            table["max_events"] = window.max_events
    else:
        table["size"] = format_duration_ms(window.size_ms)
        if window.type == "hopping":
            table["advance"] = format_duration_ms(window.advance_ms)
    out: dict[str, Any] = {
        "sources": list(pipeline.sources),
        "key": list(pipeline.key),
    }
    if pipeline.time is not None:
        out["time"] = pipeline.time
    out["time_format"] = pipeline.time_format
    out["late_topic"] = pipeline.late_topic
    out["dead_letter_topic"] = pipeline.dead_letter_topic
    out["window"] = table
    out["aggregates"] = {a.name: _aggregate(a) for a in pipeline.aggregates}
    if pipeline.rules:
        out["rules"] = {r.name: _rule(r) for r in pipeline.rules}
    if pipeline.pairing is not None:
        out["pairing"] = {"time_field": pipeline.pairing.time_field}
        if pipeline.pairing.lone_topic is not None:
            out["pairing"]["lone_topic"] = pipeline.pairing.lone_topic
    out["output"] = {
        "topic": pipeline.output.topic,
        "event": pipeline.output.event,
        "format": pipeline.output.format,
        "timestamp": pipeline.output.timestamp,
        "serialization": pipeline.output.serialization,
        "subject_strategy": pipeline.output.subject_strategy,
    }
    return out


def _aggregate(aggregate: AggregateConfig) -> dict[str, Any]:
    table: dict[str, Any] = {"type": aggregate.type}
    if aggregate.field is not None:
        table["field"] = aggregate.field
    if aggregate.condition is not None:
        table.update(_condition_values(aggregate.condition))
    if aggregate.class_path is not None:
        table["class"] = aggregate.class_path
        table["params"] = dict(aggregate.params)
    return table


def _rule(rule: RuleConfig) -> dict[str, Any]:
    table: dict[str, Any] = {
        "type": rule.type,
        "first": {"field": rule.first.field, **_condition_values(rule.first)},
        "then": {"field": rule.then.field, **_condition_values(rule.then)},
    }
    if rule.within_ms is not None:
        table["within"] = format_duration_ms(rule.within_ms)
    table["topic"] = rule.topic
    table["event"] = rule.event
    if rule.keep is not None:
        table["keep"] = list(rule.keep)
    return table


def _condition_values(condition: ConditionConfig) -> dict[str, Any]:
    if condition.equals is None:
        return {}
    if len(condition.equals) == 1:
        return {"equals": condition.equals[0]}
    return {"in": list(condition.equals)}


def to_toml(document: dict[str, Any]) -> str:
    """Nested tables of strings, numbers, booleans and lists as TOML text.

    Enough for ``effective_config``: plain values first, then sub-tables, and
    each aggregate as an inline table, the way people write them.
    """
    lines: list[str] = []
    _write_table(document, [], lines)
    return "\n".join(lines).strip() + "\n"


def _write_table(table: dict[str, Any], path: list[str], lines: list[str]) -> None:
    inline = path[-1:] == ["aggregates"] or path[-2:-1] == ["rules"]
    plain = {k: v for k, v in table.items() if inline or not isinstance(v, dict)}
    nested = {k: v for k, v in table.items() if k not in plain}
    if path and (plain or not nested):
        lines.append("")
        lines.append("[" + ".".join(_key(p) for p in path) + "]")
    for key, value in plain.items():
        lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in nested.items():
        _write_table(value, path + [key], lines)


def _key(name: str) -> str:
    bare = name.replace("_", "").replace("-", "").isalnum() and name.isascii()
    return name if bare else json.dumps(name)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        # JSON string escapes are all valid TOML basic-string escapes.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
