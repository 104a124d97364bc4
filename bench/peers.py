"""Throughput of sessionizer against its peers on the same broker, machine and data.

    python3 bench/peers.py --bootstrap 127.0.0.1:9092 --events 200000 --runs 3

The data and the ceiling are bench/bench.py's. Then, --runs times each and
interleaved (so a noisy neighbour hurts every system alike):

- sessionizer, measured exactly as bench/bench.py measures it;
- Kafka Streams (bench/peers/kafka-streams, built with Maven on first use);
- Quix Streams (bench/peers/quix_job.py, run by --quix-python).

Each does the same job: re-key by user_id through a repartition topic, session
windows (gap 60 s, grace 5 s) on event time, count + count per type + sum of
details.amount, one record per closed session. Events/s run from the app's
first offset commit until its consumer group has committed every source and
repartition offset. Prints the median per system, its ratio to the ceiling and
sessionizer's ratio to it.

With --shape three-topics the events are split over three co-partitioned topics
keyed by user_id (bench/bench.py's three-topics backlog) and read without a
repartition topic: sessionizer's direct path (key = "@key") against Kafka
Streams' groupByKey over the three topics and Quix's concat of the three
dataframes, grouped by their record keys (no group_by).

Kafka Streams and Quix emit a session only once stream time (per repartition
partition) has passed it, and stream time stops with the input, so some
sessions never come out. Each peer's output is therefore checked against the
sessions that offline mode computes and that the peer's own close rule says
are closed at the final stream time of their partition.

A peer whose runtime is missing (no java, no quixstreams) is skipped.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import bench  # also puts the repository on sys.path, for service.*
from service.core.partitioner import partition_for

HERE = Path(__file__).resolve().parent
KS_DIR = HERE / "peers" / "kafka-streams"
KS_JAR = KS_DIR / "target" / "session-job.jar"
QUIX_JOB = HERE / "peers" / "quix_job.py"
QUIX_VENV_PYTHON = HERE / "peers" / ".venv" / "bin" / "python"
GAP_MS = 60_000
GRACE_MS = 5_000
#: How long an app may take to start processing, and then to process everything.
START_TIMEOUT = 180.0
RUN_TIMEOUT = 900.0

SYSTEMS = ["sessionizer", "kafka-streams", "quix"]

#: One session as every system reports it: user, first and last event time, event count.
Session = tuple[str, int, int, int]


@dataclass(frozen=True)
class Peer:
    name: str
    #: The command that runs the job until SIGTERM: (bootstrap, app id, sources, output, guarantee, work dir) -> argv.
    command: Callable[[str, str, list[str], str, str, Path], list[str]]
    #: What has one stream time, for a user and a number of partitions: its repartition partition, or the user itself.
    scope: Callable[[str, int], object]
    #: Whether a session ending at ``end`` has been emitted once its scope's stream time is ``stream_time``.
    emitted: Callable[[int, int], bool]
    #: Why the peer cannot run on this machine, or None.
    missing: Callable[[], str | None]
    #: Whether it goes through a repartition topic; if not, it must not have one.
    repartitions: bool = True
    #: Whether it is sessionizer (the numerator of "sessionizer / it"), which also counts its late records.
    ours: bool = False


@dataclass
class Figures:
    rates: list[float] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)


def sessionizer(partitions: int, direct: bool = False) -> Peer:
    """bench.py's pipeline; ``direct`` groups by the record key (``key = "@key"``), with no repartition topic."""

    def command(bootstrap: str, app: str, sources: list[str], output: str, guarantee: str, workdir: Path) -> list[str]:
        # bench.py's pipeline, whose output topic is <app>-sessions, as peer_run expects.
        config = workdir / "bench.toml"
        key = "@key" if direct else "user_id"
        config.write_text(bench.config_text(app, workdir / "state", guarantee, bootstrap, partitions, sources, key))
        return [sys.executable, "-m", "service", "run", "--config", str(config)]

    def emitted(end: int, stream_time: int) -> bool:
        # Once the sources are read to their end, the idle clock closes every session.
        return True

    name = "sessionizer/direct" if direct else "sessionizer"
    return Peer(name, command, _partition_of(str.encode), emitted, lambda: None, repartitions=not direct, ours=True)


