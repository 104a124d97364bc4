"""Logs: JSON lines off a terminal, app id on every line from every thread, no secret ever."""

from __future__ import annotations

import sys
import threading
import time

import orjson
import pytest
import structlog
from confluent_kafka import Producer

from service.ops.logs import configure_logging
from service.runtime.clients import kafka_logger

SECRET = "s3cret-Pa55word"


class Stderr:
    """What the service writes to stderr (pytest's capture), kept as it is read."""

    def __init__(self, capsys) -> None:
        self.capsys = capsys
        self.text = ""

    def getvalue(self) -> str:
        self.text += self.capsys.readouterr().err
        return self.text

    def clear(self) -> None:
        self.getvalue()
        self.text = ""


@pytest.fixture
def stderr(capsys):
    yield Stderr(capsys)
    structlog.reset_defaults()


def lines(stream: Stderr) -> list[dict]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_lines_carry_app_and_instance_from_any_thread(stderr):
    configure_logging("info", "json", app_id="shop", instance_id="i7")
    structlog.get_logger("t").info("from the main thread", pipeline="sessions", partition=3)
    thread = threading.Thread(target=lambda: structlog.get_logger("t").warning("from another thread"))
    thread.start()
    thread.join()
    structlog.get_logger("t").debug("not at info level")
    first, second = lines(stderr)
    assert list(first)[:5] == ["timestamp", "level", "event", "app_id", "instance_id"]
    assert first["event"] == "from the main thread" and first["pipeline"] == "sessions" and first["partition"] == 3
    assert second["app_id"] == "shop" and second["instance_id"] == "i7" and second["level"] == "warning"


def test_auto_format_is_json_off_a_terminal_and_readable_on_one(stderr, monkeypatch):
    configure_logging("info", "auto", app_id="shop")
    structlog.get_logger("t").info("hello", n=1)
    assert lines(stderr)[0]["event"] == "hello"

    stderr.clear()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    configure_logging("info", "auto", app_id="shop")
    structlog.get_logger("t").info("hello", n=1)
    text = stderr.getvalue()
    assert text.lstrip()[0] != "{" and "hello" in text and "n=1" in text and "app_id=shop" in text


def test_secrets_never_appear_in_a_line(stderr):
    configure_logging("debug", "json", secrets=[SECRET], app_id="shop")
    log = structlog.get_logger("t")
    log.info("connecting", url=f"sasl://user:{SECRET}@broker", attempts=[f"x{SECRET}y"])
    log.info("properties", props={"sasl.password": "something else", "sasl.username": "svc"})
    try:
        raise RuntimeError(f"auth failed with password {SECRET}")
    except RuntimeError:
        log.exception("failed")
    text = stderr.getvalue()
    assert SECRET not in text and "something else" not in text
    connecting, properties, failed = lines(stderr)
    assert connecting["url"] == "sasl://user:<redacted>@broker"
    assert properties["props"] == {"sasl.password": "<redacted>", "sasl.username": "svc"}
    assert "RuntimeError: auth failed with password <redacted>" in failed["exception"]


def test_console_lines_are_scrubbed_too(stderr):
    configure_logging("info", "console", secrets=[SECRET], app_id="shop")
    try:
        raise RuntimeError(SECRET)
    except RuntimeError:
        structlog.get_logger("t").exception("failed", note=SECRET)
    assert SECRET not in stderr.getvalue() and "failed" in stderr.getvalue()


def test_librdkafka_lines_become_structured_lines(stderr):
    configure_logging("info", "json", secrets=[SECRET], app_id="shop")
    # sasl.username without a SASL mechanism makes librdkafka warn at once (CONFWARN).
    producer = Producer(
        {"bootstrap.servers": "127.0.0.1:1", "sasl.username": "svc", "sasl.password": SECRET, "logger": kafka_logger()}
    )
    def warnings() -> list[dict]:
        return [line for line in lines(stderr) if line.get("event") == "librdkafka" and line["facility"] == "CONFWARN"]

    deadline = time.monotonic() + 10
    while not warnings() and time.monotonic() < deadline:
        producer.poll(0.1)
    (warning,) = warnings()
    assert warning["level"] == "warning" and warning["app_id"] == "shop"
    assert "sasl.username" in warning["message"]
    assert SECRET not in stderr.getvalue()
