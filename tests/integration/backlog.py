"""A backlog: every event produced before the service starts, as operators replay topics.

Events of many users spread over several source topics. Within each topic
they are produced in event-time order with a jitter of up to grace, so
every source partition's own disorder is within grace: nothing may be late,
however fast or slow the service reads each partition. A topic can lag (its
event times trail the others' by minutes) or be empty.

What came out is checked against the independent oracle (``tests.oracle``)
and against ``sessionizer process`` over the same events.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from service.commands.process import process_lines
from service.config import load_config
from tests import oracle
from tests.integration.harness import Reader, Record, Service, collect_outputs, create_topics, producer, send

GAP_MS = 2_000
GRACE_MS = 1_000
#: Jitter of the production order, in event time: up to grace, so each partition's disorder is at most
#: grace, the edge of the promise.
JITTER_MS = GRACE_MS


@dataclass
class Backlog:
    #: topic -> events in production order
    by_topic: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for events in self.by_topic.values() for e in events]

    def __len__(self) -> int:
        return sum(len(events) for events in self.by_topic.values())

    def expected(self, key: str = "user_id") -> list[oracle.Session]:
        return oracle.sessions(((e[key], e["ts"], e["amount"]) for e in self.events), GAP_MS)

    def wrapped_lines(self) -> list[bytes]:
        """The events for ``sessionizer process --wrapped``: topic by topic, each in production order."""
        return [orjson.dumps({"topic": topic, "value": e}) for topic, events in self.by_topic.items() for e in events]


def generate(
    topics: list[str],
    users: int = 1_500,
    sessions: int = 4,
    per_session: tuple[int, int] = (2, 6),
    seed: int = 1,
    lag_ms: dict[str, int] | None = None,
    empty: tuple[str, ...] = (),
    start_ms: int = 1_700_000_000_000,
) -> Backlog:
    """Sessions of a few events 100-600 ms apart, separated by 3-20 s: each event to a random non-empty topic.

    A topic in ``lag_ms`` has every event time moved back by that much: read
    from the start, its partitions' event time trails the others' all along.
    """
    rng = random.Random(seed)
    lag_ms = lag_ms or {}
    busy = [t for t in topics if t not in empty]
    staged: dict[str, list[tuple[int, dict[str, Any]]]] = {t: [] for t in topics}
    for u in range(users):
        clock = start_ms + rng.randrange(0, 60_000)
        for _ in range(sessions):
            for _ in range(rng.randint(*per_session)):
                clock += rng.randrange(100, 600)
                topic = rng.choice(busy)
                ts = clock - lag_ms.get(topic, 0)
                event = {"user_id": f"user-{u}", "ts": ts, "amount": rng.randrange(1, 100)}
                staged[topic].append((ts + rng.randrange(0, JITTER_MS + 1), event))
            clock += rng.randrange(GAP_MS + 1_000, 20_000)
    backlog = Backlog()
    for topic in topics:
        staged[topic].sort(key=lambda item: item[0])
        backlog.by_topic[topic] = [event for _, event in staged[topic]]
    return backlog


def produce(backlog: Backlog, partitions: int = 6, keyed: bool = True) -> None:
    """Create the topics and produce every event, in order, idempotently.

    ``keyed``: the record key is the user id, placed by Kafka's default
    (murmur2) partitioner, so the topics are co-partitioned by user.
    Otherwise every record goes to a random partition.
    """
    create_topics(list(backlog.by_topic), partitions=partitions)
    out = producer()
    rng = random.Random(7)
    for topic, events in backlog.by_topic.items():
        for event in events:
            raw = orjson.dumps(event)
            if keyed:
                send(out, topic, raw, event["user_id"].encode())
            else:
                send(out, topic, raw, partition=rng.randrange(partitions))
    assert out.flush(120) == 0


def run_to_completion(app, outputs: dict[str, int], replicas: int = 1, timeout: float = 180) -> dict[str, list[Record]]:
    """Start the replicas on the backlog, wait for every expected session, stop them, read everything."""
    services = [app.service(f"i{n + 1}").start() for n in range(replicas)]
    services[0].wait_started()  # the topics exist once a task is up
    for service in services[1:]:
        service.wait_assigned()  # with more replicas than window tasks, some have none
    return collect_outputs(app, services, outputs, timeout)


def kill_while_replaying(
    app, service: Service, expected: int, kills: int, wipe_at: int = 1, restored: range | None = None, stores: list[str] | None = None
) -> None:
    """kill -9 ``service`` ``kills`` times while it replays a backlog, deleting its local state before restart ``wipe_at``;
    return once ``expected`` sessions are out.

    Each kill comes once another share of the sessions is out: the moment
    follows the service's progress, whatever the machine's speed. With
    ``restored``, each run restores those partitions before the next kill;
    with ``stores``, those are the stores found (and deleted) at restart ``wipe_at``.
    """
    reader = Reader([app.topic("sessions")])
    try:
        for kill in range(kills):
            reader.wait_for(expected * (kill + 1) // (kills + 2), timeout=240, topic=app.topic("sessions"))
            service.kill()
            if kill == wipe_at:
                store = app.state_dir / app.id / service.instance_id
                found = sorted(p.name for p in store.iterdir())
                assert found if stores is None else found == stores, f"local state under {store}: {found}"
                shutil.rmtree(store)
            service.start()
            if restored is None:
                service.wait_started(timeout=120)
            else:
                service.wait_restored(restored)
        reader.wait_for(expected, timeout=300, topic=app.topic("sessions"))
    finally:
        reader.close()


def emitted(records: list[Record], key: str = "user_id") -> list[oracle.Session]:
    """The sessions on an output topic, as the oracle writes them."""
    out = []
    for record in records:
        value = orjson.loads(record.value)
        v = value["value"]
        out.append(oracle.Session(value[key], v["session_start_ms"], v["session_end_ms"], v["event_count"], v["amount"]))
    return sorted(out)


def offline(config_path: Path, backlog: Backlog, output_topic: str, key: str = "user_id") -> list[oracle.Session]:
    """What ``sessionizer process --wrapped`` makes of the same events."""
    out: list[dict[str, Any]] = []
    process_lines(load_config(config_path, {}), backlog.wrapped_lines(), lambda line: out.append(orjson.loads(line)), wrapped=True)
    late = [r for r in out if r["topic"].endswith("-late")]
    assert not late, f"offline mode found {len(late)} late events"
    sessions = []
    for r in out:
        if r["topic"] != output_topic:
            continue
        v = r["value"]["value"]
        sessions.append(oracle.Session(r["value"][key], v["session_start_ms"], v["session_end_ms"], v["event_count"], v["amount"]))
    return sorted(sessions)

