"""Small builders shared by the tests."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import orjson

from service.config import Config, ConfigError, parse_config
from service.core.pipeline import OutputRecord, Pipeline
from service.core.processor import WindowProcessor
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

    def send(self, event: dict[str, Any], source: int = 0) -> None:
        raw = orjson.dumps(event)
        key, time_ms = self.pipeline.extract(event, None)
        self.processor.process(key, time_ms, event, raw, source)

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
