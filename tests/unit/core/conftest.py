"""Fixtures shared by the core's tests: processors over real stores."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from service.config import Config
from tests.helpers import Harness, config_from_toml


@pytest.fixture
def make(tmp_path) -> Iterator[Callable[[Config | str], Harness]]:
    """Builds a harness from a config (or its TOML text), each over a store of its own; closes them all after the test."""
    made: list[Harness] = []

    def build(config: Config | str) -> Harness:
        h = Harness(config_from_toml(config) if isinstance(config, str) else config, tmp_path / f"s{len(made)}")
        made.append(h)
        return h

    yield build
    for h in made:
        h.close()
