"""End-to-end throughput of sessionizer against a bare confluent-kafka consume loop.

    python bench/bench.py --events 200000 --bootstrap 127.0.0.1:9092
    python bench/bench.py --events 200000 --shape three-topics [--path direct|repartition|both]

1. Produces N JSON events (many users, realistic gaps, bounded disorder), keyed
   by user_id, all before the service starts (a backlog replay):
   - one-topic (the default): to one source topic;
   - three-topics: each event to web, mobile or backend, drawn at random with
     a fixed seed, each topic with --partitions partitions.
2. Ceiling: a bare confluent-kafka loop consuming those N records in batches
   (over every partition of every source topic).
3. The service (a subprocess) from the moment it is processing until its
   consumer group has committed every source offset, and every repartition
   offset when it has a repartition topic: events/s end to end, and the CPU
   the service's process (every thread of it) spent meanwhile, in µs per
   event: on a shared machine the CPU per event moves far less between runs
   than the events/s. ``--repo OTHER`` runs another checkout's service (an
   A/B against a worktree of an older commit, on the same data). Then it waits
   until every session is on the output topic, checks the count against
   offline mode, and counts the records on the late topic (a replay must give 0).
   - one-topic: the pipeline re-keys by user_id through a repartition topic,
     exactly-once and at-least-once (--guarantee, default both);
   - three-topics: the same pipeline over the three topics read two ways
     (--path, default both), exactly-once unless told otherwise: "direct"
     (key = "@key": task i reads partition i of every topic, no repartition
     topic) and "repartition" (key = "user_id").

With ``--format avro`` (one-topic only) the same events are also produced as
Avro in Confluent's wire format to a second topic, their schema registered in
the registry ``--schema-registry`` names, and every run is made twice, one
with JSON in and out and one with Avro in and Avro out, interleaved; the
per-event decode cost of Avro (the service's decoder) and of orjson is
measured on the same events first::

    python bench/bench.py --format avro --schema-registry http://127.0.0.1:8081/apis/ccompat/v7

Prints each figure and the ratio service / ceiling, and exactly-once /
at-least-once, direct / repartition or avro / json. Repeat runs (--runs), interleaved
between the guarantees or paths (one run of each per round), and the median
is printed, since shared machines are noisy.
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
from dataclasses import dataclass
from pathlib import Path

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from service.commands.process import process_lines  # noqa: E402
from service.config import load_config  # noqa: E402

#: The source topics of the three-topics shape (each name gets the run's suffix).
THREE_TOPICS = ("web", "mobile", "backend")
#: The seed that draws each event's topic in the three-topics shape.
SPLIT_SEED = 7

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


def split(events: list[bytes], topics: list[str], seed: int = SPLIT_SEED) -> list[tuple[str, bytes]]:
    """Each event with the topic it goes to, drawn at random (a fixed seed), in the generated order."""
    rng = random.Random(seed)
    return [(rng.choice(topics), raw) for raw in events]


def by_topic(placed: list[tuple[str, bytes]]) -> dict[str, list[bytes]]:
    """Each topic's events, in the generated order."""
    out: dict[str, list[bytes]] = {}
    for topic, raw in placed:
        out.setdefault(topic, []).append(raw)
    return out


def produce(bootstrap: str, topic: str, events: list[bytes], partitions: int) -> None:
    produce_placed(bootstrap, [(topic, raw) for raw in events], [topic], partitions)


def produce_placed(bootstrap: str, placed: list[tuple[str, bytes]], topics: list[str], partitions: int) -> None:
    """Creates ``topics`` and produces each event to its topic, keyed by user_id, one producer, in the given order.

    Several topics are written together, as services sending at the same time
    would have: each record's Kafka timestamp (its produce time) then follows
    the generated order across topics too, which Quix's alignment relies on.
    """
    records = [(topic, raw[raw.index(b'"user_id":"') + 11 :].split(b'"', 1)[0], raw) for topic, raw in placed]
    produce_in_order(bootstrap, records, topics, partitions)


