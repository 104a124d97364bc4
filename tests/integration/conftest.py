"""Integration tests need the real broker that scripts/test.sh starts.

A bare ``pytest`` run with no broker skips them. When a broker is expected,
its absence is an error, so a run can never pass by testing nothing: in CI
(``CI`` set), and whenever ``SESSIONIZER_TEST_BOOTSTRAP`` names one, as
scripts/test.sh does after starting its broker.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.integration.harness import Service, bootstrap, unique


def _broker_answers() -> bool:
    host, port = bootstrap().rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def broker_expected(environ: Mapping[str, str] = os.environ) -> bool:
    """A missing broker fails the run in CI, or when a bootstrap address was given explicitly."""
    return bool(environ.get("CI")) or bool(environ.get("SESSIONIZER_TEST_BOOTSTRAP"))


@pytest.fixture(scope="session")
def broker() -> str:
    if not _broker_answers():
        message = f"no Kafka broker at {bootstrap()}; run the suite with: bash scripts/test.sh"
        if broker_expected():
            pytest.fail(message)
        pytest.skip(message)
    return bootstrap()


def config_text(
    app_id: str, state_dir: Path, body: str, *, partitions: int = 3, app_extra: str = "", topics_extra: str = ""
) -> str:
    return f"""
[app]
id = "{app_id}"
state_dir = "{state_dir}"
commit_interval = "100ms"
punctuate_interval = "200ms"
{app_extra}

[kafka]
bootstrap_servers = "{bootstrap()}"

[kafka.consumer]
"session.timeout.ms" = 6000
"heartbeat.interval.ms" = 500

[topics]
partitions = {partitions}
replication_factor = 1
dead_letter = "{app_id}-dlq"
late = "{app_id}-late"
{topics_extra}

[http]
port = 0

{body}
"""


class App:
    """One test's service: unique app id and topic names, a config file, replicas."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.id = unique("app")
        self.state_dir = tmp_path / "state"
        self.config_path = tmp_path / "sessionizer.toml"
        self.services: list[Service] = []

    def topic(self, name: str) -> str:
        return f"{self.id}-{name}"

    def configure(self, body: str, **kwargs) -> Path:
        self.config_path.write_text(config_text(self.id, self.state_dir, body, **kwargs))
        return self.config_path

    def service(self, instance_id: str = "i1", env: dict[str, str] | None = None) -> Service:
        service = Service(self.config_path, self.tmp_path, instance_id, env)
        self.services.append(service)
        return service

    def logs(self) -> str:
        return "\n".join(s.log()[-3000:] for s in self.services)


@pytest.fixture
def app(broker, tmp_path, request):
    application = App(tmp_path)
    yield application
    for service in application.services:
        service.close()
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        print(application.logs())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)
