"""Fixtures shared by the unit tests of more than one layer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.config import Config
from service.core.pipeline import Pipeline
from service.runtime.tasks import WindowTask
from tests.helpers import config_from_toml, config_toml, pipeline, session_window, window_task


@pytest.fixture
def shop_config() -> Config:
    """App ``shop``, instance ``i1``, 4 partitions, an HTTP port of its own; pipelines ``sessions`` and ``baskets``."""
    return config_from_toml(
        config_toml(
            {
                "sessions": pipeline(["web"], session_window("10m"), aggregates='types = { type = "count_by", field = "type" }'),
                "baskets": pipeline(["web"], {"type": "tumbling", "size": "1h"}, key=["user_id", "shop"], output="baskets"),
            },
            app={"id": "shop", "instance_id": "i1"},
            topics={"partitions": 4},
            http={"host": "127.0.0.1", "port": 0, "liveness_timeout": "2s"},
        )
    )


@pytest.fixture
def running_tasks(shop_config, tmp_path) -> Iterator[tuple[Config, Pipeline, dict[tuple[str, int], WindowTask]]]:
    """The ``sessions`` pipeline's window task of every partition, running, by task id; closed after the test."""
    pipeline = Pipeline(shop_config.pipelines[0])
    made = {}
    for partition in range(4):
        task = window_task(shop_config, pipeline, partition, tmp_path)
        task.start()
        made[task.task_id] = task
    yield shop_config, pipeline, made
    for task in made.values():
        task.close()