def kafka_streams(threads: int, retention_ms: int, direct: bool = False) -> Peer:
    """The Kafka Streams job; ``direct`` is groupByKey on the co-partitioned sources' record keys, no repartition topic."""

    def command(bootstrap: str, app: str, sources: list[str], output: str, guarantee: str, workdir: Path) -> list[str]:
        ks_guarantee = "exactly_once_v2" if guarantee == "exactly_once" else "at_least_once"
        return ["java", "-jar", str(KS_JAR), "--bootstrap", bootstrap, "--app-id", app, "--source", ",".join(sources),
                "--output", output, "--guarantee", ks_guarantee, "--threads", str(threads), "--retention-ms", str(retention_ms),
                "--group-by", "record-key" if direct else "user_id"]  # fmt: skip

    def emitted(end: int, stream_time: int) -> bool:
        # suppress(untilWindowCloses) emits once window end <= stream time - gap - grace.
        return end + GAP_MS + GRACE_MS <= stream_time

    # Direct, a task reads partition i of every source and its stream time is the largest event time
    # among them: the scope is still the user's partition.
    name = f"kafka-streams/{threads}t" + (f"/ret{retention_ms // 1000}s" if retention_ms else "") + ("/direct" if direct else "")
    return Peer(name, command, _partition_of(str.encode), emitted, _missing_java, repartitions=not direct)


def quix(python: str, commit_interval: float, keys: str, closing: str, direct: bool = False) -> Peer:
    """The Quix job; ``direct`` concatenates the co-partitioned sources and groups by their record keys, no repartition topic."""

    def command(bootstrap: str, app: str, sources: list[str], output: str, guarantee: str, workdir: Path) -> list[str]:
        argv = [python, str(QUIX_JOB), "--bootstrap", bootstrap, "--app-id", app, "--source", ",".join(sources), "--output", output]
        argv += ["--guarantee", guarantee.replace("_", "-"), "--commit-interval", str(commit_interval)]
        argv += ["--keys", keys, "--closing", closing]
        if direct:
            argv += ["--group-by", "record-key"]
        return argv

    def emitted(end: int, stream_time: int) -> bool:
        # final() closes a session once the watermark (largest event time of the
        # partition, or of the key) reaches its exclusive end (last event + 1) + 2 x gap + grace.
        return end + 1 <= stream_time - 2 * GAP_MS - GRACE_MS

    def missing() -> str | None:
        found = subprocess.run([python, "-c", "import quixstreams"], capture_output=True)
        return None if found.returncode == 0 else f"`{python}` cannot import quixstreams (pip install quixstreams: see bench/README.md)"

    # With JSON keys (Quix's default) the repartition key of user_1 is "user_1", quotes included;
    # direct, the key is the sources' record key, the user id's bytes.
    json_keys = keys == "json" and not direct
    scope = _partition_of(orjson.dumps if json_keys else str.encode) if closing == "partition" else _user
    name = (
        "quix"
        + ("/json-keys" if json_keys else "")
        + ("/key-closing" if closing == "key" else "")
        + (f"/commit{commit_interval:g}s" if commit_interval != 0.1 else "")
        + ("/direct" if direct else "")
    )
    return Peer(name, command, scope, emitted, missing, repartitions=not direct)


@dataclass(frozen=True)
class QuixVariant:
    """One Quix row: ``CLOSING[:COMMIT_S][:json]``, e.g. ``partition``, ``key:5``, ``key:0.1:json``."""

    closing: str
    commit_interval: float = 0.1
    keys: str = "str"

    @classmethod
    def parse(cls, text: str) -> QuixVariant:
        closing, *rest = text.split(":")
        keys = "json" if rest and rest[-1] == "json" else "str"
        if keys == "json":
            rest.pop()
        if closing not in ("partition", "key") or len(rest) > 1:
            raise argparse.ArgumentTypeError(f"{text!r}: expected CLOSING[:COMMIT_S][:json], CLOSING partition or key")
        try:
            interval = float(rest[0]) if rest else 0.1
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: the commit interval {rest[0]!r} is not a number of seconds") from None
        return cls(closing, interval, keys)