def produce_in_order(bootstrap: str, records: list[tuple[str, bytes, bytes]], topics: list[str], partitions: int) -> None:
    """Creates ``topics`` and produces each (topic, key, value), in order, keyed as a Java producer would."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = [NewTopic(topic, num_partitions=partitions, replication_factor=1) for topic in topics]
    for f in admin.create_topics(new).values():
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

    for topic, key, value in records:
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120) or failed:
        raise RuntimeError(f"producing the events failed: {failed[:3]}")


def ceiling(bootstrap: str, topics: str | list[str], n: int) -> float:
    """A bare consume loop: the most any Python consumer of these topics (every partition) can do."""
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
    consumer.subscribe([topics] if isinstance(topics, str) else list(topics))
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
[http]
port = 0
[log]
level = "warning"
[pipelines.sessions]
sources = [{sources}]
key = "{key}"
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


def config_text(
    app: str,
    state: object,
    guarantee: str,
    bootstrap: str,
    partitions: int,
    sources: str | list[str],
    key: str = "user_id",
    registry: str | None = None,
) -> str:
    """The bench pipeline's configuration: output <app>-sessions; key "user_id" (a repartition topic) or "@key" (direct).

    With ``registry``, the sources are Avro and so is the output.
    """
    names = [sources] if isinstance(sources, str) else sources
    text = CONFIG.format(
        app=app, state=state, guarantee=guarantee, bootstrap=bootstrap, partitions=partitions,
        sources=", ".join(f'"{name}"' for name in names), key=key,
    )  # fmt: skip
    if registry is None:
        return text
    text = text.replace(f'output = "{app}-sessions"\n', "")
    text += f'[pipelines.sessions.output]\ntopic = "{app}-sessions"\nserialization = "avro"\n'
    text += f'[schema_registry]\nurl = "{registry}"\n'
    return text + "".join(f'[sources."{name}"]\nformat = "avro"\n' for name in names)


#: The bench events in Avro: the fields ``generate`` writes.
AVRO_EVENT = {
    "type": "record",
    "name": "BenchEvent",
    "namespace": "sessionizer.bench",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "user_id", "type": "string"},
        {"name": "timestamp", "type": "long"},
        {"name": "type", "type": "string"},
        {"name": "details", "type": {"type": "record", "name": "Details", "fields": [
            {"name": "page", "type": "string"}, {"name": "amount", "type": "long"}]}},
    ],
}  # fmt: skip


def avro_frames(events: list[bytes], registry: str, topic: str) -> list[bytes]:
    """The events as Avro in Confluent's wire format, with ``AVRO_EVENT`` registered as ``<topic>-value``."""
    import io
    import json

    import fastavro
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

    client = SchemaRegistryClient({"url": registry, "timeout": 10})
    schema_id = client.register_schema(f"{topic}-value", Schema(json.dumps(AVRO_EVENT), "AVRO"))
    parsed = fastavro.parse_schema(AVRO_EVENT)
    prefix = b"\x00" + schema_id.to_bytes(4, "big")
    frames = []
    for raw in events:
        out = io.BytesIO()
        out.write(prefix)
        fastavro.schemaless_writer(out, parsed, orjson.loads(raw))
        frames.append(out.getvalue())
    return frames


def decode_costs(events: list[bytes], frames: list[bytes], registry: str, rounds: int = 7) -> dict[str, list[float]]:
    """µs per event of each way of reading one event, every way over the same events, rounds interleaved."""
    from service.config.schema import SchemaRegistryConfig
    from service.runtime.formats import avro
    from service.runtime.formats.registry import Registry

    decode = avro.decoder(Registry.from_config(SchemaRegistryConfig(registry)))
    decode(frames[0])  # the schema fetched once, as the service does
    loads, dumps = orjson.loads, orjson.dumps
    decoded = [decode(f) for f in frames]
    ways = {
        "orjson.loads (JSON in)": lambda: [loads(e) for e in events],
        "Avro decode (header, schema by id, fastavro)": lambda: [decode(f) for f in frames],
        "orjson.dumps of the decoded event (decoded frame)": lambda: [dumps(e) for e in decoded],
    }
    costs: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, way in ways.items():
            started = time.perf_counter()
            way()
            costs[name].append((time.perf_counter() - started) / len(events) * 1e6)
    return costs


