"""Availability: the longest a partition stands still when a replica dies, joins or restarts.

    python bench/failover.py [--open 200000] [--rate 2000] [--standbys 0,1] [--scenarios kill,join,rolling]

For each scenario and each ``num_standby_replicas`` value, on a fresh
application (exactly-once, 6 partitions, a session pipeline through a
repartition topic, the service's default settings otherwise):

1. ``--open`` users send one event each before the replicas start: that many
   sessions stay open (the gap is an hour). Two replicas read them all.
2. Live traffic then runs at ``--rate`` events/s over every partition.
3. The disruption: ``kill`` (SIGKILL one of the two replicas), ``join`` (a
   third replica starts on an empty disk) or ``rolling`` (every replica is
   stopped with SIGTERM and started again on its disk, one at a time, each once
   ready before the next).

A monitor reads the group's committed offsets and the partitions' stable
ends four times a second. A partition **stalls** while its committed offset
stands still and records wait beyond it; the figure is the longest stall of
any partition from the disruption on, for source and repartition partitions.
The replicas' logs give the changelog records restored after the disruption
(a failover that found a warm copy restores only a tail). Last, what a standby
costs: disk and peak memory per million open sessions, standbys on against off.

Not a test: it prints figures. Shared machines are noisy; compare within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from scale import disk_mib, free_port, peak_rss_mib, ready  # bench/ is on the path: run as a script

REPO = Path(__file__).resolve().parents[1]

CONFIG = """
[app]
id = "{app}"
state_dir = "{state}"
num_standby_replicas = {standbys}
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
key = "user_id"
time = "ts"
output = "{app}-sessions"
[pipelines.sessions.window]
type = "session"
gap = "1h"
grace = "1m"
[pipelines.sessions.aggregates]
amount = {{ type = "sum", field = "amount" }}
"""


@dataclass
class Replica:
    name: str
    config: Path
    log: Path
    port: int
    state: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service", "run", "--config", str(self.config), "--instance-id", self.name],
                cwd=REPO,
                stdout=out,
                stderr=out,
            )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(120)
        self.process = None

    def wait_ready(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while not ready(self.port):
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout} s")
            time.sleep(0.25)

    def restored_since(self, since: float) -> tuple[int, float]:
        """Changelog records restored, and the longest restore (s), logged after ``since`` (epoch s)."""
        records, longest = 0, 0.0
        for line in self.log.read_text(errors="replace").splitlines():
            if '"state restored"' not in line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp() >= since:
                records += event["records"]
                longest = max(longest, event["seconds"])
        return records, longest


def waiting(committed: int, end: int) -> bool:
    """Records wait beyond the committed offset. A transaction's commit marker takes the
    offset after its last record, which no consumer commits past: one offset is no record."""
    return end - max(committed, 0) > 1


class Monitor(threading.Thread):
    """Committed offsets against stable ends, every ``every`` seconds; the longest stall per partition."""

    def __init__(self, bootstrap: str, group: str, partitions: list[TopicPartition], every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.partitions = partitions
        self.every = every
        self.offsets = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
        self.ends = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{group}-ends", "isolation.level": "read_committed"})
        self.since: float | None = None
        self.longest: dict[tuple[str, int], float] = {}
        self._last: dict[tuple[str, int], tuple[int, float]] = {}
        self._halt = threading.Event()

    def measure_from(self, at: float) -> None:
        self.longest = {}
        self.since = at

    def run(self) -> None:
        while not self._halt.is_set():
            now = time.monotonic()
            try:
                committed = self.offsets.committed(self.partitions, timeout=5)
            except Exception:
                time.sleep(self.every)
                continue
            for tp in committed:
                where = (tp.topic, tp.partition)
                _low, end = self.ends.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=5)
                last = self._last.get(where)
                if last is None or tp.offset != last[0] or not waiting(tp.offset, end):
                    self._last[where] = (tp.offset, now)
                elif self.since is not None:
                    stalled = now - max(last[1], self.since)
                    self.longest[where] = max(self.longest.get(where, 0.0), stalled)
            time.sleep(max(0.0, self.every - (time.monotonic() - now)))

    def caught_up(self) -> bool:
        committed = self.offsets.committed(self.partitions, timeout=10)
        for tp in committed:
            _low, end = self.ends.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=5)
            if waiting(tp.offset, end):
                return False
        return True

    def close(self) -> None:
        self._halt.set()
        self.join(5)
        self.offsets.close()
        self.ends.close()


class Traffic(threading.Thread):
    """``rate`` events/s of users ``0 .. users-1`` to ``topic``, time = wall clock."""

    def __init__(self, bootstrap: str, topic: str, users: int, rate: int) -> None:
        super().__init__(daemon=True)
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
        self.topic, self.users, self.rate = topic, users, rate
        self._halt = threading.Event()

    def run(self) -> None:
        rng = random.Random(7)
        tick = 0.05
        per_tick = max(1, int(self.rate * tick))
        next_tick = time.monotonic()
        while not self._halt.is_set():
            now_ms = int(time.time() * 1000)
            for _ in range(per_tick):
                user = f"user-{rng.randrange(self.users)}"
                value = orjson.dumps({"user_id": user, "ts": now_ms, "amount": 1})
                while True:
                    try:
                        self.producer.produce(self.topic, value, key=user.encode())
                        break
                    except BufferError:
                        self.producer.poll(0.05)
            self.producer.poll(0)
            next_tick += tick
            time.sleep(max(0.0, next_tick - time.monotonic()))
        self.producer.flush(60)

    def stop(self) -> None:
        self._halt.set()
        self.join(70)


def busiest(bootstrap: str, app: str, repartition: str, replicas: tuple[Replica, ...]) -> Replica:
    """The replica running the most window stores (repartition partitions): the one whose loss costs most."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    description = admin.describe_consumer_groups([app], request_timeout=10)[app].result(10)
    held = {
        member.client_id: sum(1 for tp in member.assignment.topic_partitions if tp.topic == repartition)
        for member in description.members
    }
    return max(replicas, key=lambda r: held.get(f"{app}-{r.name}-consumer", 0))