def _partition_of(key_bytes: Callable[[str], bytes]) -> Callable[[str, int], object]:
    """The scope of a stream time kept per repartition partition, whose record keys are ``key_bytes(user)``."""
    return lambda user, partitions: partition_for(key_bytes(user), partitions)


def _user(user: str, partitions: int) -> object:
    return user


def _missing_java() -> str | None:
    """Why the Kafka Streams job cannot run, or None; builds its jar when Maven is there."""
    if shutil.which("java") is None:
        return "no `java` on PATH (Java 17+ runs the Kafka Streams job)"
    if not KS_JAR.exists():
        if shutil.which("mvn") is None:
            return f"{KS_JAR} is not built and there is no `mvn` to build it"
        print(f"building {KS_JAR} (mvn -q -B package)", flush=True)
        built = subprocess.run(["mvn", "-q", "-B", "package"], cwd=KS_DIR, capture_output=True, text=True)
        if built.returncode != 0:
            return f"mvn package failed:\n{built.stdout[-2000:]}{built.stderr[-2000:]}"
    return None


def offline_sessions(backlog: bench.Backlog) -> list[Session]:
    """Every session of the data, as offline mode computes it."""
    return [_session(orjson.loads(line)["value"]) for line in bench.offline(*backlog.offline_input)[0]]


def _session(record: dict) -> Session:
    v = record["value"]
    # sessionizer's direct path names the record key "key" in its envelope.
    user = record["user_id"] if "user_id" in record else record["key"]
    return user, v["session_start_ms"], v["session_end_ms"], v["event_count"]


def expected_for(peer: Peer, events: list[bytes], sessions: list[Session], partitions: int) -> set[Session]:
    """The sessions ``peer`` has emitted once it has processed every event."""
    stream_time: dict[object, int] = {}
    for raw in events:
        event = orjson.loads(raw)
        scope = peer.scope(event["user_id"], partitions)
        stream_time[scope] = max(stream_time.get(scope, 0), event["timestamp"])
    return {s for s in sessions if peer.emitted(s[2], stream_time[peer.scope(s[0], partitions)])}


@dataclass
class Run:
    #: Events/s from the first offset commit until every source and repartition offset is committed (bench.py's measure).
    rate: float
    #: Seconds from launching the process until every offset is committed: start-up included.
    launch_to_done: float
    sessions: list[Session]
    #: Records on sessionizer's late topic once it has stopped (None for the others, which drop late events).
    late: int | None = None


def peer_run(
    peer: Peer, bootstrap: str, sources: list[str], n: int, guarantee: str, partitions: int, expected: int, log_dir: Path | None = None
) -> Run:
    """One run of ``peer`` on a fresh app id; waits for ``expected`` sessions on its output topic.

    The job's output goes to <log_dir>/<app id>.log, or to a temporary file.
    """
    app = f"bench-{peer.name.replace('/', '-')}-{uuid.uuid4().hex[:6]}"
    output = f"{app}-sessions"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(output, num_partitions=partitions, replication_factor=1)]).values():
        f.result(30)
    with tempfile.TemporaryDirectory() as tmp:
        log_path = (log_dir or Path(tmp)) / f"{app}.log"
        launched = time.perf_counter()
        with open(log_path, "wb") as log:
            argv = peer.command(bootstrap, app, sources, output, guarantee, Path(tmp))
            proc = subprocess.Popen(argv, cwd=bench.REPO, stdout=log, stderr=log)
        try:
            progress = bench.GroupProgress(bootstrap, app)
            try:
                deadline = time.monotonic() + START_TIMEOUT
                while (before := progress.count(sources, partitions)) is None:
                    _check_alive(proc, log_path, deadline)
                    time.sleep(0.05)
                started = time.perf_counter()
                deadline = time.monotonic() + RUN_TIMEOUT
                topics = {source: partitions for source in sources}
                growing: frozenset[str] = frozenset()
                if peer.repartitions:
                    repartition = _repartition_topic(admin, app)
                    topics[repartition] = len(admin.list_topics(repartition, timeout=10).topics[repartition].partitions)
                    growing = frozenset({repartition})
                while not progress.everything(topics, growing):
                    _check_alive(proc, log_path, deadline)
                    time.sleep(0.05)
                done = time.perf_counter()
            finally:
                progress.close()
            sessions = read_sessions(bootstrap, output, partitions, expected)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if not peer.repartitions:
            extra = _repartition_topics(admin, app)
            if extra:
                raise RuntimeError(f"{app} reads its sources directly, yet has repartition topics {extra}:\n"
                                   f"{log_path.read_text(errors='replace')[-3000:]}")  # fmt: skip
    late = bench.count_all(bootstrap, f"{app}-late") if peer.ours else None
    return Run((n - before) / (done - started), done - launched, sessions, late)


