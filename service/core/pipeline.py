"""A pipeline's config compiled into the objects that run it, online or offline."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import orjson

from service.config import OutputConfig, PipelineConfig
from service.core.aggregates import Aggregate, build_aggregates
from service.core.extract import BadRecord, KeyExtractor, TimeExtractor
from service.core.inline import Extractor, extractor
from service.core.reasons import OTHER, REASON_CODE_HEADER
from service.core.rules import Rule, build_rules
from service.core.windows import WindowKind, build_window_kind


class OutputRecord(NamedTuple):
    """A record for some topic. The runtime produces it; offline mode writes it as a line.

    A named tuple, not a frozen dataclass: one is made for every window emitted, and a tuple is
    built in one step where a frozen dataclass sets each field through ``object.__setattr__``.
    """

    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


class Envelope:
    """Renders a closed window as the output record's value.

    ``envelope`` (the default) is seed 001's shape::

        {"event": "session", "user_id": "u1", "timestamp": "2023-03-15 13:20:00",
         "value": {"session_start_ms": …, "session_end_ms": …, "event_count": …,
                   "duration_ms": …, <aggregates>}, "user_attributes": {}}

    ``flat`` puts the key fields and values at the top level.

    The record is JSON unless the runtime gave an encoder for its topic and
    event name (``use_encoders``: Avro, Protobuf, JSON Schema, see
    ``service.core.shapes``), which gets the same dict.
    """

    def __init__(self, output: OutputConfig, keys: KeyExtractor) -> None:
        self.output = output
        self.keys = keys
        self._encoders: dict[tuple[str, str], Callable[[dict[str, Any]], bytes]] = {}
        #: Every closed window is rendered: the common shape (``envelope``, a key of one field) is
        #: built as one dict display instead of a dict updated step by step.
        self._key_field = keys.output_field
        self._enveloped = output.format != "flat"
        self._at_start = output.timestamp == "start"

    def use_encoders(self, encoders: Mapping[tuple[str, str], Callable[[dict[str, Any]], bytes]]) -> None:
        """Write the records for (topic, event name) with these instead of as JSON."""
        self._encoders = dict(encoders)

    def render(self, key: bytes, bounds: tuple[int, int], values: dict[str, Any]) -> bytes:
        return self.render_event(key, self.output.event, bounds[0] if self._at_start else bounds[1], values, self.output.topic)

    def render_event(self, key: bytes, event: str, moment_ms: int, values: dict[str, Any], topic: str | None = None) -> bytes:
        """The same shape for any event name and moment: rules' derived records (for ``topic``) use it too."""
        field = self._key_field
        if field is not None and self._enveloped:
            # The steps below, as one display: the same order, and a key field named like an envelope field
            # ("event", "timestamp", …) shares its place and the later value, as there.
            record: dict[str, Any] = {
                "event": event,
                field: key.decode(errors="replace"),
                "timestamp": format_utc(moment_ms),
                "value": values,
                "user_attributes": {},
            }
        else:
            record = {"event": event}
            record.update(self.keys.fields(key))
            record["timestamp"] = format_utc(moment_ms)
            if self._enveloped:
                record["value"] = values
                record["user_attributes"] = {}
            else:
                record.update(values)
        if self._encoders:
            encode = self._encoders.get((topic or self.output.topic, event))
            if encode is not None:
                return encode(record)
        return orjson.dumps(record)


def dead_letter(
    topic: str,
    error: str,
    key: bytes | None,
    value: bytes | None,
    source_topic: str,
    partition: int,
    offset: int,
    pipeline: str | None = None,
    code: str = OTHER,
) -> OutputRecord:
    """A record that cannot be used, kept as it was, with why and where it came from.

    The original key and value bytes are the record's key and value; the context
    travels in headers, the way Kafka Connect's dead-letter queues do it.
    ``code`` is the reason from the fixed set of ``service.core.reasons``.
    """
    headers = [
        ("sessionizer.error", error.encode()),
        (REASON_CODE_HEADER, code.encode()),
        ("sessionizer.topic", source_topic.encode()),
        ("sessionizer.partition", str(partition).encode()),
        ("sessionizer.offset", str(offset).encode()),
    ]
    if pipeline is not None:
        headers.append(("sessionizer.pipeline", pipeline.encode()))
    return OutputRecord(topic, key, value, tuple(headers))


#: ``YYYY-MM-DD HH:MM:`` by minute since the epoch, for ``format_utc``; emptied when it reaches ``_MINUTES_KEPT``.
_minutes: dict[int, str] = {}
_MINUTES_KEPT = 10_000
_SECONDS = tuple(f"{second:02d}" for second in range(60))


def format_utc(ms: int) -> str:
    """``YYYY-MM-DD HH:MM:SS`` in UTC, as ksqlDB's TIMESTAMPTOSTRING(…, 'UTC').

    Every emitted window is stamped, and windows close in the minutes stream
    time is passing: the text up to the minute is formatted once per minute.
    """
    seconds = ms // 1000
    minute = seconds // 60
    prefix = _minutes.get(minute)
    if prefix is None:
        if len(_minutes) >= _MINUTES_KEPT:
            _minutes.clear()
        prefix = _minutes[minute] = time.strftime("%Y-%m-%d %H:%M:", time.gmtime(minute * 60))
    return prefix + _SECONDS[seconds % 60]


class Pipeline:
    """Everything one ``[pipelines.<name>]`` table turns into."""

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        self.name = config.name
        self.key = KeyExtractor(config.key)
        self.time = TimeExtractor(config.time, config.time_format)
        self.aggregates: tuple[Aggregate, ...] = build_aggregates(config.aggregates)
        self.rules: tuple[Rule, ...] = build_rules(config)
        self.window: WindowKind = build_window_kind(config.window, self.aggregates, self.rules)
        self.envelope = Envelope(config.output, self.key)
        #: A pairing pipeline's closed session becomes the paired record, not a summary.
        self.emits_summary = config.pairing is None
        #: ``extract(event, record_ms, record_key=None)``: key and event time of a decoded event, the
        #: aggregates' checks passed; raises ``BadRecord`` for an unusable one (written out in line).
        self.extract: Extractor = extractor(self.key, self.time, self.aggregates)


def compile_pipelines(configs: tuple[PipelineConfig, ...]) -> tuple[Pipeline, ...]:
    return tuple(Pipeline(c) for c in configs)


__all__ = ["BadRecord", "Envelope", "OutputRecord", "Pipeline", "compile_pipelines", "dead_letter", "format_utc"]
