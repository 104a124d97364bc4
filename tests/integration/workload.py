"""A live event stream for the exactly-once tests, and the checks on what comes out.

Events are produced in real time to several source topics, each at most
``disorder_ms`` behind the wall clock when it is written (often exactly that),
so each source partition's own disorder is at most that too. The tests set it
to grace, the edge of the promise: whatever the service goes through (kills,
rebalances, replicas coming and going, a broker restart) nothing may be late,
and the output must equal the independent oracle (``tests.oracle``) and
offline mode over exactly the events produced. A grace wider than the
disorder would hide the bugs that matter.

Mixed in, on request: events written ten minutes late (each must reach the
late topic once, and nothing else), records that are not JSON (each must
reach the dead-letter topic once), and a sequence rule whose derived records
must each come out once, as offline mode derives them.

What came out is read once the services are stopped, to the end offsets of
the output, late and dead-letter topics (``collect``): nothing can arrive
after that, so a duplicate cannot hide behind a short wait.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from service.commands.process import process_lines
from service.config import load_config
from tests import oracle
from tests.helpers import session_body
from tests.integration.harness import Record, Service, collect_outputs, create_topics, producer, send

SOURCES = ("web", "mobile", "backend")
Session = tuple[str, int, int, int, int]  # user, start, end, events, sum of amount
GAP_MS = 1_500
#: The tests' grace, and the workload's disorder: the edge of the promise.
GRACE_MS = 2_000
AMOUNT = 'amount = { type = "sum", field = "amount" }'
#: How late a deliberately late event is written: far beyond any grace here.
LATE_BY_MS = 600_000
#: A cart followed by a payment within a second derives a ``purchase`` (``docs/rules.md``).
RULE = """
[pipelines.sessions.rules.purchase]
type = "sequence"
first = {{ field = "type", equals = "cart" }}
then = {{ field = "type", equals = "pay" }}
within = "1s"
topic = "{topic}"
keep = ["n"]
"""


def pipeline_body(app, grace: str = f"{GRACE_MS}ms", aggregates: str = AMOUNT, rule: bool = False) -> str:
    """Sessions of ``user_id`` over the three sources, ``GAP_MS`` apart, with the sum of ``amount``;
    with ``rule``, the ``purchase`` rule writing to the app's ``derived`` topic."""
    body = session_body(app, SOURCES, gap=f"{GAP_MS}ms", grace=grace, aggregates=aggregates)
    return body + (RULE.format(topic=app.topic("derived")) if rule else "")


@dataclass
class Workload:
    """Produces ``events`` records for ``users`` users at ``rate`` per second in a thread.

    Each event is at most ``disorder_ms`` behind the wall clock when it is
    produced; a quarter of them exactly that. With ``late_every`` (or
    ``malformed_every``) every so many records, once the stream is under way,
    is instead an event ``LATE_BY_MS`` late (or a value that is not JSON).
    ``hold`` makes it wait at a point of the stream until the test says so.
    """

    app: object
    events: int
    users: int
    rate: int
    seed: int = 1
    disorder_ms: int = GRACE_MS
    late_every: int = 0
    malformed_every: int = 0
    #: The events that are on time, as produced.
    produced: list[bytes] = field(default_factory=list)
    #: The events written late on purpose, and the records that are not JSON.
    late: list[bytes] = field(default_factory=list)
    malformed: list[bytes] = field(default_factory=list)
    #: librdkafka settings added to the producer's
    producer_config: dict[str, object] = field(default_factory=dict)
    #: Records keyed by user, in the partition Kafka's default partitioner picks (for ``key = "@key"``).
    keyed: bool = False

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None
        self._holds: dict[int, threading.Event] = {}
        #: How many records were written when production stopped at a hold; None while it runs.
        self.held_at: int | None = None

    def create_topics(self) -> None:
        create_topics([self.app.topic(s) for s in SOURCES], partitions=3)

    def start(self) -> Workload:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def written(self) -> int:
        return len(self.produced) + len(self.late) + len(self.malformed)

    def progress(self) -> float:
        return self.written / self.events

    def hold(self, at: int) -> threading.Event:
        """Production stops once ``at`` records are written, and flushed, until the event returned is set.

        Set before production gets there, it lets it go by. So a test can act
        at a point of the stream it chose (and be sure the stream is still
        to come), whatever the speed of the machine.
        """
        gate = threading.Event()
        self._holds[at] = gate
        return gate

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
        out = producer({"message.timeout.ms": 600_000, **self.producer_config})
        topics = [self.app.topic(s) for s in SOURCES]
        tick = 0.05
        per_tick = max(1, int(self.rate * tick))
        next_tick = time.monotonic()
        # The first records open every partition: only then are late ones certainly late.
        under_way = 2_000
        while self.written < self.events:
            gate = self._holds.get(self.written)
            if gate is not None and not gate.is_set():
                assert out.flush(600) == 0
                self.held_at = self.written
                gate.wait()
                self.held_at = None
                next_tick = time.monotonic()
            upto = min([at for at in self._holds if self.written < at < self.events], default=self.events)
            for _ in range(min(per_tick, upto - self.written)):
                n = self.written
                if self.late_every and n > under_way and n % self.late_every == 0:
                    raw, into = self._event(rng, n, LATE_BY_MS), self.late
                elif self.malformed_every and n > under_way and n % self.malformed_every == 1:
                    raw, into = b"not json %d" % n, self.malformed
                else:
                    delay = self.disorder_ms if rng.random() < 0.25 else rng.randrange(0, self.disorder_ms + 1)
                    raw, into = self._event(rng, n, delay), self.produced
                send(out, rng.choice(topics), raw, self._key(raw))
                into.append(raw)
            out.poll(0)
            next_tick += tick
            time.sleep(max(0.0, next_tick - time.monotonic()))
        assert out.flush(600) == 0

    def _key(self, raw: bytes) -> bytes | None:
        if not self.keyed or raw.startswith(b"not json"):
            return None
        return str(orjson.loads(raw)["user_id"]).encode()

    def _event(self, rng: random.Random, n: int, delay_ms: int) -> bytes:
        """Event ``n``, ``delay_ms`` behind the wall clock (read now, so a stall of this thread delays no event)."""
        return orjson.dumps(
            {
                "user_id": f"user-{rng.randrange(self.users)}",
                "ts": int(time.time() * 1000) - delay_ms,
                "amount": rng.randrange(1, 100),
                "n": n,
                "type": rng.choice(("view", "view", "cart", "pay")),
            }
        )