def preload(bootstrap: str, topic: str, users: int, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.num.messages": 10000})
    now_ms = int(time.time() * 1000)
    for n in range(users):
        user = f"user-{n}"
        while True:
            try:
                producer.produce(topic, orjson.dumps({"user_id": user, "ts": now_ms, "amount": 1}), key=user.encode())
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(300)


@dataclass
class Outcome:
    scenario: str
    standbys: int
    victim: str = ""
    stall_source: float = 0.0
    stall_repartition: float = 0.0
    catch_up: float = 0.0
    restored: int = 0
    longest_restore: float = 0.0
    disk_mib: float = 0.0
    rss_mib: list[float] = field(default_factory=list)


def run(args: argparse.Namespace, scenario: str, standbys: int) -> Outcome:
    tag = uuid.uuid4().hex[:6]
    app, topic = f"failover-{tag}", f"failover-{tag}-events"
    preload(args.bootstrap, topic, args.open, args.partitions)
    tmp = Path(tempfile.mkdtemp(prefix="sessionizer-failover-"))
    replicas = []
    for name in ("r1", "r2", "r3"):
        state = tmp / name
        port = free_port()
        config = tmp / f"{name}.toml"
        text = CONFIG.format(
            app=app, state=state, standbys=standbys, bootstrap=args.bootstrap, partitions=args.partitions, port=port, topic=topic
        )
        config.write_text(text)
        replicas.append(Replica(name, config, tmp / f"{name}.log", port, state))
    r1, r2, r3 = replicas
    outcome = Outcome(scenario, standbys)
    traffic = None
    monitor = None
    try:
        r1.start()
        r2.start()
        r1.wait_ready()
        r2.wait_ready()
        repartition = f"{app}-sessions-repartition"
        partitions = [TopicPartition(t, p) for t in (topic, repartition) for p in range(args.partitions)]
        monitor = Monitor(args.bootstrap, app, partitions)
        deadline = time.monotonic() + 900
        while not monitor.caught_up():
            if time.monotonic() > deadline:
                raise RuntimeError("the preload was not processed in 15 minutes")
            time.sleep(1)
        monitor.start()
        traffic = Traffic(args.bootstrap, topic, args.open, args.rate)
        traffic.start()
        time.sleep(args.settle)
        outcome.disk_mib = disk_mib(r1.state) + disk_mib(r2.state)
        outcome.rss_mib = [peak_rss_mib(r.process.pid) for r in (r1, r2) if r.process is not None]
        at = time.monotonic()
        wall = time.time()
        monitor.measure_from(at)
        if scenario == "kill":
            victim = busiest(args.bootstrap, app, repartition, (r1, r2))
            outcome.victim = victim.name
            victim.stop(signal.SIGKILL)
        elif scenario == "join":
            r3.start()
        elif scenario == "rolling":
            for replica in (r1, r2):
                replica.stop()
                replica.start()
                replica.wait_ready()
        time.sleep(args.window)
        traffic.stop()
        traffic = None
        end_wait = time.monotonic()
        while not monitor.caught_up() and time.monotonic() - end_wait < 120:
            time.sleep(0.5)
        outcome.catch_up = time.monotonic() - at
        longest = dict(monitor.longest)
        outcome.stall_source = max((s for (t, _), s in longest.items() if t == topic), default=0.0)
        outcome.stall_repartition = max((s for (t, _), s in longest.items() if t == repartition), default=0.0)
        for replica in replicas:
            if replica.log.exists():
                records, slowest = replica.restored_since(wall)
                outcome.restored += records
                outcome.longest_restore = max(outcome.longest_restore, slowest)
        return outcome
    finally:
        if traffic is not None:
            traffic.stop()
        if monitor is not None:
            monitor.close()
        for replica in replicas:
            replica.stop(signal.SIGKILL)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default=os.environ.get("SESSIONIZER_BENCH_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--open", type=int, default=200_000, help="open sessions loaded before the disruption")
    parser.add_argument("--rate", type=int, default=2_000, help="live events per second")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--standbys", default="0,1", help="num_standby_replicas values to compare")
    parser.add_argument("--scenarios", default="kill,join,rolling")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds of live traffic before the disruption")
    parser.add_argument("--window", type=float, default=60.0, help="seconds measured after the disruption")
    parser.add_argument("--keep", action="store_true", help="keep the logs and state directories")
    args = parser.parse_args()
    outcomes = []
    for scenario in args.scenarios.split(","):
        for standbys in (int(s) for s in args.standbys.split(",")):
            outcome = run(args, scenario, standbys)
            outcomes.append(outcome)
            print(
                f"{scenario:8} standbys={standbys}  longest stall: source {outcome.stall_source:5.1f} s, "
                f"repartition {outcome.stall_repartition:5.1f} s  caught up {outcome.catch_up:5.1f} s  "
                f"restored {outcome.restored:,} records (longest {outcome.longest_restore:.1f} s)",
                flush=True,
            )
    by = {(o.scenario, o.standbys): o for o in outcomes}
    print(f"\n{'scenario':8} {'standbys':>8} {'source stall s':>15} {'repartition stall s':>20} {'restored':>10}")
    for o in outcomes:
        print(f"{o.scenario:8} {o.standbys:>8} {o.stall_source:>15.1f} {o.stall_repartition:>20.1f} {o.restored:>10,}")
    for scenario in args.scenarios.split(","):
        off, on = by.get((scenario, 0)), by.get((scenario, 1))
        if off and on and on.stall_repartition:
            ratio = max(off.stall_repartition, off.stall_source) / max(on.stall_repartition, on.stall_source, 0.1)
            print(f"{scenario}: longest stall without standbys / with one = {ratio:.1f}x")
    off = next((o for o in outcomes if o.standbys == 0), None)
    on = next((o for o in outcomes if o.standbys >= 1), None)
    if off and on:
        per_million = 1_000_000 / args.open
        print(
            f"a standby costs, per million open sessions: disk {(on.disk_mib - off.disk_mib) * per_million:.0f} MiB "
            f"(two replicas: {off.disk_mib:.0f} -> {on.disk_mib:.0f} MiB), peak RSS "
            f"{(sum(on.rss_mib) - sum(off.rss_mib)) / 2 * per_million:.0f} MiB per replica"
        )


if __name__ == "__main__":
    main()
