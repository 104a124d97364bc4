"""A live event stream for the exactly-once tests, and the checks on what comes out.

Events are produced in real time to several source topics with the event time
set to the production time minus up to a second (bounded disorder), so that
whatever the service goes through (kills, rebalances, a broker restart) the
disorder it sees stays within grace, and the output must equal the independent
oracle (``tests.oracle``) and offline mode over exactly the events produced.

What came out is read once the services are stopped, to the end offsets of
the output, late and dead-letter topics (``collect``): nothing can arrive
after that, so a duplicate cannot hide behind a short wait.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from confluent_kafka import Producer

from service.commands.process import process_lines
from service.config import load_config
from tests import oracle
from tests.helpers import session_body
from tests.integration.harness import Reader, Record, Service, bootstrap, create_topics, stop_and_read

SOURCES = ("web", "mobile", "backend")
Session = tuple[str, int, int, int, int]  # user, start, end, events, sum of amount
GAP_MS = 1_500
AMOUNT = 'amount = { type = "sum", field = "amount" }'


def pipeline_body(app, grace: str = "20s", aggregates: str = AMOUNT) -> str:
    """Sessions of ``user_id`` over the three sources, ``GAP_MS`` apart, with the sum of ``amount``."""
    return session_body(app, SOURCES, gap=f"{GAP_MS}ms", grace=grace, aggregates=aggregates)


@dataclass
class Workload:
    """Produces ``events`` events for ``users`` users at ``rate`` per second in a thread."""

    app: object
    events: int
    users: int
    rate: int
    seed: int = 1
    produced: list[bytes] = field(default_factory=list)
    #: librdkafka settings added to the producer's
    producer_config: dict[str, object] = field(default_factory=dict)

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
            {
                "bootstrap.servers": bootstrap(),
                "linger.ms": 20,
                "message.timeout.ms": 600_000,
                "enable.idempotence": True,
                **self.producer_config,
            }
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
    """The independent oracle's sessions over the events produced; ``sessionizer process`` must agree."""
    events = [orjson.loads(raw) for raw in produced]
    expected = oracle.sessions(((e["user_id"], e["ts"], e["amount"]) for e in events), GAP_MS)
    out: list[dict] = []
    summary = process_lines(load_config(config_path, {}), produced, lambda line: out.append(orjson.loads(line)))
    late = [r for r in out if r["topic"].endswith("-late")]
    assert not late, f"offline mode found {len(late)} late events: the workload's disorder exceeds grace"
    assert summary.lines == len(produced)
    offline = sorted(_session(r["value"]) for r in out if r["topic"].endswith("-sessions"))
    oracle.assert_each_once(offline, expected)  # offline mode and the oracle agree
    return [tuple(s) for s in expected]


def _session(value: dict) -> Session:
    v = value["value"]
    return (value["user_id"], v["session_start_ms"], v["session_end_ms"], v["event_count"], v["amount"])


def session_of(record: Record) -> Session:
    """An output record as (user, start, end, events, sum of amount)."""
    return _session(record.json())


def sessions_in(records: list[Record]) -> list[Session]:
    return sorted(map(session_of, records))


def collect(app, services: list[Service], expected: int, timeout: float = 240) -> dict[str, list[Record]]:
    """Wait until ``expected`` sessions are out, stop the services, read output, late and dead-letter topics to their ends.

    The wait is only a barrier: the assertions run on what ``read_all`` finds
    once nothing can be written any more.
    """
    reader = Reader([app.topic("sessions")])
    try:
        reader.wait_for(expected, timeout=timeout, topic=app.topic("sessions"))
    finally:
        reader.close()
    return stop_and_read(services, [app.topic("sessions"), app.topic("late"), app.topic("dlq")])


def assert_exact(app, got: dict[str, list[Record]], expected: list[Session], produced: int) -> None:
    """No late event, no dead letter, each expected session exactly once, every event counted once."""
    late = got[app.topic("late")]
    assert late == [], f"{len(late)} events went to the late topic, e.g. {late[0].headers if late else None}"
    assert got[app.topic("dlq")] == []
    sessions = sessions_in(got[app.topic("sessions")])
    oracle.assert_each_once(sessions, expected)
    assert oracle.conserved([oracle.Session(*s) for s in sessions], late=len(late), produced=produced)

