"""``sessionizer process``: the same pipelines over a JSONL file, no broker.

For trying a config and for backfills. Every line is one event, as it would
arrive on a source topic: a JSON object, or, for a topic whose
``[sources."<topic>"] format`` is ``avro``, ``protobuf`` or ``json_schema``,
the record's bytes in Confluent's wire format written as base64 (one record a
line; its schema is fetched from ``[schema_registry]``). Output is always
written as JSON lines, whatever ``output.serialization`` says: the lines are
for people and tests, and nothing is registered. Stream time advances with the events exactly as in
the service; the end of the input closes every window that is still open.
Each output line is a record the service would produce:
``{"topic": …, "key": …, "value": …, "headers": {…}}``.

Which topic a line came from matters to pairing. ``--topic T`` says every line
came from T. With ``--wrapped`` each line says it itself, in the shape of the
output lines: ``{"topic": "analytics", "value": {…the event…}}``; each
pipeline then sees the lines of its own source topics only, as in the service.
"""

from __future__ import annotations

import base64
import binascii
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from service.config import Config
from service.core.extract import BadRecord, Decode, parse_event
from service.core.pipeline import OutputRecord, Pipeline, compile_pipelines
from service.core.processor import WindowProcessor
from service.core.reasons import BAD_FRAMING
from service.core.source import Forward, Reject, Route, SourceStage
from service.core.watermarks import Watermarks, source_id
from service.errors import UsageError
from service.runtime.formats import Formats
from service.state.memory import StoreMemory
from service.state.store import WindowStore

#: Events between two simulated commits, which bound the write-back cache.
COMMIT_EVERY = 5_000


@dataclass
class OfflineSummary:
    lines: int = 0
    records: dict[str, int] = field(default_factory=dict)


def process_lines(
    config: Config,
    lines: Iterable[bytes],
    write: Any,
    topic: str | None = None,
    state_dir: Path | None = None,
    wrapped: bool = False,
) -> OfflineSummary:
    """Run every pipeline reading ``topic`` (all pipelines when None) over ``lines``.

    With ``wrapped``, every line is ``{"topic": …, "value": …}`` and goes to the
    pipelines reading its topic.
    """
    if wrapped and topic is not None:
        raise ValueError("a topic and wrapped lines exclude each other: wrapped lines name their own topic")
    pipelines = [p for p in compile_pipelines(config.pipelines) if topic is None or topic in p.config.sources]
    if not pipelines:
        raise ValueError(f"no pipeline reads topic {topic!r}")
    summary = OfflineSummary()
    out: list[OutputRecord] = []
    decoders = offline_decoders(config)
    stage = SourceStage(pipelines, decoders)
    # Without a topic every pipeline reads every line, as from its first source;
    # a wrapped line that names no usable topic is dead-lettered for all of them.
    routes = stage.routes(topic) if topic is not None else [Route(p, 0) for p in pipelines]
    decode = stage.decoder(topic) if topic is not None else _common_decoder(pipelines, decoders)
    reject: Reject = out.append
    with tempfile.TemporaryDirectory(prefix="sessionizer-offline-") as tmp:
        root = state_dir or Path(tmp)
        memory = StoreMemory(config.state)
        runs = [_Run(p, WindowStore(root / p.name, p.window, config.cache_max_keys, memory), out, wrapped) for p in pipelines]
        forward = _forward_to(runs)
        at = _Cursor(topic or "-")
        process = stage.process
        for number, line in enumerate(lines):
            if not line.strip():
                continue
            summary.lines += 1
            line = line.rstrip(b"\r\n")
            at.number = number
            if wrapped:
                _process_wrapped(stage, routes, line, at, forward, reject)
            else:
                process(routes, line, None, at, forward, reject, decode)
            if summary.lines % COMMIT_EVERY == 0:
                _commit(runs)
                _drain(out, write, summary)
        for run in runs:
            run.processor.close_due()
            run.processor.close_all()
        _commit(runs)
        _drain(out, write, summary)
        for run in runs:
            run.store.close()
    return summary


def process_file(
    config: Config, input_path: Path, output: IO[str], topic: str | None = None, wrapped: bool = False
) -> OfflineSummary:
    with open(input_path, "rb") as lines:
        return process_lines(config, lines, output.write, topic, wrapped=wrapped)


def process_command(
    config: Config, input_path: Path, output_path: Path | None, topic: str | None = None, wrapped: bool = False
) -> OfflineSummary:
    """``sessionizer process``: the arguments are checked before anything is written.

    A ``--topic`` no pipeline reads, an ``--input`` that cannot be read or an
    ``--output`` that cannot be written is a ``UsageError``, one line.
    """
    if topic is not None and not any(topic in p.sources for p in config.pipelines):
        sources = ", ".join(config.source_topics())
        raise UsageError(f"--topic {topic!r}: no pipeline reads it (the source topics are {sources})")
    with _open(input_path, "rb", "cannot read --input") as lines:
        if output_path is None:
            return process_lines(config, lines, sys.stdout.write, topic, wrapped=wrapped)
        with _open(output_path, "w", "cannot write --output") as output:
            return process_lines(config, lines, output.write, topic, wrapped=wrapped)


def _open(path: Path, mode: str, what: str) -> IO[Any]:
    try:
        return open(path, mode)
    except OSError as exc:
        raise UsageError(f"{what} {str(path)!r}: {exc.strerror or type(exc).__name__}") from None


