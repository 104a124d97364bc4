"""``sessionizer process``: the same pipelines over a JSONL file, no broker.

For trying a config and for backfills. Every line is one event, as it would
arrive on a source topic. Stream time advances with the events exactly as in
the service; the end of the input closes every window that is still open.
Each output line is a record the service would produce:
``{"topic": …, "key": …, "value": …, "headers": {…}}``.

Which topic a line came from matters to pairing. ``--topic T`` says every line
came from T. With ``--wrapped`` each line says it itself, in the shape of the
output lines: ``{"topic": "analytics", "value": {…the event…}}``; each
pipeline then sees the lines of its own source topics only, as in the service.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from service.config import Config
from service.core.extract import BadRecord, parse_event
from service.core.pipeline import OutputRecord, Pipeline, compile_pipelines, dead_letter
from service.core.processor import WindowProcessor
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
    with tempfile.TemporaryDirectory(prefix="sessionizer-offline-") as tmp:
        root = state_dir or Path(tmp)
        runs = [_Run(p, WindowStore(root / p.name, p.window, config.cache_max_keys), out) for p in pipelines]
        source = topic or "-"
        for number, line in enumerate(lines):
            if not line.strip():
                continue
            summary.lines += 1
            line = line.rstrip(b"\r\n")
            if wrapped:
                _process_wrapped(runs, line, number, out)
            else:
                _process_line(runs, line, source, number, out)
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


@dataclass
class _Run:
    pipeline: Pipeline
    store: WindowStore
    out: list[OutputRecord]

    def __post_init__(self) -> None:
        self.processor = WindowProcessor(self.pipeline, self.store, self.out)

    def source_index(self, topic: str) -> int:
        """The topic's index in the pipeline's sources, as the repartition frame carries it."""
        sources = self.pipeline.config.sources
        return sources.index(topic) if topic in sources else 0


def _process_line(runs: list[_Run], line: bytes, source: str, number: int, out: list[OutputRecord]) -> None:
    try:
        event = parse_event(line)
    except BadRecord as exc:
        for dlq in dict.fromkeys(r.pipeline.config.dead_letter_topic for r in runs):
            out.append(dead_letter(dlq, str(exc), None, line, source, 0, number))
        return
    _process_event(runs, event, line, source, number, out)


def _process_event(runs: list[_Run], event: dict[str, Any], raw: bytes, source: str, number: int, out: list[OutputRecord]) -> None:
    for run in runs:
        try:
            key, time_ms = run.pipeline.extract(event, None)
        except BadRecord as exc:
            out.append(dead_letter(run.pipeline.config.dead_letter_topic, str(exc), None, raw, source, 0, number, run.pipeline.name))
            continue
        run.processor.process(key, time_ms, event, raw, run.source_index(source))


def _process_wrapped(runs: list[_Run], line: bytes, number: int, out: list[OutputRecord]) -> None:
    """A ``{"topic": …, "value": …}`` line: the event goes to the pipelines reading that topic."""
    try:
        wrapper = parse_event(line)
        topic = wrapper.get("topic")
        if not isinstance(topic, str) or not topic:
            raise BadRecord('wrapped line without a "topic" string')
        event = wrapper.get("value")
        if not isinstance(event, dict):
            raise BadRecord('wrapped line whose "value" is not a JSON object')
    except BadRecord as exc:
        for dlq in dict.fromkeys(r.pipeline.config.dead_letter_topic for r in runs):
            out.append(dead_letter(dlq, str(exc), None, line, "-", 0, number))
        return
    readers = [run for run in runs if topic in run.pipeline.config.sources]
    _process_event(readers, event, orjson.dumps(event), topic, number, out)


def _commit(runs: list[_Run]) -> None:
    for run in runs:
        run.processor.close_due()
        run.store.apply(run.store.prepare(), checkpoint=None)


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
