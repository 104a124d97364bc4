"""Driving the real service against the real broker started by scripts/test.sh."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.helpers import REPO

#: How far ahead of the wall clock a test stamps an event that must be on time whenever it arrives. The
#: empty source is found quiet soon after start, and then its watermark is the wall clock at a probe
#: minus 1 s (``service.runtime.ends``): an event stamped "now" is late if it reaches the broker more
#: than that second and grace after it was stamped, which a loaded machine can take.
AHEAD_MS = 2_000


def bootstrap() -> str:
    return os.environ.get("SESSIONIZER_TEST_BOOTSTRAP", "127.0.0.1:19092")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def create_topics(names: Iterable[str], partitions: int = 3) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap()})
    futures = admin.create_topics([NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names])
    for future in futures.values():
        future.result(30)


def producer(settings: dict[str, Any] | None = None) -> Producer:
    """The tests' producer: keys placed as Java's default partitioner places them (murmur2), and
    idempotent, so a retried batch cannot land after a later one and make its events late.
    ``settings`` adds or overrides librdkafka properties."""
    return Producer(
        {"bootstrap.servers": bootstrap(), "partitioner": "murmur2_random", "linger.ms": 20, "enable.idempotence": True, **(settings or {})}
    )


def send(producer: Producer, topic: str, value: bytes | None, key: bytes | None = None, partition: int = -1) -> None:
    """``producer.produce``, waiting for room while its queue is full (``partition`` -1: the partitioner picks)."""
    while True:
        try:
            producer.produce(topic, value=value, key=key, partition=partition)
            return
        except BufferError:
            producer.poll(0.05)


def produce(topic: str, values: Iterable[Any], key: Callable[[Any], bytes | None] | None = None) -> int:
    """Produce JSON values (bytes are sent as they are), keyed with murmur2 like Java."""
    out = producer()
    count = 0
    for value in values:
        send(out, topic, value if isinstance(value, bytes) else orjson.dumps(value), key(value) if key else None)
        count += 1
    assert out.flush(60) == 0
    return count


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]

    def json(self) -> Any:
        return orjson.loads(self.value)


class Reader:
    """A read_committed consumer over whole topics, from the beginning."""

    def __init__(self, topics: list[str]) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap(),
                "group.id": unique("reader"),
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        self.consumer.subscribe(topics)
        self.records: list[Record] = []

    def poll(self, seconds: float = 0.5) -> list[Record]:
        new = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for m in self.consumer.consume(1000, 0.1):
                if m.error() is not None:
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        raise AssertionError(str(m.error()))
                    continue
                new.append(Record(m.topic(), m.partition(), m.offset(), m.key(), m.value(), dict(m.headers() or [])))
        self.records.extend(new)
        return new

    def wait_for(self, count: int, timeout: float, topic: str | None = None) -> list[Record]:
        def enough() -> bool:
            self.poll(0.3)
            return len(self.of(topic)) >= count

        try:
            wait_until(enough, timeout, f"{count} records on {topic or 'the topics'}", 0)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; have {len(self.of(topic))}; {self.describe()}") from None
        return self.of(topic)

    def describe(self) -> str:
        """Where this reader stands, for failure messages."""
        assignment = self.consumer.assignment()
        positions = self.consumer.position(assignment) if assignment else []
        ends = [self.consumer.get_watermark_offsets(tp, timeout=5, cached=False)[1] for tp in assignment]
        return "assignment/position/high: " + ", ".join(
            f"{tp.topic}[{tp.partition}] {pos.offset}/{end}" for tp, pos, end in zip(assignment, positions, ends)
        )

    def of(self, topic: str | None) -> list[Record]:
        return [r for r in self.records if topic is None or r.topic == topic]

    def close(self) -> None:
        self.consumer.close()


def read_all(topics: Iterable[str], timeout: float = 120) -> list[Record]:
    """Every committed record of ``topics``, read to the end of each partition (``read_committed``).

    Call it when no transaction can still be open (the services stopped), so
    that the end reached is the end: nothing read later could add a record.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap(),
            "group.id": unique("read-all"),
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )
    try:
        metadata = consumer.list_topics(timeout=30)
        partitions = [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in metadata.topics[t].partitions]
        ends = {(tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=30)[1] for tp in partitions}
        remaining = {where for where, end in ends.items() if end > 0}
        consumer.assign(partitions)
        records: list[Record] = []
        deadline = time.monotonic() + timeout
        while remaining:
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {sorted(remaining)} to their ends {ends} within {timeout} s")
            for m in consumer.consume(1000, 0.5):
                where = (m.topic(), m.partition())
                if m.error() is not None:
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        raise AssertionError(str(m.error()))
                    if m.offset() >= ends[where]:
                        remaining.discard(where)
                    continue
                records.append(Record(m.topic(), m.partition(), m.offset(), m.key(), m.value(), dict(m.headers() or [])))
        return records
    finally:
        consumer.close()