@dataclass
class _Run:
    """One pipeline over the file.

    Wrapped lines name their topic: each source topic is then a source with its
    own watermark, as each source partition is in the service, and stream time
    is the slowest topic's (``service.core.watermarks``). A source topic with no
    line holds stream time back until the end of the input, which closes
    everything. Plain lines are one source read in order.
    """

    pipeline: Pipeline
    store: WindowStore
    out: list[OutputRecord]
    per_topic: bool = False

    def __post_init__(self) -> None:
        self.processor = WindowProcessor(self.pipeline, self.store, self.out)
        sources = range(len(self.pipeline.config.sources))
        self.watermarks = Watermarks(source_id(index, 0) for index in sources) if self.per_topic else None

    def forward(self, route: Route, key: bytes, time_ms: int, event: dict[str, Any], raw: bytes) -> None:
        marks = self.watermarks
        watermark = None if marks is None else marks.advance(source_id(route.index, 0), time_ms)
        self.processor.process(key, time_ms, event, raw, route.index, watermark)

    def commit(self) -> None:
        if self.watermarks is not None:
            self.processor.advance(self.watermarks.stream_time())
        self.processor.close_due()
        self.store.apply(self.store.prepare(), checkpoint=None)


class _Cursor:
    """Offline mode's ``Origin``: the line being processed, its number standing for the offset.

    One object updated line by line, so reading a line builds nothing for a
    dead letter it may never need.
    """

    __slots__ = ("source", "number")

    def __init__(self, source: str) -> None:
        self.source = source
        self.number = 0

    def topic(self) -> str:
        return self.source

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self.number

    def key(self) -> bytes | None:
        return None


def _forward_to(runs: list[_Run]) -> Forward:
    """An accepted event goes straight to its pipeline's processor."""
    processors = {run.pipeline: run.forward for run in runs}

    def forward(route: Route, key: bytes, time_ms: int, event: dict[str, Any], raw: bytes) -> None:
        processors[route.pipeline](route, key, time_ms, event, raw)

    return forward


def offline_decoders(config: Config) -> dict[str, Decode]:
    """Per topic that is not JSON: a base64 line, decoded from Confluent's wire format (schemas fetched as needed)."""
    formats = Formats(config)
    return {topic: _from_base64(decode) for topic, decode in formats.decoders.items()}


def _from_base64(decode: Decode) -> Decode:
    def decode_line(line: bytes | None) -> dict[str, Any]:
        try:
            raw = base64.b64decode(line or b"", validate=True)
        except (binascii.Error, ValueError):
            raise BadRecord("offline line is not base64 text of a framed record", BAD_FRAMING) from None
        return decode(raw)

    return decode_line


def _common_decoder(pipelines: list[Pipeline], decoders: dict[str, Decode]) -> Decode:
    """Without ``--topic``, lines are read as every pipeline's first source is: they must agree."""
    firsts = {p.config.sources[0] for p in pipelines}
    chosen: dict[int, Decode] = {id(decoders.get(t, parse_event)): decoders.get(t, parse_event) for t in firsts}
    if len(chosen) > 1:
        raise UsageError(f"the pipelines' first sources ({', '.join(sorted(firsts))}) use different formats: pass --topic or --wrapped")
    return next(iter(chosen.values()))


def _process_wrapped(
    stage: SourceStage, everyone: list[Route], line: bytes, at: _Cursor, forward: Forward, reject: Reject
) -> None:
    """A ``{"topic": …, "value": …}`` line: the event goes to the pipelines reading that topic.

    A line that is not such a wrapper names no topic, so it is dead-lettered for ``everyone``.
    """
    try:
        wrapper = parse_event(line)
        topic = wrapper.get("topic")
        if not isinstance(topic, str) or not topic:
            raise BadRecord('wrapped line without a "topic" string')
        event = wrapper.get("value")
        decode = stage.decoder(topic)
        if decode is not parse_event and isinstance(event, str):
            at.source = topic
            stage.process(stage.routes(topic), event.encode(), None, at, forward, reject, decode)
            return
        if not isinstance(event, dict):
            raise BadRecord('wrapped line whose "value" is not a JSON object (or, for a topic that is not JSON, base64 text)')
    except BadRecord as exc:
        at.source = "-"
        stage.reject_all(everyone, str(exc), line, at, reject)
        return
    at.source = topic
    stage.process_event(stage.routes(topic), event, orjson.dumps(event), None, at, forward, reject)


def _commit(runs: list[_Run]) -> None:
    for run in runs:
        run.commit()


def _drain(out: list[OutputRecord], write: Any, summary: OfflineSummary) -> None:
    for record in out:
        write(render_record(record) + "\n")
        summary.records[record.topic] = summary.records.get(record.topic, 0) + 1
    out.clear()


def render_record(record: OutputRecord) -> str:
    """One output record as a JSON line; JSON values stay JSON, other bytes become text."""
    return orjson.dumps(
        {
            "topic": record.topic,
            "key": record.key.decode(errors="replace") if record.key is not None else None,
            "value": _value(record.value),
            "headers": {k: v.decode(errors="replace") for k, v in record.headers},
        }
    ).decode()


def _value(raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode(errors="replace")