class GroupProgress:
    """How far a consumer group has committed, asked by one consumer kept for the whole run.

    The run's end is polled for every 50 ms. A consumer made for each probe
    connected, fetched metadata and closed again each time: a client's start-up
    and broker work in the timed window, on a machine of two cores, and the
    probe's own latency in the run's time. The consumer never subscribes, so it
    never joins the group it reads.
    """

    def __init__(self, bootstrap: str, app: str) -> None:
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": app, "enable.auto.commit": False})
        #: The log end of each partition that no one writes to any more (a backlog's), read once.
        self._fixed_ends: dict[tuple[str, int], int] = {}

    def count(self, topics: str | list[str], partitions: int) -> int | None:
        """Records of ``topics`` the group has committed, None before its first commit.

        The backlog's topics are new, so their offsets count records from 0. A run
        is timed from the first commit on, and counts the records after it: what
        the service did before that is not in the run's time nor its CPU, and a
        service that commits less often in a backlog (``app.catch_up_commit_interval``)
        has done more by then.
        """
        names = [topics] if isinstance(topics, str) else topics
        committed = self._consumer.committed([TopicPartition(t, p) for t in names for p in range(partitions)], timeout=10)
        offsets = [tp.offset for tp in committed if tp.offset >= 0]
        return sum(offsets) if offsets else None

    def everything(self, topics: dict[str, int], growing: frozenset[str] = frozenset()) -> bool:
        """Has the group committed every record of ``topics`` (name -> partitions)? ``growing`` topics'
        ends are read again each time (a repartition topic the service is still writing)."""
        committed = self._consumer.committed([TopicPartition(t, p) for t, n in topics.items() for p in range(n)], timeout=10)
        for tp in committed:
            where = (tp.topic, tp.partition)
            high = self._fixed_ends.get(where)
            if high is None:
                high = self._consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)[1]
                if tp.topic not in growing:
                    self._fixed_ends[where] = high
            # the last offset of a transactional partition is a commit marker
            if tp.offset < 0 or tp.offset < high - 1:
                return False
        return True

    def close(self) -> None:
        self._consumer.close()


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


