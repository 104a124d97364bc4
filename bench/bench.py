"""End-to-end throughput of sessionizer against a bare confluent-kafka consume loop.

    python bench/bench.py --events 200000 --bootstrap 127.0.0.1:9092

1. Produces N JSON events (many users, realistic gaps, bounded disorder) to a
   source topic.
2. Ceiling: a bare confluent-kafka loop consuming those N records in batches.
3. The service (a subprocess, exactly-once unless told otherwise) from the
   moment it is processing until its consumer group has committed every source
   and repartition offset: events/s end to end. Then it waits until every
   session is on the output topic and checks the count against offline mode.

Prints each figure and the ratio service / ceiling, and exactly-once /
at-least-once. Repeat runs (--runs), interleaved between the guarantees, and
the median is printed, since shared machines are noisy.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from service.commands.process import process_lines  # noqa: E402
from service.config import load_config  # noqa: E402

PAGES = ["/home", "/products", "/product/42", "/cart", "/checkout", "/search", "/account"]
TYPES = ["page_viewed"] * 6 + ["item_added_to_cart", "payment_processed"]


def generate(n: int, users: int, seed: int = 1) -> list[bytes]:
    """Events in roughly time order: sessions of a few events seconds apart, idle gaps of minutes.

    Disorder is bounded: each event's position is jittered by up to 2 s of event time.
    """
    rng = random.Random(seed)
    start = 1_700_000_000_000
    clocks = [start + rng.randrange(0, 600_000) for _ in range(users)]
    events = []
    for i in range(n):
        u = rng.randrange(users)
        clocks[u] += int(rng.expovariate(1 / 8_000)) if rng.random() > 0.08 else rng.randrange(120_000, 1_800_000)
        t = clocks[u]
        events.append(
            (
                t + rng.randrange(0, 2_000),
                orjson.dumps(
                    {
                        "event_id": f"e{i}",
                        "user_id": f"user_{u}",
                        "timestamp": t,
                        "type": rng.choice(TYPES),
                        "details": {"page": rng.choice(PAGES), "amount": rng.randrange(1, 500)},
                    }
                ),
            )
        )
    events.sort(key=lambda e: e[0])
    return [raw for _, raw in events]


def produce(bootstrap: str, topic: str, events: list[bytes], partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)]).values():
        f.result(30)
    # Idempotent, so a batch retried on a broker that is still settling cannot
    # land after later ones: reordered beyond grace, its events would be late.
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
        }
    )
    failed: list[str] = []

    def delivered(error: object, message: object) -> None:
        if error is not None:
            failed.append(str(error))

    for raw in events:
        key = raw[raw.index(b'"user_id":"') + 11 :].split(b'"', 1)[0]
        while True:
            try:
                producer.produce(topic, raw, key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120) or failed:
        raise RuntimeError(f"producing the events failed: {failed[:3]}")


def ceiling(bootstrap: str, topic: str, n: int) -> float:
    """A bare consume loop: the most any Python consumer of this topic can do."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-ceiling-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            # As the service's consumer: librdkafka's default (1 s) stalls a
            # partition's fetches whenever its local queue is full.
            "fetch.queue.backoff.ms": 10,
        }
    )
    consumer.subscribe([topic])
    seen = 0
    started = None
    while seen < n:
        batch = consumer.consume(5000, 1.0)
        if batch and started is None:
            started = time.perf_counter()
        for message in batch:
            if message.error() is None:
                message.value()
                seen += 1
    elapsed = time.perf_counter() - started
    consumer.close()
    return n / elapsed


CONFIG = """
[app]
id = "{app}"
instance_id = "bench"
state_dir = "{state}"
processing_guarantee = "{guarantee}"
[kafka]
bootstrap_servers = "{bootstrap}"
[topics]
partitions = {partitions}
replication_factor = 1
[http]
port = 0
[log]
level = "warning"
[pipelines.sessions]
sources = ["{topic}"]
key = "user_id"
time = "timestamp"
output = "{app}-sessions"
[pipelines.sessions.window]
type = "session"
gap = "60s"
grace = "5s"
[pipelines.sessions.aggregates]
types = {{ type = "count_by", field = "type" }}
amount = {{ type = "sum", field = "details.amount" }}
"""


def committed_everything(bootstrap: str, app: str, topics: dict[str, int]) -> bool:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": app, "enable.auto.commit": False})
    try:
        parts = [TopicPartition(t, p) for t, n in topics.items() for p in range(n)]
        committed = consumer.committed(parts, timeout=10)
        for tp in committed:
            high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)[1]
            # the last offset of a transactional partition is a commit marker
            if tp.offset < 0 or tp.offset < high - 1:
                return False
        return True
    finally:
        consumer.close()


