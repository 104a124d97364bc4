"""A live event stream for the exactly-once tests, and the checks on what comes out.

Events are produced in real time to several source topics with the event time
set to the production time minus up to a second (bounded disorder), so that
whatever the service goes through (kills, rebalances, a broker restart) the
disorder it sees stays within grace, and the output must equal offline mode
over exactly the events produced.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from confluent_kafka import Producer

from service.commands.process import process_lines
from service.config import load_config
from tests.helpers import session_body
from tests.integration.harness import Reader, bootstrap, create_topics

SOURCES = ("web", "mobile", "backend")
Session = tuple[str, int, int, int, int]  # user, start, end, events, sum of amount


def pipeline_body(app, gap: str = "1500ms", grace: str = "20s") -> str:
    return session_body(app, SOURCES, gap=gap, grace=grace, aggregates='amount = { type = "sum", field = "amount" }')


@dataclass
class Workload:
    """Produces ``events`` events for ``users`` users at ``rate`` per second in a thread."""

    app: object
    events: int
    users: int
    rate: int
    seed: int = 1
    produced: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def create_topics(self) -> None:
        create_topics([self.app.topic(s) for s in SOURCES], partitions=3)

    def start(self) -> Workload:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def progress(self) -> float:
        return len(self.produced) / self.events

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the workload did not finish producing"
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            self._produce()
        except BaseException as exc:  # surfaced by join()
            self.error = exc

    def _produce(self) -> None:
        rng = random.Random(self.seed)
        # Idempotent, as Java producers are by default: retries after a broker
        # restart keep each partition's order.
        producer = Producer(
            {"bootstrap.servers": bootstrap(), "linger.ms": 20, "message.timeout.ms": 600_000, "enable.idempotence": True}
        )
        topics = [self.app.topic(s) for s in SOURCES]
        tick = 0.05
        per_tick = max(1, int(self.rate * tick))
        next_tick = time.monotonic()
        while len(self.produced) < self.events:
            now_ms = int(time.time() * 1000)
            for _ in range(min(per_tick, self.events - len(self.produced))):
                raw = orjson.dumps(
                    {
                        "user_id": f"user-{rng.randrange(self.users)}",
                        "ts": now_ms - rng.randrange(0, 1000),
                        "amount": rng.randrange(1, 100),
                        "n": len(self.produced),
                    }
                )
                while True:
                    try:
                        producer.produce(rng.choice(topics), raw)
                        break
                    except BufferError:
                        producer.poll(0.05)
                self.produced.append(raw)
            producer.poll(0)
            next_tick += tick
            time.sleep(max(0.0, next_tick - time.monotonic()))
        assert producer.flush(600) == 0


def expected_sessions(config_path: Path, produced: list[bytes]) -> list[Session]:
    """What ``sessionizer process`` computes over the same events."""
    out: list[dict] = []
    summary = process_lines(load_config(config_path, {}), produced, lambda line: out.append(orjson.loads(line)))
    late = [r for r in out if r["topic"].endswith("-late")]
    assert not late, f"offline mode found {len(late)} late events: the workload's disorder exceeds grace"
    assert summary.lines == len(produced)
    return sorted(_session(r["value"]) for r in out if r["topic"].endswith("-sessions"))


def _session(value: dict) -> Session:
    v = value["value"]
    return (value["user_id"], v["session_start_ms"], v["session_end_ms"], v["event_count"], v["amount"])


def read_sessions(reader: Reader, topic: str, expected: int, timeout: float) -> list[Session]:
    """Everything on the output topic (read_committed) once at least ``expected`` records are there."""
    reader.wait_for(expected, timeout=timeout, topic=topic)
    reader.poll(3)  # anything extra (a duplicate) would arrive too
    return sorted(_session(r.json()) for r in reader.of(topic))


def assert_exactly_once(got: list[Session], expected: list[Session]) -> None:
    duplicates = [s for s, n in Counter(got).items() if n > 1]
    missing = Counter(expected) - Counter(got)
    extra = Counter(got) - Counter(expected)
    assert not duplicates, f"{len(duplicates)} sessions emitted more than once, e.g. {duplicates[:3]}"
    assert not missing and not extra, (
        f"{sum(missing.values())} expected sessions missing (e.g. {list(missing)[:3]}), "
        f"{sum(extra.values())} unexpected (e.g. {list(extra)[:3]})"
    )
