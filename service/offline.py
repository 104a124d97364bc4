"""``sessionizer process``: the same pipelines over a JSONL file, no broker.

For trying a config and for backfills. Every line is one event, as it would
arrive on a source topic. Stream time advances with the events exactly as in
the service; the end of the input closes every window that is still open.
Each output line is a record the service would produce:
``{"topic": …, "key": …, "value": …, "headers": {…}}``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from service.config import Config
from service.extract import BadRecord, parse_event
from service.pipeline import OutputRecord, Pipeline, compile_pipelines, dead_letter
from service.processor import WindowProcessor
from service.store import WindowStore

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
) -> OfflineSummary:
    """Run every pipeline reading ``topic`` (all pipelines when None) over ``lines``."""
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
            _process_line(runs, line.rstrip(b"\r\n"), source, number, out)
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


def process_file(config: Config, input_path: Path, output: IO[str], topic: str | None = None) -> OfflineSummary:
    with open(input_path, "rb") as lines:
        return process_lines(config, lines, output.write, topic)


@dataclass
class _Run:
    pipeline: Pipeline
    store: WindowStore
    out: list[OutputRecord]

    def __post_init__(self) -> None:
        self.processor = WindowProcessor(self.pipeline, self.store, self.out)


def _process_line(runs: list[_Run], line: bytes, source: str, number: int, out: list[OutputRecord]) -> None:
    try:
        event = parse_event(line)
    except BadRecord as exc:
        for dlq in dict.fromkeys(r.pipeline.config.dead_letter_topic for r in runs):
            out.append(dead_letter(dlq, str(exc), None, line, source, 0, number))
        return
    for run in runs:
        try:
            key, time_ms = run.pipeline.extract(event, None)
        except BadRecord as exc:
            out.append(dead_letter(run.pipeline.config.dead_letter_topic, str(exc), None, line, source, 0, number, run.pipeline.name))
            continue
        run.processor.process(key, time_ms, event, line)


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