def count_records(bootstrap: str, topic: str, expected: int, timeout: float) -> int:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-count-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    seen = 0
    deadline = time.monotonic() + timeout
    while seen < expected and time.monotonic() < deadline:
        for m in consumer.consume(5000, 0.5):
            if m.error() is None:
                seen += 1
            elif m.error().code() != KafkaError._PARTITION_EOF:
                raise RuntimeError(m.error())
    consumer.close()
    return seen


def service_run(bootstrap: str, topic: str, n: int, guarantee: str, partitions: int, expected_sessions: int) -> tuple[float, float]:
    app = f"bench-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.toml"
        config.write_text(
            CONFIG.format(app=app, state=f"{tmp}/state", guarantee=guarantee, bootstrap=bootstrap, partitions=partitions, topic=topic)
        )
        with open(Path(tmp) / "service.log", "wb") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen([sys.executable, "-m", "service", "run", "--config", str(config)], cwd=REPO, stdout=log, stderr=log)
        try:
            topics = {topic: partitions, f"{app}-sessions-repartition": partitions}
            # processing starts once the group has formed: the first committed offset shows it
            while not _any_committed(bootstrap, app, topic, partitions):
                if proc.poll() is not None:
                    raise RuntimeError((Path(tmp) / "service.log").read_text())
                time.sleep(0.05)
            started = time.perf_counter()
            while not committed_everything(bootstrap, app, topics):
                time.sleep(0.2)
            processed = time.perf_counter() - started
            seen = count_records(bootstrap, f"{app}-sessions", expected_sessions, timeout=180)
            all_out = time.perf_counter() - started
            if seen != expected_sessions:
                raise RuntimeError(f"{seen} sessions on the output topic, offline mode computes {expected_sessions}")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    return n / processed, all_out


def _any_committed(bootstrap: str, app: str, topic: str, partitions: int) -> bool:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": app, "enable.auto.commit": False})
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return any(tp.offset >= 0 for tp in committed)
    finally:
        consumer.close()


def offline(events: list[bytes], topic: str) -> tuple[list[str], dict[str, int]]:
    """What ``sessionizer process`` makes of the events: the output lines and the records per topic."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "c.toml"
        config.write_text(CONFIG.format(app="offline", state=tmp, guarantee="exactly_once", bootstrap="x:1", partitions=1, topic=topic))
        lines: list[str] = []
        summary = process_lines(load_config(config, {}), events, lines.append)
    return lines, summary.records


def expected_sessions(events: list[bytes], topic: str) -> int:
    records = offline(events, topic)[1]
    late = records.get("offline-late", 0)
    if late:
        print(f"note: offline mode finds {late} late events in the generated data")
    return records.get("offline-sessions", 0)


def add_data_arguments(parser: argparse.ArgumentParser, guarantee: str) -> None:
    """The options bench.py and peers.py share: broker, data, runs and guarantee."""
    parser.add_argument("--bootstrap", default=os.environ.get("SESSIONIZER_BENCH_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--guarantee", choices=["exactly_once", "at_least_once", "both"], default=guarantee)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser, guarantee="both")
    args = parser.parse_args()

    topic = f"bench-events-{uuid.uuid4().hex[:6]}"
    events = generate(args.events, args.users)
    sessions = expected_sessions(events, topic)
    produce(args.bootstrap, topic, events, args.partitions)
    print(f"{args.events} events, {args.users} users, {sessions} sessions, {args.partitions} partitions, {os.cpu_count()} cores")

    ceilings = [ceiling(args.bootstrap, topic, args.events) for _ in range(args.runs)]
    ceiling_median = statistics.median(ceilings)
    print(f"ceiling (bare confluent-kafka consume loop): median {ceiling_median:,.0f} events/s  runs {[round(c) for c in ceilings]}")

    guarantees = ["exactly_once", "at_least_once"] if args.guarantee == "both" else [args.guarantee]
    rates: dict[str, list[float]] = {g: [] for g in guarantees}
    totals: dict[str, list[float]] = {g: [] for g in guarantees}
    # Interleaved: one run of each guarantee, then the next, so a noisy neighbour hurts both alike.
    for _ in range(args.runs):
        for guarantee in guarantees:
            rate, total = service_run(args.bootstrap, topic, args.events, guarantee, args.partitions, sessions)
            rates[guarantee].append(rate)
            totals[guarantee].append(total)
    for guarantee in guarantees:
        median = statistics.median(rates[guarantee])
        print(
            f"sessionizer {guarantee}: median {median:,.0f} events/s end to end  runs {[round(r) for r in rates[guarantee]]}  "
            f"ratio to ceiling {median / ceiling_median:.3f}  "
            f"(all {sessions} sessions out after median {statistics.median(totals[guarantee]):.1f} s)"
        )
    if len(guarantees) == 2:
        eos, alo = (statistics.median(rates[g]) for g in guarantees)
        print(f"exactly_once / at_least_once: {eos / alo:.2f}")


if __name__ == "__main__":
    main()