def by_topic(records: Iterable[Record], topics: Iterable[str]) -> dict[str, list[Record]]:
    """``records`` split by topic, every one of ``topics`` present (an empty list when none)."""
    out: dict[str, list[Record]] = {topic: [] for topic in topics}
    for record in records:
        out[record.topic].append(record)
    return out


def stop_and_read(services: Iterable[Service], topics: list[str]) -> dict[str, list[Record]]:
    """SIGTERM every service and wait for its clean exit, then read ``topics`` to their ends.

    Once the services are gone no transaction can be open, so what ``read_all``
    finds is everything that will ever be there: "nothing more arrives" is then
    a fact, not a wait of a few seconds.
    """
    for service in services:
        code = service.stop()
        assert code == 0, f"service {service.instance_id} exited {code}:\n{service.log()[-4000:]}"
    return by_topic(read_all(topics), topics)


def collect_outputs(app: Any, services: Iterable[Service], outputs: dict[str, int], timeout: float, also: Iterable[str] = ()) -> dict[str, list[Record]]:
    """Wait until each of ``app``'s ``outputs`` topics (by name) holds its count of records, then
    ``stop_and_read`` the services: the outputs, the late and dead-letter topics, and the topics ``also`` names.

    The wait is only a barrier: what the test asserts is what ``read_all`` finds
    once nothing can be written any more.
    """
    reader = Reader([app.topic(name) for name in outputs])
    try:
        for name, count in outputs.items():
            reader.wait_for(count, timeout=timeout, topic=app.topic(name))
    finally:
        reader.close()
    names = [*outputs, "late", "dlq", *also]
    return stop_and_read(services, [app.topic(name) for name in names])


def log_events(text: str) -> list[dict[str, Any]]:
    """The JSON lines of a service log (markers and anything else that is not JSON left out)."""
    events = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                events.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
    return events


def end_offsets(topic: str, partitions: int) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap(), "group.id": unique("probe")})
    try:
        return [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)]
    finally:
        consumer.close()


class Service:
    """``python -m service run`` in a subprocess, with its log in a file."""

    def __init__(self, config_path: Path, workdir: Path, instance_id: str = "i1", env: dict[str, str] | None = None) -> None:
        self.config_path = config_path
        self.instance_id = instance_id
        self.log_path = workdir / f"service-{instance_id}.log"
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, env: dict[str, str] | None = None) -> Service:
        """Start a run; ``env`` adds variables for this run only."""
        self.starts += 1
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            log.write(f"--- start {self.starts} ---\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service", "run", "--config", str(self.config_path), "--instance-id", self.instance_id],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**self.env, **(env or {})},
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def run_log(self, run: int | None = None) -> str:
        """The log of one run (the current one by default): the text after its ``--- start N ---`` line."""
        run = self.starts if run is None else run
        parts = self.log().split(f"--- start {run} ---\n")
        assert len(parts) == 2, f"no run {run} in {self.log_path}"
        return parts[1].split(f"--- start {run + 1} ---\n")[0]

    def mark(self, text: str) -> str:
        """Write a marker line into the log, to split it at a moment of the test; returns the marker."""
        marker = f"--- {text} ---"
        with open(self.log_path, "ab") as log:
            log.write(f"{marker}\n".encode())
        return marker

    def restored(self, pipeline: str = "sessions") -> set[int]:
        """The partitions of ``pipeline`` whose store this run has brought up to date."""
        return {
            event["partition"]
            for event in log_events(self.run_log())
            if event.get("event") in ("state restored", "state up to date") and event.get("pipeline") == pipeline
        }

    def wait_restored(self, partitions: Iterable[int], pipeline: str = "sessions", timeout: float = 120) -> None:
        """Until this run has restored every one of ``partitions`` (so it processes all of them)."""
        wanted = set(partitions)

        def done() -> bool:
            self.assert_alive()
            return wanted <= self.restored(pipeline)

        wait_until(done, timeout, f"service {self.instance_id} to restore {pipeline} partitions {sorted(wanted)}")

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait_started(self, timeout: float = 60) -> None:
        """Until this run has logged a restored task, i.e. it is in the group and processing."""
        marker = f"--- start {self.starts} ---"

        def started() -> bool:
            self.assert_alive()
            text = self.log().split(marker)[-1]
            return '"state up to date"' in text or '"state restored"' in text

        wait_until(started, timeout, f"service {self.instance_id} to start")

    def wait_assigned(self, timeout: float = 60) -> None:
        """Until this run has been given partitions (a replica may have no window task to restore)."""
        marker = f"--- start {self.starts} ---"

        def assigned() -> bool:
            self.assert_alive()
            return '"partitions assigned"' in self.log().split(marker)[-1]

        wait_until(assigned, timeout, f"service {self.instance_id} to be given partitions")

    def assert_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None and self.process.returncode != 0:
            raise AssertionError(f"service {self.instance_id} exited {self.process.returncode}:\n{self.log()[-4000:]}")

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait for the clean exit."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self.process = None
        return code

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(30)
        self.process = None

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
