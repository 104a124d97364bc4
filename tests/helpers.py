"""Small builders shared by the tests."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import orjson

from service.config import Config, ConfigError, parse_config
from service.core.pipeline import OutputRecord, Pipeline
from service.core.processor import WindowProcessor
from service.runtime.state_manager import StateManager
from service.runtime.tasks import WindowTask
from service.state.store import WindowStore


def config_from_toml(text: str) -> Config:
    problems: list[str] = []
    config = parse_config(tomllib.loads(text), problems)
    if problems:
        raise ConfigError(problems)
    assert config is not None
    return config


def session_config(
    gap: str = "10m", grace: str = "0s", extra_window: str = "", aggregates: str = "", time_format: str = "auto"
) -> Config:
    return config_from_toml(
        f"""
[pipelines.s]
sources = ["events"]
key = "user_id"
time = "ts"
time_format = "{time_format}"
output = "out"
[pipelines.s.window]
type = "session"
gap = "{gap}"
grace = "{grace}"
{extra_window}
[pipelines.s.aggregates]
{aggregates}
"""
    )


class Harness:
    """A processor over a real RocksDB store in a temporary directory."""

    def __init__(self, config: Config, path: Path) -> None:
        self.pipeline = Pipeline(config.pipelines[0])
        self.store = WindowStore(path, self.pipeline.window)
        self.out: list[OutputRecord] = []
        self.processor = WindowProcessor(self.pipeline, self.store, self.out)

    def send(self, event: dict[str, Any], source: int = 0, watermark: int | None = None) -> None:
        raw = orjson.dumps(event)
        key, time_ms = self.pipeline.extract(event, None)
        self.processor.process(key, time_ms, event, raw, source, watermark)

    def commit(self) -> None:
        self.processor.close_due()
        self.store.apply(self.store.prepare(), checkpoint=None)

    def finish(self) -> None:
        self.commit()
        self.processor.close_all()
        self.store.apply(self.store.prepare(), checkpoint=None)

    def emitted(self, topic: str = "out") -> list[dict[str, Any]]:
        return [orjson.loads(r.value) for r in self.out if r.topic == topic]

    def late(self) -> list[OutputRecord]:
        return [r for r in self.out if r.topic == self.pipeline.config.late_topic]

    def close(self) -> None:
        self.store.close()


class ListCollector:
    """A record collector that keeps what tasks emit, for unit tests of tasks without a broker."""

    def __init__(self) -> None:
        self.records: list[OutputRecord] = []
        self.sent = 0

    def emit(self, record: OutputRecord) -> None:
        self.records.append(record)
        self.sent += 1

    def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Any = None, partition: int = -1) -> None:
        self.emit(OutputRecord(topic, key, value, tuple(headers or ())))

    def send_changelog(self, topic: str, partition: int, records: list[tuple[bytes, bytes | None]]) -> None:
        for key, value in records:
            self.send(topic, key, value, partition=partition)

    def changelog_end(self, topic: str, partition: int) -> int | None:
        return None


def window_task(config: Config, pipeline: Pipeline, partition: int, state_dir: Path, collector: Any = None) -> WindowTask:
    """A window task with its store under ``state_dir``, writing to a ``ListCollector`` by default."""
    config = dataclasses.replace(config, state_dir=state_dir)
    return WindowTask(StateManager(config, pipeline, partition), pipeline.config.repartition_topic, collector or ListCollector())