def expected_sessions(config_path: Path, produced: list[bytes], keyed: bool = False) -> list[Session]:
    """The independent oracle's sessions over the events produced; ``sessionizer process`` must agree.

    ``keyed``: grouped by the record key, which a file has none of: the oracle alone.
    """
    events = [orjson.loads(raw) for raw in produced]
    expected = oracle.sessions(((e["user_id"], e["ts"], e["amount"]) for e in events), GAP_MS)
    if keyed:
        return [tuple(s) for s in expected]
    out = offline(config_path, produced)
    late = [r for r in out if r["topic"].endswith("-late")]
    assert not late, f"offline mode found {len(late)} late events: the workload's disorder exceeds grace"
    offline_sessions = sorted(_session(r["value"]) for r in out if r["topic"].endswith("-sessions"))
    oracle.assert_each_once(offline_sessions, expected)  # offline mode and the oracle agree
    return [tuple(s) for s in expected]


def offline(config_path: Path, produced: list[bytes]) -> list[dict]:
    """What ``sessionizer process`` writes for the events produced, every topic."""
    out: list[dict] = []
    summary = process_lines(load_config(config_path, {}), produced, lambda line: out.append(orjson.loads(line)))
    assert summary.lines == len(produced)
    return out


def expected_derived(app, config_path: Path, produced: list[bytes]) -> list[bytes]:
    """The rule's records offline mode derives from the events produced, canonical: the service must write each once."""
    return sorted(canonical(r["value"]) for r in offline(config_path, produced) if r["topic"] == app.topic("derived"))


def canonical(value: object) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _session(value: dict) -> Session:
    v = value["value"]
    # Grouped by the record key (``key = "@key"``), the envelope names it "key".
    return (value["user_id"] if "user_id" in value else value["key"], v["session_start_ms"], v["session_end_ms"], v["event_count"], v["amount"])


def session_of(record: Record) -> Session:
    """An output record as (user, start, end, events, sum of amount)."""
    return _session(record.json())


def sessions_in(records: list[Record]) -> list[Session]:
    return sorted(map(session_of, records))


def collect(app, services: list[Service], expected: int, timeout: float = 240, rule: bool = False) -> dict[str, list[Record]]:
    """Wait until ``expected`` sessions are out, stop the services, read the output, late and dead-letter
    topics to their ends, and with ``rule`` the derived topic too.

    The wait is only a barrier: the assertions run on what ``read_all`` finds
    once nothing can be written any more.
    """
    return collect_outputs(app, services, {"sessions": expected}, timeout, also=["derived"] if rule else [])


def assert_exact(
    app, got: dict[str, list[Record]], expected: list[Session], produced: int | Workload, derived: list[bytes] | None = None
) -> None:
    """Each expected session exactly once, every event counted once; nothing late or dead-lettered but
    what was meant to be, each exactly once; with ``derived``, each derived record exactly once."""
    workload = produced if isinstance(produced, Workload) else None
    meant_late = Counter(workload.late if workload else ())
    meant_dead = Counter(workload.malformed if workload else ())
    late = got[app.topic("late")]
    on_time_late = [r for r in late if r.value not in meant_late]
    assert on_time_late == [], (
        f"{len(on_time_late)} on-time events went to the late topic, e.g. {on_time_late[0].headers if on_time_late else None}"
    )
    assert Counter(r.value for r in late) == meant_late, "each event written late reaches the late topic once"
    assert {r.headers.get("sessionizer.reason_code") for r in late} <= {b"behind_watermark"}
    assert Counter(r.value for r in got[app.topic("dlq")]) == meant_dead, "each record that is not JSON is dead-lettered once"
    sessions = sessions_in(got[app.topic("sessions")])
    oracle.assert_each_once(sessions, expected)
    on_time = len(workload.produced) if workload else produced
    assert oracle.conserved([oracle.Session(*s) for s in sessions], late=len(late) - len(meant_late), produced=on_time)
    if derived is not None:
        assert derived, "the rule derived something to check"
        oracle.assert_each_once(sorted(canonical(r.json()) for r in got[app.topic("derived")]), derived)

