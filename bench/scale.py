"""Open sessions at scale: memory, state size and restore speed, as a new user would measure them.

    python bench/scale.py --users 1000000 --bootstrap 127.0.0.1:9092

1. Produces N events, one per user, keyed by user, to a topic of 6 partitions:
   every user has one session, still open when the service has read them all
   (the gap is an hour).
2. Runs the service (exactly-once) until its consumer group has committed
   every offset: events/s, the process's peak RSS (VmHWM), the state on disk.
3. Stops it, deletes its local state, starts it again and times how long
   until ``/readyz`` answers 200: every store restored from its changelog.
   Prints changelog records/s, start-up included, and the peak RSS of that run.
4. With ``--rescale N``: stops it, runs ``sessionizer rescale --partitions N``
   and prints its duration and peak RSS next to the restore's; then starts the
   service on the new layout, its local state wiped, and times it until ready.

Not a test: it prints figures. Shared machines are noisy; compare within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parents[1]

CONFIG = """
[app]
id = "{app}"
instance_id = "scale"
state_dir = "{state}"
{app_extra}
[kafka]
bootstrap_servers = "{bootstrap}"
[topics]
partitions = {partitions}
replication_factor = 1
[http]
port = {port}
[log]
level = "info"
format = "json"
[pipelines.sessions]
sources = ["{topic}"]
key = "{key}"
time = "ts"
output = "{app}-sessions"
[pipelines.sessions.window]
type = "session"
gap = "1h"
grace = "1m"
[pipelines.sessions.aggregates]
amount = {{ type = "sum", field = "amount" }}
"""


def produce(bootstrap: str, topic: str, users: int, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)]).values():
        future.result(30)
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "partitioner": "murmur2_random",
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "enable.idempotence": True,
        }
    )
    now = int(time.time() * 1000) - 60_000
    started = time.perf_counter()
    for u in range(users):
        user = f"user-{u}"
        value = b'{"user_id":"%s","ts":%d,"amount":%d}' % (user.encode(), now + u % 1000, u % 97)
        while True:
            try:
                producer.produce(topic, value, user.encode())
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(600):
        raise RuntimeError("producing the events failed")
    print(f"produced {users:,} events in {time.perf_counter() - started:.1f} s")


def committed_all(bootstrap: str, group: str, topics: dict[str, int]) -> bool:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        parts = [TopicPartition(t, p) for t, n in topics.items() for p in range(n)]
        for tp in consumer.committed(parts, timeout=10):
            high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)[1]
            if tp.offset < 0 or tp.offset < high - 1:  # the last offset may be a transaction marker
                return False
        return True
    finally:
        consumer.close()


def changelog_records(bootstrap: str, topic: str, partitions: int) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"scale-probe-{uuid.uuid4().hex[:6]}"})
    try:
        total = 0
        for p in range(partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def peak_rss_mib(pid: int) -> float:
    """The process's high-water mark of resident memory (everything: Python, RocksDB, librdkafka)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def disk_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "service", "run", "--config", str(config)], cwd=REPO, stdout=out, stderr=out)


def run_until(config: Path, log: Path, done: Callable[[], bool], every: float) -> tuple[float, float]:
    """Run the service until ``done()`` (asked every ``every`` seconds), then stop it: (seconds taken, peak RSS MiB)."""
    proc = start(config, log)
    try:
        started = time.perf_counter()
        while not done():
            if proc.poll() is not None:
                raise RuntimeError(log.read_text()[-3000:])
            time.sleep(every)
        elapsed = time.perf_counter() - started
        return elapsed, peak_rss_mib(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(300)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default=os.environ.get("SESSIONIZER_BENCH_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--key", default="user_id", help='"user_id" (through a repartition topic) or "@key" (direct)')
    parser.add_argument("--app-extra", default="", help="extra [app] lines, e.g. memory settings")
    parser.add_argument("--rescale", type=int, metavar="N", help="then rescale the state to N partitions, and restore that")
    args = parser.parse_args()

    tag = uuid.uuid4().hex[:6]
    topic, app = f"scale-{tag}", f"scale-{tag}"
    produce(args.bootstrap, topic, args.users, args.partitions)
    with tempfile.TemporaryDirectory(prefix="sessionizer-scale-") as tmp:
        state = Path(tmp) / "state"
        port = free_port()
        config = Path(tmp) / "scale.toml"
        config.write_text(
            CONFIG.format(
                app=app,
                state=state,
                bootstrap=args.bootstrap,
                partitions=args.partitions,
                port=port,
                topic=topic,
                key=args.key,
                app_extra=args.app_extra,
            )
        )
        log = Path(tmp) / "service.log"
        topics = {topic: args.partitions}
        if args.key != "@key":
            topics[f"{app}-sessions-repartition"] = args.partitions

        elapsed, rss = run_until(config, log, lambda: committed_all(args.bootstrap, app, topics), every=0.5)
        size = disk_mib(state)
        print(
            json.dumps(
                {
                    "users": args.users,
                    "processing_events_per_s": round(args.users / elapsed),
                    "processing_seconds_incl_startup": round(elapsed, 1),
                    "peak_rss_mib": round(rss),
                    "state_on_disk_mib": round(size),
                }
            )
        )

        restore, rss = timed_restore(args, config, log, port, state, f"{app}-sessions-changelog", args.partitions, "restore")
        if args.rescale:
            rescale_and_restore(args, config, log, port, restore, rss, app, state)


def timed_restore(
    args: argparse.Namespace, config: Path, log: Path, port: int, state: Path, changelog: str, partitions: int, label: str
) -> tuple[float, float]:
    """Wipe the local state, start the service and time it until ``/readyz``: (seconds, peak RSS MiB), printed too."""
    shutil.rmtree(state)
    records = changelog_records(args.bootstrap, changelog, partitions)
    seconds, rss = run_until(config, log, lambda: ready(port), every=0.05)
    print(
        json.dumps(
            {
                f"{label}_seconds_to_ready": round(seconds, 1),
                "changelog_records": records,
                "restore_records_per_s": round(records / seconds),
                "restore_peak_rss_mib": round(rss),
            }
        )
    )
    return seconds, rss


def rescale_and_restore(
    args: argparse.Namespace, config: Path, log: Path, port: int, restore: float, restore_rss: float, app: str, state: Path
) -> None:
    """``sessionizer rescale --partitions N`` on the state just restored, then a restore of the new layout."""
    text = config.read_text().replace(f"partitions = {args.partitions}", f"partitions = {args.rescale}", 1)
    config.write_text(text)
    started = time.perf_counter()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", "rescale", "--config", str(config), "--partitions", str(args.rescale)],
            cwd=REPO,
            stdout=out,
            stderr=out,
        )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        raise RuntimeError(log.read_text()[-3000:])
    rss = usage.ru_maxrss / 1024
    print(
        json.dumps(
            {
                "rescale": f"{args.partitions} -> {args.rescale}",
                "rescale_seconds": round(seconds, 1),
                "rescale_peak_rss_mib": round(rss),
                "rescale_over_restore_seconds": round(seconds / restore, 2),
                "rescale_over_restore_peak_rss": round(rss / restore_rss, 2),
            }
        )
    )
    timed_restore(args, config, log, port, state, f"{app}-sessions-changelog-g1", args.rescale, "restore_after_rescale")


if __name__ == "__main__":
    main()
