"""One task's state: its store on disk, its changelog partition, and how to start it afresh.

Kafka Streams gives each task a ``ProcessorStateManager`` that owns its stores
and their checkpoints, while one changelog reader per thread restores them.
This is the first half; ``service.runtime.changelog_reader`` is the second.
"""

from __future__ import annotations

from pathlib import Path

import structlog

from service.config import Config
from service.core.pipeline import Pipeline
from service.state.memory import StoreMemory
from service.state.store import WindowStore, open_store, wipe

log = structlog.get_logger("sessionizer.state")


def store_path(config: Config, pipeline: Pipeline, partition: int) -> Path:
    """A store's directory; from the first rescale on, the layout's generation is in its name (``service.core.layout``).

    A store of another generation holds other keys under the same partition
    number, and a checkpoint that is an offset of another changelog.
    """
    generation = pipeline.config.generation
    name = f"{pipeline.name}-{partition}" if generation == 0 else f"{pipeline.name}-g{generation}-{partition}"
    return config.state_dir / config.app_id / config.instance_id / name


class StateManager:
    """Owns the store of one pipeline partition."""

    def __init__(self, config: Config, pipeline: Pipeline, partition: int, memory: StoreMemory | None = None) -> None:
        self.pipeline = pipeline
        self.partition = partition
        self.changelog = pipeline.config.changelog_topic
        self.path = store_path(config, pipeline, partition)
        self._cache_max_keys = config.cache_max_keys
        self._memory = memory
        #: Changelog records applied by restores since this task was created.
        self.restored_records = 0
        self.store = self._open()

    @property
    def name(self) -> str:
        return f"{self.pipeline.name}-{self.partition}"

    def _open(self) -> WindowStore:
        store, wiped_because = open_store(self.path, self.pipeline.window, self._cache_max_keys, self._memory)
        if wiped_because is not None:
            log.warning("local state unreadable, rebuilding from the changelog", path=str(self.path), error=wiped_because)
        return store

    def reset(self) -> WindowStore:
        """Delete the local state and open it empty, for a full restore from the changelog."""
        self.store.close()
        wipe(self.path)
        self.store = self._open()
        return self.store

    def close(self) -> None:
        self.store.close()