def count_all(bootstrap: str, topic: str, patience: float = 120.0) -> int:
    """The committed records on ``topic``, read to the end of every partition; 0 if it does not exist."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-count-{uuid.uuid4().hex[:6]}",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            return 0
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions])
        seen = 0
        at_end: set[int] = set()
        deadline = time.monotonic() + patience
        while len(at_end) < len(metadata.partitions):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{topic}: partitions {sorted(set(metadata.partitions) - at_end)} not read to their end")
            for m in consumer.consume(5000, 0.5):
                if m.error() is None:
                    seen += 1
                    at_end.discard(m.partition())
                elif m.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(m.partition())
                else:
                    raise RuntimeError(m.error())
        return seen
    finally:
        consumer.close()


def topic_exists(bootstrap: str, topic: str) -> bool:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return topic in admin.list_topics(timeout=10).topics


@dataclass
class ServiceRun:
    #: Events/s from the first offset commit until every source (and repartition) offset is committed,
    #: counting the events after that first commit.
    rate: float
    #: Seconds from the first offset commit until every session is on the output topic.
    all_out: float
    #: Records on the late topic and on the dead-letter topic, read to their end once the service has stopped.
    late: int
    dead: int
    #: CPU seconds (user + system, every thread) the service spent per event meanwhile, in µs; None without /proc.
    cpu_us: float | None = None


def _cpu_seconds(pid: int) -> float | None:
    """User plus system CPU of a process and all its threads so far (Linux's /proc), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def service_run(
    bootstrap: str,
    sources: str | list[str],
    n: int,
    guarantee: str,
    partitions: int,
    expected_sessions: int,
    key: str = "user_id",
    registry: str | None = None,
    repo: Path = REPO,
) -> ServiceRun:
    """One run of ``repo``'s service on a fresh app id over ``sources``, grouped by ``key`` ("@key" reads them directly).

    Raises RuntimeError, with the service's log, when it exits early, when the
    output topic does not hold exactly ``expected_sessions`` sessions, or when
    a direct pipeline has a repartition topic after all.
    """
    names = [sources] if isinstance(sources, str) else list(sources)
    app = f"bench-{uuid.uuid4().hex[:6]}"
    repartition = f"{app}-sessions-repartition"
    direct = key == "@key"
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.toml"
        config.write_text(config_text(app, f"{tmp}/state", guarantee, bootstrap, partitions, names, key, registry))
        log_path = Path(tmp) / "service.log"
        with open(log_path, "wb") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen([sys.executable, "-m", "service", "run", "--config", str(config)], cwd=repo, stdout=log, stderr=log)
        try:
            # The direct path has no repartition topic: waiting for its offsets would wait forever.
            topics = {name: partitions for name in names}
            if not direct:
                topics[repartition] = partitions
            progress = GroupProgress(bootstrap, app)
            try:
                # processing starts once the group has formed: the first committed offset shows it, and what it counts
                while (before := progress.count(names, partitions)) is None:
                    if proc.poll() is not None:
                        raise RuntimeError(log_path.read_text())
                    time.sleep(0.05)
                started = time.perf_counter()
                cpu_before = _cpu_seconds(proc.pid)
                while not progress.everything(topics, frozenset({repartition})):
                    if proc.poll() is not None:
                        raise RuntimeError(log_path.read_text())
                    time.sleep(0.05)
                processed = time.perf_counter() - started
                cpu_after = _cpu_seconds(proc.pid)
            finally:
                progress.close()
            seen = count_records(bootstrap, f"{app}-sessions", expected_sessions, timeout=180)
            all_out = time.perf_counter() - started
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        # Read to the end once the service has stopped: every record it will ever write is there.
        sessions = count_all(bootstrap, f"{app}-sessions")
        late = count_all(bootstrap, f"{app}-late")
        dead = count_all(bootstrap, f"{app}-dead-letter")
        problems = []
        if seen != expected_sessions or sessions != expected_sessions:
            problems.append(f"{sessions} sessions on the output topic, offline mode computes {expected_sessions}")
        if direct and topic_exists(bootstrap, repartition):
            problems.append(f"the direct pipeline has a repartition topic, {repartition}")
        if problems:
            raise RuntimeError("; ".join(problems) + f" ({app}); the service's log:\n" + log_path.read_text(errors="replace")[-5000:])
    counted = n - before
    cpu_us = None if cpu_before is None or cpu_after is None else (cpu_after - cpu_before) / counted * 1e6
    return ServiceRun(counted / processed, all_out, late, dead, cpu_us)


def offline(events: list[bytes] | list[tuple[str, bytes]], topic: str | list[str]) -> tuple[list[str], dict[str, int]]:
    """What ``sessionizer process`` makes of the events: the output lines and the records per topic.

    With several topics, ``events`` are (topic, event) pairs, processed as wrapped
    lines ``{"topic": t, "value": event}``: offline mode keeps a watermark per
    topic. Offline mode has no record key, so the pipeline is always keyed by
    user_id; the direct path's sessions are the same.
    """
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "c.toml"
        config.write_text(config_text("offline", tmp, "exactly_once", "x:1", 1, topic))
        lines: list[str] = []
        if isinstance(topic, str):
            summary = process_lines(load_config(config, {}), events, lines.append)
        else:
            wrapped = [b'{"topic":' + orjson.dumps(t) + b',"value":' + raw + b"}" for t, raw in events]
            summary = process_lines(load_config(config, {}), wrapped, lines.append, wrapped=True)
    return lines, summary.records


