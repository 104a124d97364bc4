"""How near the bare consume loop a pure-Python consumer can get at all, on the data bench.py replays.

    python bench/floor.py --bootstrap 127.0.0.1:9092 --events 1000000 --shape three-topics --runs 3

Issue 25 asks the direct path for 0.3 of the bare loop. This puts that goal
beside loops that do less than the service, each a strict subset of its
per-event work, in one process over the same backlog, interleaved:

1. ``bare``: consume and take each value (``bench.py``'s ceiling);
2. ``+ decode``: and ``orjson.loads`` each value;
3. ``+ sessions``: and keep each key's open session in a dict, split at the
   gap, with the bench pipeline's two aggregates (count by type, sum of
   ``details.amount``) written out by hand; a closed session is counted,
   not rendered;
4. ``+ changelog``: and, every 100 ms as the service commits, serialize each
   key changed since (what any changelog must at least do);
5. ``+ rocksdb``: and write those in one RocksDB write batch (the service's
   store options).

None keeps state on disk, orders events by time, produces anything or runs a
transaction: the service does all of that on top. The ratio to the bare loop
of the last line is an upper bound for any pure-Python sessionizer of this
shape on this machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer
from rocksdict import Rdict, WriteBatch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import add_data_arguments, make_backlog, produce_backlog

# bench.py put the repository on the path.
from service.state.memory import StoreMemory

#: The bench pipeline's gap (``bench.py``'s config).
GAP_MS = 60_000
#: The service's commit interval.
COMMIT_S = 0.1


def consume_all(bootstrap: str, topics: list[str], n: int, work: Callable[[list[Any]], None], tick: Callable[[], None]) -> float:
    """Events/s of a fresh group reading the ``n`` records of ``topics`` with ``work`` done on each batch."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-floor-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.queue.backoff.ms": 10,
        }
    )
    consumer.subscribe(topics)
    seen = 0
    started = None
    next_tick = 0.0
    while seen < n:
        batch = consumer.consume(5000, 1.0)
        if not batch:
            continue
        now = time.perf_counter()
        if started is None:
            started = now
            next_tick = now + COMMIT_S
        work(batch)
        seen += len(batch)
        if now >= next_tick:
            tick()
            next_tick = now + COMMIT_S
    elapsed = time.perf_counter() - (started or 0.0)
    consumer.close()
    return n / elapsed


def bare(batch: list[Any]) -> None:
    for message in batch:
        message.value()


def decode(batch: list[Any]) -> None:
    loads = orjson.loads
    for message in batch:
        loads(message.value())


class Sessions:
    """Each key's open session as ``[start, end, count, {type: count}, sum]``; closed ones counted."""

    def __init__(self) -> None:
        self.open: dict[bytes, list[Any]] = {}
        self.changed: set[bytes] = set()
        self.closed = 0

    def work(self, batch: list[Any]) -> None:
        loads = orjson.loads
        sessions = self.open
        changed = self.changed
        for message in batch:
            event = loads(message.value())
            key = message.key()
            at = event["timestamp"]
            kind = event.get("type")
            details = event.get("details")
            amount = details.get("amount") if type(details) is dict else None
            session = sessions.get(key)
            if session is None or at - session[1] > GAP_MS or session[0] - at > GAP_MS:
                if session is not None:
                    self.closed += 1
                session = sessions[key] = [at, at, 0, {}, 0]
            elif at < session[0]:
                session[0] = at
            elif at > session[1]:
                session[1] = at
            session[2] += 1
            if kind is not None:
                counts = session[3]
                counts[kind] = counts.get(kind, 0) + 1
            if amount is not None:
                session[4] += amount
            changed.add(key)

    def no_tick(self) -> None:
        self.changed.clear()

    def changelog(self) -> None:
        dumps = orjson.dumps
        sessions = self.open
        for key in self.changed:
            dumps(sessions[key])
        self.changed.clear()

    def write(self, db: Rdict) -> None:
        dumps = orjson.dumps
        sessions = self.open
        batch = WriteBatch(raw_mode=True)
        for key in self.changed:
            batch.put(key, dumps(sessions[key]))
        db.write(batch)
        self.changed.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser, guarantee=None)
    args = parser.parse_args()
    backlog = make_backlog(args.shape, args.events, args.users)
    produce_backlog(args.bootstrap, backlog, args.partitions)
    print(f"{backlog.describe()}, {args.users} users, {args.partitions} partitions, {args.runs} interleaved runs")

    def nothing() -> None:
        pass

    loops: dict[str, Callable[[], float]] = {
        "bare": lambda: consume_all(args.bootstrap, backlog.topics, args.events, bare, nothing),
        "+ decode": lambda: consume_all(args.bootstrap, backlog.topics, args.events, decode, nothing),
    }

    def sessions(changelog: bool) -> float:
        state = Sessions()
        return consume_all(args.bootstrap, backlog.topics, args.events, state.work, state.changelog if changelog else state.no_tick)

    def stored() -> float:
        state = Sessions()
        with tempfile.TemporaryDirectory() as directory:
            memory = StoreMemory()
            options = memory.options()
            options.create_if_missing(True)
            db = Rdict(directory, options)
            try:
                return consume_all(args.bootstrap, backlog.topics, args.events, state.work, lambda: state.write(db))
            finally:
                db.close()

    loops["+ sessions"] = lambda: sessions(False)
    loops["+ changelog"] = lambda: sessions(True)
    loops["+ rocksdb"] = stored
    results: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(args.runs):
        for name, loop in loops.items():
            results[name].append(loop())
    base = statistics.median(results["bare"])
    for name, runs in results.items():
        median = statistics.median(runs)
        print(f"{name:12s} median {median:>11,.0f} events/s  ratio to bare {median / base:.3f}  runs {[round(r) for r in runs]}")


if __name__ == "__main__":
    main()
