"""Start-up against the real broker: a broker that is not there yet, credentials it refuses, a missing
source topic (the service never creates one), and scripts/create_topics.py, which makes a config's sources."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time

import orjson
import pytest
from confluent_kafka.admin import AdminClient

from tests.helpers import session_body, sessionizer
from tests.integration.harness import REPO, Reader, bootstrap, create_topics, produce, wait_until
from tests.integration.test_operations import get, http_port


class Forwarder:
    """A TCP port that refuses connections until ``open()``, then forwards them to the broker.

    The broker advertises its own address, so only the bootstrap connection
    goes through here: enough to stand for a broker that comes up late.
    """

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: asyncio.AbstractServer | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def open(self) -> None:
        async def start() -> None:
            self._server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port)

        asyncio.run_coroutine_threadsafe(start(), self._loop).result(10)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            finally:
                dst.close()

        await asyncio.gather(copy(reader, upstream_writer), copy(upstream_reader, writer), return_exceptions=True)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._loop.call_soon_threadsafe(self._loop.stop)


def test_start_up_waits_for_a_broker_that_is_not_there_yet(app):
    forwarder = Forwarder(bootstrap())
    try:
        app.configure(session_body(app, ["web"], gap="500ms", grace="1s"))
        text = app.config_path.read_text().replace(f'bootstrap_servers = "{bootstrap()}"', f'bootstrap_servers = "{forwarder.address}"')
        app.config_path.write_text(text)
        create_topics([app.topic("web")])
        service = app.service().start()
        port = http_port(service)

        # Within a few seconds: one line naming the address and why, and probes that say so.
        line = wait_until(lambda: _line(service.log(), "broker unreachable, retrying"), 20, "the unreachable broker to be reported")
        assert line["bootstrap_servers"] == forwarder.address
        assert "Connection refused" in line["reason"] and line["retry_in_seconds"] >= 1
        assert get(port, "/healthz")[0] == 200
        status, body = get(port, "/readyz")
        assert status == 503 and body["reason"].startswith("broker unreachable: ")
        assert "Traceback" not in service.log()

        forwarder.open()  # the broker "comes up": the service goes on by itself
        wait_until(lambda: get(port, "/readyz")[0] == 200, 90, "the service to become ready")
        assert _line(service.log(), "broker reached")["attempts"] >= 2
        now = int(time.time() * 1000)
        produce(app.topic("web"), [{"user_id": "late-broker", "ts": now}], key=lambda v: b"late-broker")
        reader = Reader([app.topic("sessions")])
        (record,) = reader.wait_for(1, timeout=30)
        assert record.key == b"late-broker"
        reader.close()
        service.assert_alive()
    finally:
        forwarder.close()


def test_an_authentication_failure_ends_start_up_with_one_line(app, tmp_path):
    sasl = os.environ.get("SESSIONIZER_TEST_SASL_BOOTSTRAP")
    if not sasl:
        pytest.skip("no SASL listener: scripts/test.sh starts the broker with one (KAFKA_SASL_PORT)")
    password = "not-the-password-4711"
    app.configure(session_body(app, ["web"]))
    text = app.config_path.read_text().replace(
        f'bootstrap_servers = "{bootstrap()}"',
        f'bootstrap_servers = "{sasl}"\n"security.protocol" = "SASL_PLAINTEXT"\n"sasl.mechanism" = "PLAIN"\n'
        f'"sasl.username" = "sessionizer"\n"sasl.password" = "{password}"',
    )
    app.config_path.write_text(text)
    result = sessionizer("run", "--config", str(app.config_path), clean=False, timeout=120)
    assert result.returncode == 3, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"sessionizer: kafka at {sasl}: ") and "Authentication failed" in last, last
    assert "Traceback" not in result.stderr
    assert password not in result.stderr + result.stdout


def _line(log: str, event: str) -> dict | None:
    for text in log.splitlines():
        if f'"event": "{event}"' in text:
            return orjson.loads(text)
    return None


def existing_topics() -> dict[str, int]:
    metadata = AdminClient({"bootstrap.servers": bootstrap()}).list_topics(timeout=30)
    return {name: len(topic.partitions) for name, topic in metadata.topics.items()}


def test_a_missing_source_topic_stops_the_service_with_its_name(app):
    config = app.configure(session_body(app, ["web", "mobile"]))
    create_topics([app.topic("web")])
    result = sessionizer("run", "--config", str(config), "--instance-id", "i1", clean=False, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"sessionizer: invalid configuration: source topic '{app.topic('mobile')}' of pipeline 'sessions' does not exist"
    )
    topics = existing_topics()
    assert app.topic("mobile") not in topics  # not created
    assert app.topic("sessions") not in topics  # nor anything else: it stopped first


def test_create_topics_script_makes_the_source_topics_with_the_configs_partitions(app):
    config = app.configure(session_body(app, ["web", "mobile"]), partitions=2)
    create_topics([app.topic("web")], partitions=3)  # an existing topic is left as it is
    script = [sys.executable, str(REPO / "scripts" / "create_topics.py"), str(config)]
    result = subprocess.run(script, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    topics = existing_topics()
    assert (topics[app.topic("web")], topics[app.topic("mobile")]) == (3, 2)
    assert app.topic("sessions") not in topics  # only sources: the service makes the rest
    again = subprocess.run(script, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stderr == ""
