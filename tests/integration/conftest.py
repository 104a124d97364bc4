"""Integration tests need the real broker that scripts/test.sh starts.

A bare ``pytest`` run with no broker skips them. When a broker is expected,
its absence is an error, so a run can never pass by testing nothing: in CI
(``CI=true``, see tests/integration/expected.py), and whenever
``SESSIONIZER_TEST_BOOTSTRAP`` names one, as scripts/test.sh does after
starting its broker. The same holds for the schema registry in CI.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.integration.expected import in_ci, missing_registry
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
        if "schema_registry" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.registry)


class Registry:
    """The schema registry scripts/test.sh started (scripts/registry.sh), for the tests of Avro, Protobuf and JSON Schema."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/apis/ccompat/v7"

    def pid(self) -> int:
        """The registry's process (to freeze it with SIGSTOP), from ``registry.sh status``."""
        script = Path(__file__).resolve().parents[2] / "scripts" / "registry.sh"
        out = subprocess.run(
            ["bash", str(script), "status"], env={**os.environ, "REGISTRY_PORT": str(self.port)}, capture_output=True, text=True
        ).stdout
        match = re.search(r"pid (\d+)", out)
        assert match, f"registry.sh status said: {out!r}"
        return int(match.group(1))


def _registry_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def schema_registry(broker) -> Registry:
    """The registry at ``SESSIONIZER_TEST_REGISTRY_PORT``; without one, skipped with the reason, or failed in CI.

    scripts/test.sh starts it with a JDK of 21 or newer found on the machine;
    without one it sets ``SESSIONIZER_TEST_REGISTRY_SKIP`` to registry.sh's
    reason, and these tests are reported as skipped with it, never silently
    absent. In CI (``CI=true``) a missing registry fails them instead
    (tests/integration/expected.py).
    """
    missing = missing_registry(os.environ, _registry_answers)
    if missing is not None:
        if missing.fail:
            pytest.fail(missing.message)
        pytest.skip(missing.message)
    pytest.importorskip("fastavro", reason="the registry extra is not installed: pip install -e '.[registry]'")
    return Registry(int(os.environ["SESSIONIZER_TEST_REGISTRY_PORT"]))


def broker_expected(environ: Mapping[str, str] = os.environ) -> bool:
    """A missing broker fails the run in CI, or when a bootstrap address was given explicitly."""
    return in_ci(environ) or bool(environ.get("SESSIONIZER_TEST_BOOTSTRAP"))


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
{"" if "idle_timeout" in app_extra else 'idle_timeout = "2s"'}
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