def _check_alive(proc: subprocess.Popen, log_path: Path, deadline: float) -> None:
    if proc.poll() is not None:
        raise RuntimeError(f"exited with {proc.returncode}:\n{log_path.read_text(errors='replace')[-3000:]}")
    if time.monotonic() > deadline:
        raise RuntimeError(f"timed out:\n{log_path.read_text(errors='replace')[-3000:]}")


def _repartition_topic(admin: AdminClient, app: str) -> str:
    """sessionizer and Kafka Streams name it <app>-…-repartition, Quix repartition__<app>--<source>--user_id."""
    for _ in range(100):
        names = _repartition_topics(admin, app)
        if len(names) == 1:
            return names[0]
        if len(names) > 1:
            raise RuntimeError(f"more than one repartition topic for {app}: {names}")
        time.sleep(0.1)
    raise RuntimeError(f"no repartition topic for {app}")


def _repartition_topics(admin: AdminClient, app: str) -> list[str]:
    return [t for t in admin.list_topics(timeout=10).topics if app in t and (t.endswith("-repartition") or t.startswith("repartition__"))]


def read_sessions(bootstrap: str, topic: str, partitions: int, expected: int, patience: float = 120.0) -> list[Session]:
    """Committed records on ``topic``: until ``expected`` are read and every partition is at its end, or ``patience`` runs out."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-read-{uuid.uuid4().hex[:6]}",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    sessions: list[Session] = []
    at_end: set[int] = set()
    deadline = time.monotonic() + patience
    while not (len(at_end) == partitions and len(sessions) >= expected) and time.monotonic() < deadline:
        for m in consumer.consume(5000, 0.2):
            if m.error() is None:
                sessions.append(_session(orjson.loads(m.value())))
                at_end.discard(m.partition())
            elif m.error().code() == KafkaError._PARTITION_EOF:
                at_end.add(m.partition())
            else:
                raise RuntimeError(m.error())
    consumer.close()
    return sessions


def check(out: list[Session], expected: set[Session], total: int) -> str:
    """One line: how the peer's output compares with what offline mode says it should be."""
    got = set(out)
    line = f"{len(out):,} sessions out, {len(expected):,} expected (of {total:,} in the data)"
    if len(got) == len(out) and got == expected:
        return line + ": identical (user, start, end, count)"
    return (
        line + f": MISMATCH, {len(got & expected):,} identical, {len(got - expected):,} unexpected, "
        f"{len(expected - got):,} missing, {len(out) - len(got):,} duplicates; "
        f"{sum(s[3] for s in out):,} events in them, {sum(s[3] for s in expected):,} expected"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_data_arguments(parser, guarantee="exactly_once")
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    parser.add_argument("--ks-threads", type=int, nargs="+", default=[1], help="num.stream.threads (one row each)")
    parser.add_argument("--ks-retention-ms", type=int, nargs="+", default=[0],
                        help="session store retention, 0 for gap + grace, the default (one row each)")  # fmt: skip
    parser.add_argument("--quix-python", default=os.environ.get("SESSIONIZER_BENCH_QUIX_PYTHON") or _default_quix_python(),
                        help="an interpreter that has quixstreams (default: bench/peers/.venv if present)")  # fmt: skip
    parser.add_argument("--quix", nargs="+", type=QuixVariant.parse, default=[QuixVariant.parse("partition")], metavar="VARIANT",
                        help="Quix rows, each CLOSING[:COMMIT_S][:json]: closing strategy partition (like the others) or key "
                             "(Quix's default); commit interval in seconds, 0.1 like the others (Quix's default is 5); json for "
                             "Quix's default JSON repartition keys instead of the user id's bytes. Default: partition")  # fmt: skip
    parser.add_argument("--logs", type=Path, help="keep each run's log in this directory")
    args = parser.parse_args()
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)

    direct = args.shape == "three-topics"
    peers: list[Peer] = []
    if "sessionizer" in args.systems:
        peers.append(sessionizer(args.partitions, direct))
    if "kafka-streams" in args.systems:
        peers += [kafka_streams(t, r, direct) for t in args.ks_threads for r in args.ks_retention_ms]
    if "quix" in args.systems:
        peers += [quix(args.quix_python, v.commit_interval, v.keys, v.closing, direct) for v in args.quix]
    runnable = []
    for peer in peers:
        reason = peer.missing()
        if reason:
            print(f"skipping {peer.name}: {reason}")
        else:
            runnable.append(peer)

    backlog = bench.make_backlog(args.shape, args.events, args.users)
    sessions = offline_sessions(backlog)
    expected = {peer.name: expected_for(peer, backlog.events, sessions, args.partitions) for peer in runnable}
    bench.produce_backlog(args.bootstrap, backlog, args.partitions)
    each = " each" if len(backlog.topics) > 1 else ""
    print(f"{backlog.describe()}, {args.users} users, {len(sessions)} sessions, {args.partitions} partitions{each}, {os.cpu_count()} cores")

    ceilings = [bench.ceiling(args.bootstrap, backlog.topics, args.events) for _ in range(args.runs)]
    ceiling = statistics.median(ceilings)
    print(f"ceiling: runs {[round(c) for c in ceilings]}", flush=True)

    guarantees = ["exactly_once", "at_least_once"] if args.guarantee == "both" else [args.guarantee]
    results: dict[tuple[str, str], Figures] = {}
    # Interleaved: run 1 of every system, then run 2, so a noisy neighbour hurts them alike.
    for guarantee in guarantees:
        for run in range(args.runs):
            for peer in runnable:
                figures = results.setdefault((peer.name, guarantee), Figures())
                want = expected[peer.name]
                try:
                    result = peer_run(peer, args.bootstrap, backlog.topics, args.events, guarantee, args.partitions, len(want), args.logs)
                except RuntimeError as exc:
                    print(f"  {guarantee} run {run + 1}: {peer.name} failed: {exc}", flush=True)
                    continue
                figures.rates.append(result.rate)
                figures.walls.append(result.launch_to_done)
                late = "" if result.late is None else f"; {result.late} late"
                figures.checks.append(check(result.sessions, want, len(sessions)) + late)
                print(
                    f"  {guarantee} run {run + 1}: {peer.name} {result.rate:,.0f} events/s, "
                    f"{result.launch_to_done:.1f} s from launch; {figures.checks[-1]}",
                    flush=True,
                )

    print()
    print(f"{'system':<26} {'guarantee':<14} {'events/s':>10} {'/ceiling':>9} {'sessionizer/it':>15} {'launch->done':>13}  runs")
    print(f"{'ceiling (bare loop)':<26} {'-':<14} {ceiling:>10,.0f} {1:>9.3f} {'':>15} {'':>13}  {[round(c) for c in ceilings]}")
    for guarantee in guarantees:
        ours_name = next((peer.name for peer in runnable if peer.ours), None)
        ours = results.get((ours_name, guarantee))
        ours_median = statistics.median(ours.rates) if ours and ours.rates else None
        for (name, g), figures in results.items():
            if g != guarantee or not figures.rates:
                continue
            median = statistics.median(figures.rates)
            versus = f"{ours_median / median:.2f}x" if ours_median and name != ours_name else ""
            wall = f"{statistics.median(figures.walls):.1f} s"
            runs = [round(r) for r in figures.rates]
            print(f"{name:<26} {g:<14} {median:>10,.0f} {median / ceiling:>9.3f} {versus:>15} {wall:>13}  {runs}")
    print()
    for (name, g), figures in results.items():
        for line in dict.fromkeys(figures.checks):
            print(f"check {name} {g}: {line}")


def _default_quix_python() -> str:
    return str(QUIX_VENV_PYTHON) if QUIX_VENV_PYTHON.exists() else sys.executable


if __name__ == "__main__":
    main()