def expected_sessions(events: list[bytes] | list[tuple[str, bytes]], topic: str | list[str]) -> int:
    records = offline(events, topic)[1]
    late = records.get("offline-late", 0)
    if late:
        print(f"note: offline mode finds {late} late events in the generated data")
    return records.get("offline-sessions", 0)


def add_data_arguments(parser: argparse.ArgumentParser, guarantee: str | None) -> None:
    """The options bench.py and peers.py share: broker, data, shape, runs and guarantee."""
    parser.add_argument("--bootstrap", default=os.environ.get("SESSIONIZER_BENCH_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--partitions", type=int, default=6, help="of each source topic")
    parser.add_argument("--shape", choices=SHAPES, default="one-topic",
                        help="one-topic: every event on one topic; three-topics: each event on web, mobile or backend "
                             "(a random draw, fixed seed), co-partitioned, keyed by user_id")  # fmt: skip
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--guarantee", choices=["exactly_once", "at_least_once", "both"], default=guarantee)


SHAPES = ["one-topic", "three-topics"]


@dataclass
class Backlog:
    """The generated events and where they are produced: before any app starts, so every run replays a backlog."""

    topics: list[str]
    #: Each event with its topic, in the generated order.
    placed: list[tuple[str, bytes]]

    @property
    def events(self) -> list[bytes]:
        return [raw for _, raw in self.placed]

    @property
    def offline_input(self) -> tuple[list[bytes] | list[tuple[str, bytes]], str | list[str]]:
        """``offline``'s arguments: plain events for one topic, (topic, event) pairs for several."""
        if len(self.topics) == 1:
            return self.events, self.topics[0]
        return self.placed, self.topics

    def describe(self) -> str:
        if len(self.topics) == 1:
            return f"{len(self.placed)} events"
        counts = by_topic(self.placed)
        spread = ", ".join(f"{t} {len(counts.get(t, [])):,}" for t in self.topics)
        return f"{len(self.placed)} events over {len(self.topics)} topics ({spread})"


def make_backlog(shape: str, events: int, users: int) -> Backlog:
    suffix = uuid.uuid4().hex[:6]
    generated = generate(events, users)
    if shape == "one-topic":
        topic = f"bench-events-{suffix}"
        return Backlog([topic], [(topic, raw) for raw in generated])
    topics = [f"bench-{name}-{suffix}" for name in THREE_TOPICS]
    return Backlog(topics, split(generated, topics))


def produce_backlog(bootstrap: str, backlog: Backlog, partitions: int) -> None:
    produce_placed(bootstrap, backlog.placed, backlog.topics, partitions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(parser, guarantee=None)
    parser.add_argument("--path", choices=["direct", "repartition", "both"], default="both",
                        help="three-topics only: read the topics directly (key = \"@key\"), through a repartition "
                             "topic (key = \"user_id\"), or both, interleaved (default)")  # fmt: skip
    parser.add_argument("--format", choices=["json", "avro"], default="json",
                        help="avro: also run with Avro in and out, next to JSON (one-topic only; needs --schema-registry)")  # fmt: skip
    parser.add_argument("--schema-registry", default=os.environ.get("SESSIONIZER_BENCH_REGISTRY", "http://127.0.0.1:8081/apis/ccompat/v7"))
    parser.add_argument("--repo", type=Path, nargs="+", default=[REPO],
                        help="the checkouts whose service runs (default: this one); several run interleaved, on the same "
                             "data, each compared with the first")  # fmt: skip
    args = parser.parse_args()
    repos = [repo.resolve() for repo in args.repo]
    if args.format == "avro":
        if args.shape != "one-topic":
            parser.error("--format avro runs the one-topic shape")
        avro_main(args)
        return
    # one-topic compares the guarantees (both by default); three-topics compares the paths, exactly-once by default.
    guarantee = args.guarantee or ("both" if args.shape == "one-topic" else "exactly_once")
    guarantees = ["exactly_once", "at_least_once"] if guarantee == "both" else [guarantee]
    if args.shape == "one-topic":
        paths = ["repartition"]
    else:
        paths = ["direct", "repartition"] if args.path == "both" else [args.path]

    backlog = make_backlog(args.shape, args.events, args.users)
    sessions = expected_sessions(*backlog.offline_input)
    produce_backlog(args.bootstrap, backlog, args.partitions)
    each = " each" if len(backlog.topics) > 1 else ""
    print(f"{backlog.describe()}, {args.users} users, {sessions} sessions, {args.partitions} partitions{each}, {os.cpu_count()} cores")

    ceilings = [ceiling(args.bootstrap, backlog.topics, args.events) for _ in range(args.runs)]
    ceiling_median = statistics.median(ceilings)
    over = "" if len(backlog.topics) == 1 else f" over the {len(backlog.topics)} topics"
    print(f"ceiling (bare confluent-kafka consume loop{over}): median {ceiling_median:,.0f} events/s  runs {[round(c) for c in ceilings]}")

    runs: dict[tuple[Path, str, str], list[ServiceRun]] = {(r, g, p): [] for r in repos for g in guarantees for p in paths}
    # Interleaved: one run of each checkout, guarantee and path, then the next, so a noisy neighbour hurts them alike.
    for round_ in range(args.runs):
        for guarantee in guarantees:
            for path in paths:
                for repo in repos:
                    run = service_run(
                        args.bootstrap, backlog.topics, args.events, guarantee, args.partitions, sessions,
                        key="@key" if path == "direct" else "user_id", repo=repo,
                    )  # fmt: skip
                    runs[(repo, guarantee, path)].append(run)
                    if args.shape != "one-topic" or len(repos) > 1:
                        where = f" {repo}" if len(repos) > 1 else ""
                        print(f"  run {round_ + 1}:{where} {path} {guarantee} {run.rate:,.0f} events/s, "
                              f"CPU {_us(run.cpu_us)} µs/event, all sessions out after {run.all_out:.1f} s, "
                              f"{run.late} late, {run.dead} dead letters", flush=True)  # fmt: skip

    medians: dict[tuple[Path, str, str], tuple[float, float | None]] = {}
    for (repo, guarantee, path), done in runs.items():
        median = statistics.median(r.rate for r in done)
        cpus = [r.cpu_us for r in done if r.cpu_us is not None]
        cpu = statistics.median(cpus) if cpus else None
        medians[(repo, guarantee, path)] = (median, cpu)
        name = "sessionizer" if args.shape == "one-topic" else f"sessionizer {path}"
        if len(repos) > 1:
            name += f" [{repo}]"
        print(
            f"{name} {guarantee}: median {median:,.0f} events/s end to end  runs {[round(r.rate) for r in done]}  "
            f"ratio to ceiling {median / ceiling_median:.3f}  CPU median {_us(cpu)} µs/event  "
            f"(all {sessions} sessions out after median {statistics.median(r.all_out for r in done):.1f} s; "
            f"late records {[r.late for r in done]}, dead letters {[r.dead for r in done]})"
        )
    for repo in repos:
        where = f" [{repo}]" if len(repos) > 1 else ""
        if len(guarantees) == 2:
            for path in paths:
                eos, alo = (medians[(repo, g, path)][0] for g in guarantees)
                print(f"exactly_once / at_least_once{'' if args.shape == 'one-topic' else ' (' + path + ')'}{where}: {eos / alo:.2f}")
        if len(paths) == 2:
            for guarantee in guarantees:
                direct, repartition = (medians[(repo, guarantee, p)][0] for p in paths)
                print(f"direct / repartition ({guarantee}){where}: {direct / repartition:.2f}")
    for repo in repos[1:]:
        for guarantee in guarantees:
            for path in paths:
                (rate, cpu), (first_rate, first_cpu) = medians[(repo, guarantee, path)], medians[(repos[0], guarantee, path)]
                per_event = f", CPU per event {cpu / first_cpu:.2f}x" if cpu and first_cpu else ""
                print(f"{repo} / {repos[0]} ({path} {guarantee}): events/s {rate / first_rate:.2f}x{per_event}")
    late = sum(r.late for done in runs.values() for r in done)
    if late:
        print(f"FAILED: {late} records on the late topics; a replay of a backlog must give none")
        sys.exit(1)


def _us(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}"


def avro_main(args: argparse.Namespace) -> None:
    """JSON in and out against Avro in and out, the same events, runs interleaved (exactly-once unless told)."""
    guarantee = args.guarantee if args.guarantee not in (None, "both") else "exactly_once"
    backlog = make_backlog("one-topic", args.events, args.users)
    (json_topic,) = backlog.topics
    avro_topic = json_topic.replace("bench-events-", "bench-avro-")
    sessions = expected_sessions(*backlog.offline_input)
    frames = avro_frames(backlog.events, args.schema_registry, avro_topic)
    print(f"{backlog.describe()}, {args.users} users, {sessions} sessions, {args.partitions} partitions, {os.cpu_count()} cores")
    json_bytes = sum(map(len, backlog.events)) / len(backlog.events)
    avro_bytes = sum(map(len, frames)) / len(frames)
    print(f"average record: JSON {json_bytes:.0f} B, Avro frame {avro_bytes:.0f} B")
    sample = min(len(frames), 100_000)
    for name, costs in decode_costs(backlog.events[:sample], frames[:sample], args.schema_registry).items():
        print(f"  {name}: min {min(costs):.2f} µs/event, median {statistics.median(costs):.2f}")
    produce_backlog(args.bootstrap, backlog, args.partitions)
    keys = [raw[raw.index(b'"user_id":"') + 11 :].split(b'"', 1)[0] for raw in backlog.events]
    produce_keyed(args.bootstrap, avro_topic, list(zip(keys, frames)), args.partitions)
    runs: dict[str, list[ServiceRun]] = {"json": [], "avro": []}
    for round_ in range(args.runs):
        for fmt, topic in (("json", json_topic), ("avro", avro_topic)):
            run = service_run(
                args.bootstrap, topic, args.events, guarantee, args.partitions, sessions,
                registry=args.schema_registry if fmt == "avro" else None,
            )  # fmt: skip
            runs[fmt].append(run)
            print(f"  run {round_ + 1}: {fmt} in and out, {guarantee}: {run.rate:,.0f} events/s, "
                  f"all sessions out after {run.all_out:.1f} s, {run.late} late, {run.dead} dead letters", flush=True)  # fmt: skip
    medians = {fmt: statistics.median(r.rate for r in done) for fmt, done in runs.items()}
    for fmt, done in runs.items():
        print(f"sessionizer {fmt} in and out, {guarantee}: median {medians[fmt]:,.0f} events/s  runs {[round(r.rate) for r in done]}")
    print(f"avro / json: {medians['avro'] / medians['json']:.2f}")
    bad = sum(r.late + r.dead for done in runs.values() for r in done)
    if bad:
        print(f"FAILED: {bad} records on the late and dead-letter topics; a replay of a backlog must give none")
        sys.exit(1)


def produce_keyed(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], partitions: int) -> None:
    """``records`` (key, value) to a new topic, in order, keyed as a Java producer would."""
    produce_in_order(bootstrap, [(topic, key, value) for key, value in records], [topic], partitions)


if __name__ == "__main__":
    main()
