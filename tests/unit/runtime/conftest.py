"""Fixtures the runtime's unit tests share: a fake cluster, and service instances on it.

A test module that uses ``instance`` says what its instances run: its
``PIPELINE`` (one pipeline's table) and ``PARTITIONS`` (topic: partition
count), and, if it needs one, its ``ADMIN`` (an admin client class made with
the cluster).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes import FakeAdmin, FakeCluster
from tests.unit.runtime.instances import Instances


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
def instance(cluster: FakeCluster, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Instances]:
    """Instances on one cluster; each ``make(name)`` has its own state directory."""
    module = request.module
    admin = getattr(module, "ADMIN", None) or (lambda cluster: FakeAdmin(cluster=cluster))
    made = Instances(cluster, tmp_path, module.PIPELINE, module.PARTITIONS, admin=admin)
    yield made
    made.close()
