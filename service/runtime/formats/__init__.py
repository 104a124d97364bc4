"""Avro, Protobuf and JSON Schema in and out, through a schema registry (docs/formats.md).

``Formats`` is built once from the configuration. It gives the source stage
and direct tasks one decode function per topic that is not JSON (JSON topics
keep ``parse_event`` and its speed), the record-key decoders of pipelines
grouped by ``@key``, the ``SchemaGate`` that makes partitions wait for the
registry instead of blocking or dead-lettering, and the output encoders.

Each format's module imports its library (fastavro, protobuf, jsonschema)
only when a topic uses that format: without the ``registry`` extra, JSON-only
configurations run as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import orjson

from service.config import Config, PipelineConfig
from service.core.extract import Decode, KeyDecode
from service.core.pipeline import Pipeline
from service.errors import ConfigError
from service.runtime.formats.registry import Registry
from service.runtime.stats import LoopStats

if TYPE_CHECKING:  # their libraries are imported only when a format is used
    from service.runtime.formats.framing import Encode
    from service.runtime.formats.gate import SchemaGate
    from service.runtime.formats.registration import Registered

__all__ = ["Formats", "Registry"]


def value_decoder(
    fmt: str, registry: Registry | None, validate: bool = False, records_only: bool = True, what: str = "value"
) -> Callable[[bytes | None], Any]:
    """The decode function for one format (not ``json``)."""
    try:
        if fmt == "json_schema":
            from service.runtime.formats import json_schema

            return json_schema.decoder(registry, records_only, what, validate)
        if registry is None:
            raise ConfigError([f"format {fmt!r} needs a [schema_registry] url"])
        if fmt == "avro":
            from service.runtime.formats import avro

            return avro.decoder(registry, records_only, what)
        if fmt == "protobuf":
            from service.runtime.formats import protobuf

            return protobuf.decoder(registry, records_only, what)
    except ImportError as exc:
        raise ConfigError([f"format {fmt!r} needs the registry extra: pip install 'sessionizer[registry]' ({exc})"]) from None
    raise ValueError(f"no decoder for format {fmt!r}")


def key_text(value: Any) -> bytes:
    """A decoded key as the bytes a pipeline groups by: a string as it is, an integer in decimal, anything else as JSON."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).encode()
    return orjson.dumps(value)


def key_decoder(decode: Callable[[bytes | None], Any]) -> KeyDecode:
    def decode_key(raw: bytes | None) -> bytes | None:
        if raw is None:
            return None  # no key: a pipeline grouped by @key says so (no_key)
        return key_text(decode(raw))

    return decode_key


class Formats:
    """How every source topic is read, and every pipeline's output written."""

    def __init__(self, config: Config, registry: Registry | None = None) -> None:
        self.config = config
        if registry is None and config.schema_registry is not None and config.needs_registry:
            registry = Registry.from_config(config.schema_registry)
        self.registry = registry
        #: Output schemas registered at start-up (``register_outputs``), by pipeline.
        self.registered: list[tuple[PipelineConfig, Registered]] | None = None
        self.decoders: dict[str, Decode] = {}
        self.key_decoders: dict[str, KeyDecode] = {}
        #: topic -> (its values need schemas from the registry, its keys do)
        self.gated: dict[str, tuple[bool, bool]] = {}
        keyed = {t for p in config.pipelines if p.key == ("@key",) for t in p.sources}
        for topic in config.source_topics():
            source = config.source_config(topic)
            if source.format != "json":
                self.decoders[topic] = value_decoder(source.format, registry, source.validate)
            keys = topic in keyed and source.key_format != "string"
            if keys:
                self.key_decoders[topic] = key_decoder(value_decoder(source.key_format, registry, records_only=False, what="key"))
            values_gated = source.values_need_registry
            keys_gated = keys and source.keys_need_registry
            if values_gated or keys_gated:
                self.gated[topic] = (values_gated, keys_gated)

    @property
    def serialized_outputs(self) -> bool:
        return any(p.output.serialization != "json" for p in self.config.pipelines)

    def register_outputs(self) -> None:
        """Register every output schema (start-up); ``ConfigError`` when one is refused, ``RegistryUnavailable`` when it cannot be said."""
        if not self.serialized_outputs:
            return
        if self.registry is None:
            raise ConfigError(["output serialization needs a [schema_registry] url"])
        try:
            from service.runtime.formats.registration import register_outputs
        except ImportError as exc:
            raise ConfigError([f"output serialization needs the registry extra: pip install 'sessionizer[registry]' ({exc})"]) from None
        self.registered = register_outputs(self.config, self.registry.client)

    def attach_encoders(self, pipelines: Iterable[Pipeline]) -> None:
        """Give each pipeline's envelope the encoders of its registered schemas (registering them first if need be)."""
        if not self.serialized_outputs:
            return
        if self.registered is None:
            self.register_outputs()
        from service.runtime.formats.registration import encoder

        by_pipeline: dict[str, dict[tuple[str, str], Encode]] = {}
        for pipeline_config, registered in self.registered or []:
            shape = registered.shape
            events = by_pipeline.setdefault(pipeline_config.name, {})
            where = (shape.topic, _event_of(pipeline_config, shape.origin))
            if where in events:
                raise ConfigError([f"pipelines.{pipeline_config.name}: two kinds of record go to topic {where[0]!r} as event {where[1]!r}"])
            events[where] = encoder(registered)
        for pipeline in pipelines:
            pipeline.envelope.use_encoders(by_pipeline.get(pipeline.name, {}))

    def gate(self, stats: LoopStats) -> SchemaGate | None:
        """The ``SchemaGate`` for the topics whose records carry schema ids; None when none do."""
        if not self.gated or self.registry is None:
            return None
        from service.runtime.formats.gate import SchemaGate

        registry = self.config.schema_registry
        assert registry is not None
        return SchemaGate(self.registry, self.gated, stats, registry.retry_backoff_ms / 1000, registry.retry_backoff_max_ms / 1000)


def _event_of(pipeline: PipelineConfig, origin: str) -> str:
    """The ``event`` name of the records a shape's origin (``output``, ``rules.<name>``) writes."""
    if origin == "output":
        return pipeline.output.event
    name = origin.removeprefix("rules.")
    return next(rule.event for rule in pipeline.rules if rule.name == name)
