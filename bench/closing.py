"""Closing latency: how long after its close time a quiet user's session comes out, live.

    python bench/closing.py --gap 60s --grace 10s [--idle-timeout 30s] [--users 200] [--key @key] [--repo OTHER]

The service runs on a live stream. Every user sends a short burst of events
(their times are the wall clock when sent) and then falls silent; a session's
**close time** is its last event's time plus gap plus grace. For each session
this prints when it became visible to a ``read_committed`` reader, minus its
close time: the latency the wall-clock closing adds. Two cases, one after the
other, each on a fresh application:

- **busy**: other users keep every source partition busy meanwhile (a
  background stream of 200 events/s), so stream time moves with their events;
- **quiet**: nothing else is sent, so the sources go quiet after
  ``idle_timeout`` and stream time follows their wall-clock bounds
  (docs/semantics.md, "Closing quiet users' windows").

Not a test: it prints medians and percentiles.
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
import threading
import time
import uuid
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from service.config.durations import parse_duration_ms

REPO = Path(__file__).resolve().parents[1]

CONFIG = """
[app]
id = "{app}"
instance_id = "closing"
state_dir = "{state}"
idle_timeout = "{idle}"
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
sources = ["{app}-events"]
key = "{key}"
time = "ts"
output = "{app}-sessions"
[pipelines.sessions.window]
type = "session"
gap = "{gap}"
grace = "{grace}"
"""


def run(
    bootstrap: str, gap: str, grace: str, idle: str, users: int, partitions: int, busy: bool, key: str = "user_id", repo: Path = REPO
) -> list[float]:
    """Seconds from each quiet user's close time to its session's arrival on the output topic.

    ``key = "@key"`` reads the source directly (its records are keyed by user), with no repartition topic.
    """
    app = f"closing-{uuid.uuid4().hex[:6]}"
    topic = f"{app}-events"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)]).values():
        future.result(30)
    close_after_ms = parse_duration_ms(gap) + parse_duration_ms(grace)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "partitioner": "murmur2_random"})
    stop = threading.Event()

    def background() -> None:
        """Other users, each with one event, at 200 events/s on every partition."""
        rng = random.Random(1)
        while not stop.is_set():
            for _ in range(20):
                user = f"other-{rng.randrange(10**9)}"
                producer.produce(topic, orjson.dumps({"user_id": user, "ts": int(time.time() * 1000)}), user.encode())
            producer.poll(0)
            time.sleep(0.1)

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "closing.toml"
        config.write_text(
            CONFIG.format(
                app=app, state=f"{tmp}/state", idle=idle, bootstrap=bootstrap, partitions=partitions, gap=gap, grace=grace, key=key
            )
        )
        log_path = Path(tmp) / "service.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "service", "run", "--config", str(config)], cwd=repo, stdout=log, stderr=log)
        reader = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"{app}-reader",
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
            }
        )
        feeder = threading.Thread(target=background, daemon=True)
        try:
            time.sleep(5)  # the service has joined its group
            if busy:
                feeder.start()
            last_ms: dict[str, int] = {}
            for n in range(users):
                user = f"quiet-{n}"
                for _ in range(3):
                    at = int(time.time() * 1000)
                    producer.produce(topic, orjson.dumps({"user_id": user, "ts": at}), user.encode())
                    last_ms[user] = at
                    time.sleep(0.002)
            producer.flush(30)
            reader.subscribe([f"{app}-sessions"])
            arrived: dict[str, float] = {}
            deadline = time.time() + close_after_ms / 1000 + parse_duration_ms(idle) / 1000 + 120
            while len(arrived) < users and time.time() < deadline:
                for message in reader.consume(500, 0.2):
                    if message.error() is None and message.key() is not None:
                        key = message.key().decode()
                        if key in last_ms and key not in arrived:
                            arrived[key] = time.time()
                if proc.poll() is not None:
                    raise RuntimeError(log_path.read_text()[-3000:])
            if len(arrived) < users:
                raise RuntimeError(f"{users - len(arrived)} sessions did not come out")
            return [arrived[user] - (last_ms[user] + close_after_ms) / 1000 for user in last_ms]
        finally:
            stop.set()
            if feeder.is_alive():
                feeder.join(5)
            producer.flush(10)
            reader.close()
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default=os.environ.get("SESSIONIZER_BENCH_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--gap", default="60s")
    parser.add_argument("--grace", default="10s")
    parser.add_argument("--idle-timeout", default="30s")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--key", default="user_id", choices=["user_id", "@key"], help='"@key": a direct pipeline, no repartition topic')
    parser.add_argument("--repo", type=Path, default=REPO, help="run another checkout's service (an A/B against an older commit)")
    args = parser.parse_args()
    print(
        f"gap {args.gap}, grace {args.grace}, idle_timeout {args.idle_timeout}, {args.users} quiet users, "
        f"{args.partitions} partitions, key {args.key}, {args.repo}"
    )
    for busy in (True, False):
        delays = sorted(
            run(args.bootstrap, args.gap, args.grace, args.idle_timeout, args.users, args.partitions, busy, args.key, args.repo)
        )
        p95 = delays[int(0.95 * (len(delays) - 1))]
        print(
            f"  {'busy' if busy else 'quiet'}: after its close time a session came out in "
            f"median {statistics.median(delays):.2f} s, p95 {p95:.2f} s, max {delays[-1]:.2f} s (min {delays[0]:.2f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
