"""Live event time under crashes, restarts, rewinds, reader moves and broker outages, as a property.

The runtime itself (task managers, source and window tasks, real RocksDB
stores) runs over ``tests.fakes``: a ``FakeCluster`` stands for the broker and
each instance's consumers read it as librdkafka would (``FetchingConsumer``).
Hypothesis draws the story: producers writing to two source partitions while
the wall clock runs, instances polling, committing, crashing (their open
transaction aborted, as the fence of their successor would), restarting on
their disk or on an empty one, stopping cleanly, partitions moving between
them, commits failing, the broker going away while producers hold their
events and delivering them once it is back.

The producers keep the promise of ``docs/semantics.md`` at its edge: each
event is at most ``grace`` behind the wall clock when it is written (the
delay is often exactly grace), so each source partition's own disorder is
within grace, and after an outage they deliver what they held within the
idle timeout. Then nothing may be late, and the sessions must be the
independent sorted split (``tests.oracle``) of every event written, each
exactly once: no on-time event turned late, no accepted event in a session
emitted before it.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from confluent_kafka import KafkaError, TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.core.partitioner import partition_for
from tests import oracle
from tests.fakes import FakeCluster, FetchingConsumer, Produced
from tests.helpers import pipeline, session_window
from tests.unit.runtime.instances import Instance, Instances

SOURCE = "events"
REPARTITION = "sessionizer-s-repartition"
CHANGELOG = "sessionizer-s-changelog"
WEB, MOBILE = "web", "mobile"
OUTPUT = "out"
LATE = "sessionizer-late"
DEAD = "sessionizer-dead-letter"

T0 = 1_700_000_000_000
GAP_MS = 4_000
GRACE_MS = 2_000
IDLE_TIMEOUT_S = 3
NAMES = ["a", "b", "c"]
#: A poll's records are processed a slice of about ``poll_batch`` events per tick (``service.runtime.in_hand``):
#: at 4, a pack of a few events is a slice of its own, and polls stay in hand across ticks, crashes and moves.
APP = {"idle_timeout": f"{IDLE_TIMEOUT_S}s", "punctuate_interval": "1s", "cache_max_keys": 2, "poll_batch": 4}
ABORTABLE = KafkaError(KafkaError.INVALID_TXN_STATE, "transaction must be aborted", txn_requires_abort=True)


@dataclass(frozen=True)
class Shape:
    """A pipeline and its topics: through a repartition topic, or read directly (``key = "@key"``)."""

    name: str
    table: dict
    partitions: dict[str, int]
    #: The source topics, and every partition the group assigns.
    sources: tuple[str, ...]
    assigned: tuple[tuple[str, int], ...]
    tables: dict

    @property
    def direct(self) -> bool:
        return self.name == "direct"


WINDOW = session_window(f"{GAP_MS}ms", f"{GRACE_MS}ms")
THROUGH_REPARTITION = Shape(
    "repartition",
    pipeline([SOURCE], WINDOW, output=OUTPUT, time_format="epoch_ms"),
    {SOURCE: 2, REPARTITION: 2, CHANGELOG: 2},
    (SOURCE,),
    ((SOURCE, 0), (SOURCE, 1), (REPARTITION, 0), (REPARTITION, 1)),
    {},
)
DIRECT = Shape(
    "direct",
    pipeline([WEB, MOBILE], WINDOW, key="@key", output=OUTPUT, time_format="epoch_ms"),
    {WEB: 2, MOBILE: 2, CHANGELOG: 2},
    (WEB, MOBILE),
    ((WEB, 0), (WEB, 1), (MOBILE, 0), (MOBILE, 1)),
    {"topics": {"partitions": 2}},
)
#: Users by the partition Kafka's default partitioner puts their key in (of two): direct reading checks it.
USERS = {p: [u for u in (f"u{n}" for n in range(40)) if partition_for(u.encode(), 2) == p][:3] for p in (0, 1)}


@dataclass
class World:
    """The cluster, the wall clock, the producers and the instances of one story."""

    root: Path
    shape: Shape = THROUGH_REPARTITION
    cluster: FakeCluster = field(default_factory=FakeCluster)
    #: Seconds since the story began; the wall clock is T0 plus this.
    t: float = 0.0
    running: dict[str, Instance] = field(default_factory=dict)
    owner: dict[tuple[str, int], str] = field(default_factory=dict)
    #: (user, event time) of every event written or held by a producer.
    produced: list[tuple[str, int]] = field(default_factory=list)
    #: Per source partition, what its producer holds back (an outage, then its delivery delay): (key, value).
    held: dict[tuple[str, int], list[tuple[bytes | None, bytes]]] = field(default_factory=dict)
    outage_until: float | None = None
    deliver_at: float | None = None

    def __post_init__(self) -> None:
        self.made = Instances(self.cluster, self.root, self.shape.table, self.shape.partitions, consumer=FetchingConsumer)

    @property
    def wall_ms(self) -> int:
        return T0 + round(self.t * 1000)

    @property
    def down(self) -> bool:
        return self.outage_until is not None

    # -- producers ---------------------------------------------------------------------------

    def produce(self, partition: int, user: int, delay_ms: int, topic: int = 0) -> None:
        """User ``user`` of those whose key is in ``partition``, on the shape's source ``topic``, ``delay_ms`` late."""
        name = USERS[partition][user % len(USERS[partition])]
        at = self.wall_ms - delay_ms
        self.produced.append((name, at))
        where = (self.shape.sources[topic % len(self.shape.sources)], partition)
        key = name.encode() if self.shape.direct else None
        value = orjson.dumps({"ts": at} if self.shape.direct else {"user_id": name, "ts": at})
        if self.down or self.held.get(where):
            self.held.setdefault(where, []).append((key, value))  # behind what it holds: order is kept
        else:
            self._write(where, key, value)

    def _write(self, where: tuple[str, int], key: bytes | None, value: bytes) -> None:
        offset = self.cluster.append(where)
        self.cluster.records.append(Produced(where[0], where[1], offset, key, value))

    def _deliver_held(self) -> None:
        for where, records in sorted(self.held.items()):
            for key, value in records:
                self._write(where, key, value)
        self.held.clear()

    # -- instances -------------------------------------------------------------------------------

    def join(self, name: str, wipe: bool) -> None:
        if name in self.running:
            return
        if wipe:
            shutil.rmtree(self.root / name, ignore_errors=True)
        instance = self.made(name, app=APP, **self.shape.tables)
        instance.now = 1_000.0 + self.t
        self.running[name] = instance

    def crash(self, name: str) -> None:
        """kill -9: nothing more is committed; its successor's fence aborts its open transaction."""
        instance = self.running.pop(name, None)
        if instance is None:
            return
        producer = instance.producer
        if producer.in_transaction:
            producer.abort_transaction()
        instance.tasks.close()
        # Its partitions wait, unread, until the group gives them to someone (a rebalance).
        self.owner = {where: owner for where, owner in self.owner.items() if owner != name}

    def stop(self, name: str) -> None:
        """SIGTERM: its partitions are committed and revoked, then it leaves."""
        instance = self.running.get(name)
        if instance is None or self.down:
            return
        mine = [where for where, owner in self.owner.items() if owner == name]
        if mine:
            instance.revoke(*mine)
        for where in mine:
            del self.owner[where]
        self.crash(name)  # what is left to do is closing

    def rebalance(self, choices: list[int]) -> None:
        """Every partition to a running instance.

        Through a repartition topic, cooperatively: a partition that moves is revoked from its old
        owner first. Directly, eagerly with the range assignor: everything is revoked, then each
        member is given partition i of every source together.
        """
        if not self.running or self.down:
            return
        names = sorted(self.running)
        assigned = self.shape.assigned
        if self.shape.direct:
            target = {where: names[choices[where[1]] % len(names)] for where in assigned}
            for name, instance in self.running.items():
                mine = [w for w in assigned if self.owner.get(w) == name]
                if mine:
                    instance.revoke(*mine)
            for name, instance in self.running.items():
                instance.assign(*[w for w in assigned if target[w] == name])
            self.owner = dict(target)
            return
        target = {where: names[choice % len(names)] for where, choice in zip(assigned, choices)}
        for name, instance in self.running.items():
            leaving = [w for w in assigned if self.owner.get(w) == name and target[w] != name]
            if leaving:
                instance.revoke(*leaving)
        for name, instance in self.running.items():
            joining = [w for w in assigned if target[w] == name and self.owner.get(w) != name]
            if joining:
                instance.assign(*joining)
        self.owner = dict(target)

    def fail_next_commit(self, name: str) -> None:
        instance = self.running.get(name)
        if instance is not None:
            instance.producer.fail("commit_transaction", ABORTABLE)

    def outage(self, seconds: float, delivery: float) -> None:
        if self.down:
            return
        self.outage_until = self.t + seconds
        self.deliver_at = self.outage_until + delivery
        for instance in self.running.values():
            # Its clients lose their connections, and librdkafka says so through its error callback.
            instance.client_errors.report("consumer", KafkaError(KafkaError._TRANSPORT, "connection refused"))
            instance.consumer.down = True
            instance.restore_consumer.down = True
            instance.admin.ends_error = KafkaError(KafkaError._TRANSPORT, "broker down")

    # -- time ---------------------------------------------------------------------------------------

    def tick(self, seconds: float, batch: int = 50, slices: int | None = 1) -> None:
        """``slices``: how many slices of what is in hand each instance processes (None: all)."""
        self.t += seconds
        if self.outage_until is not None and self.t >= self.outage_until:
            self.outage_until = None
            for instance in self.running.values():
                instance.consumer.down = False
                instance.restore_consumer.down = False
                instance.admin.ends_error = None
        if self.deliver_at is not None and not self.down and self.t >= self.deliver_at:
            self.deliver_at = None
            self._deliver_held()
        for instance in list(self.running.values()):
            instance.now = 1_000.0 + self.t
            if self.down:
                instance.client_errors.report("consumer", KafkaError(KafkaError._TRANSPORT, "connection refused"))
                instance.consumer.down = instance.restore_consumer.down = True
                instance.admin.ends_error = KafkaError(KafkaError._TRANSPORT, "broker down")
                instance.producer.unreachable = True  # nothing can commit
            else:
                instance.producer.unreachable = False
            self.poll(instance, batch, slices)
            instance.tasks.punctuate(instance.now)
            instance.tasks.commit()

    def poll(self, instance: Instance, batch: int, slices: int | None = 1) -> None:
        """As the stream loop: a poll only when nothing is in hand, then ``slices`` slices of what is (None: all of it)."""
        if not instance.tasks.in_hand:
            instance.tasks.hold(instance.consumer.consume(batch, 0))  # type: ignore[arg-type]
        taken = 0
        while instance.tasks.in_hand and (slices is None or taken < slices):
            instance.tasks.route_next()
            taken += 1
        if instance.tasks.restoring:
            instance.tasks.restore()

    # -- the end ------------------------------------------------------------------------------------

    def settle(self) -> None:
        """The broker is back, producers deliver, an instance owns every partition, and the wall clock runs on."""
        if self.down:
            self.tick(self.outage_until - self.t)  # type: ignore[operator]
        if self.deliver_at is not None:
            self.tick(max(0.0, self.deliver_at - self.t))
        if not self.running:
            self.join("c", wipe=False)
        self.rebalance([0, 0, 0, 0])
        last = max((at for _, at in self.produced), default=T0)
        # Long enough for the sources to be quiet, their bounds to pass every close time, and the
        # reports that do it to be read and the windows they close to be committed.
        until = max(self.wall_ms, last + GAP_MS + GRACE_MS) + (IDLE_TIMEOUT_S + 6) * 1000
        while self.wall_ms < until:
            self.tick(0.5, batch=500, slices=None)

    def close(self) -> None:
        for name in list(self.running):
            self.crash(name)


def emitted(cluster: FakeCluster) -> list[oracle.Session]:
    out = []
    for r in cluster.visible(OUTPUT):
        value = orjson.loads(r.value)["value"]  # type: ignore[arg-type]
        assert r.key is not None
        out.append(oracle.Session(r.key.decode(), value["session_start_ms"], value["session_end_ms"], value["event_count"], 0))
    return sorted(out)


# -- the story ----------------------------------------------------------------------------------------

#: One event of a live stream: its source partition, user, how far behind the wall clock it is written, and topic.
EVENT = st.tuples(st.integers(0, 1), st.integers(0, 2), st.sampled_from([0, GRACE_MS // 2, GRACE_MS, GRACE_MS]), st.integers(0, 1))
#: A stretch of live traffic: steps of a few events (or none: a quiet stretch), then some wall-clock time.
LIVE = st.lists(st.tuples(st.lists(EVENT, max_size=3), st.sampled_from([0.2, 0.5, 1.0, 2.0])), max_size=12)
#: What happens to the readers or the broker before a stretch.
DISRUPTION = st.one_of(
    st.tuples(st.just("nothing")),
    st.tuples(st.just("crash"), st.sampled_from(NAMES)),
    st.tuples(st.just("join"), st.sampled_from(NAMES), st.booleans()),
    st.tuples(st.just("stop"), st.sampled_from(NAMES)),
    st.tuples(st.just("rebalance"), st.lists(st.integers(0, 2), min_size=4, max_size=4)),
    st.tuples(st.just("fail"), st.sampled_from(NAMES)),
    st.tuples(st.just("poll"), st.sampled_from(NAMES), st.integers(1, 5)),
    st.tuples(st.just("outage"), st.sampled_from([1.0, 3.0, 6.0, 20.0]), st.sampled_from([0.0, 1.0, IDLE_TIMEOUT_S - 1.0])),
    st.tuples(st.just("outage"), st.sampled_from([3.0, 6.0]), st.just(IDLE_TIMEOUT_S - 1.0)),
)
STORY = st.lists(st.tuples(DISRUPTION, LIVE), min_size=1, max_size=10)


def play(world: World, story: list[tuple[tuple, list]]) -> None:
    world.join("a", wipe=False)
    world.rebalance([0, 0, 0, 0])
    for disruption, live in story:
        kind = disruption[0]
        if kind == "crash":
            world.crash(disruption[1])
        elif kind == "join":
            world.join(disruption[1], wipe=disruption[2])
        elif kind == "stop":
            world.stop(disruption[1])
        elif kind == "rebalance":
            world.rebalance(disruption[1])
        elif kind == "fail":
            world.fail_next_commit(disruption[1])
        elif kind == "poll":
            instance = world.running.get(disruption[1])
            if instance is not None:
                instance.now = 1_000.0 + world.t
                for _ in range(disruption[2]):
                    world.poll(instance, 3)
        elif kind == "outage":
            world.outage(disruption[1], disruption[2])
        for events, seconds in live:
            for partition, user, delay, topic in events:
                world.produce(partition, user, delay, topic)
            world.tick(seconds)
    world.settle()


@pytest.mark.parametrize("shape", [THROUGH_REPARTITION, DIRECT], ids=lambda shape: shape.name)
@given(story=STORY)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_live_events_within_grace_are_never_late_whatever_happens_to_readers_and_the_broker(shape, story):
    root = Path(tempfile.mkdtemp())
    world = World(root, shape)
    try:
        play(world, story)
        late = world.cluster.visible(LATE)
        assert late == [], [dict(r.headers) for r in late]
        assert world.cluster.visible(DEAD) == []
        expected = oracle.sessions(((user, at, 0) for user, at in world.produced), GAP_MS)
        oracle.assert_each_once(emitted(world.cluster), expected)
    finally:
        world.close()
        shutil.rmtree(root, ignore_errors=True)


def test_a_partition_moved_while_its_source_is_quiet_keeps_its_events_on_time():
    """The shape of issue 20's first report: both sources quiet, then the reader of one gone for
    longer than the idle timeout while its producer writes at the edge of grace and the other
    source's watermark runs on with the wall clock; then the group moves the partition."""
    root = Path(tempfile.mkdtemp())
    world = World(root)
    try:
        quiet = [([], 1.0)] * 8
        play(
            world,
            [
                (("join", "b", False), []),
                (("rebalance", [0, 1, 0, 1]), [([(0, 0, 0, 0), (1, 0, 0, 0)], 1.0), *quiet]),
                (("crash", "b"), [([(1, 0, GRACE_MS, 0)], 4.0), ([(0, 0, 0, 0), (1, 0, GRACE_MS, 0)], 4.0)]),
                (("rebalance", [0, 0, 0, 0]), [([(1, 0, GRACE_MS, 0)], 1.0)]),
            ],
        )
        assert world.cluster.visible(LATE) == []
        expected = oracle.sessions(((user, at, 0) for user, at in world.produced), GAP_MS)
        oracle.assert_each_once(emitted(world.cluster), expected)
    finally:
        world.close()
        shutil.rmtree(root, ignore_errors=True)


def test_events_held_through_a_broker_outage_are_on_time():
    """Producers hold their events through the outage and deliver them a little after it."""
    root = Path(tempfile.mkdtemp())
    world = World(root)
    try:
        live = [([(0, 0, GRACE_MS, 0), (1, 0, 0, 0)], 0.5)] * 10
        play(world, [(("nothing",), live), (("outage", 20.0, IDLE_TIMEOUT_S - 1.0), live * 8)])
        assert world.cluster.visible(LATE) == []
        expected = oracle.sessions(((user, at, 0) for user, at in world.produced), GAP_MS)
        oracle.assert_each_once(emitted(world.cluster), expected)
    finally:
        world.close()
        shutil.rmtree(root, ignore_errors=True)


def test_the_story_player_sees_what_goes_late_when_the_promise_is_broken():
    """The harness is not blind: an event written more than grace behind the wall clock after its
    partition was quiet is late, as the promise says it may be."""
    root = Path(tempfile.mkdtemp())
    world = World(root)
    try:
        play(world, [(("nothing",), [([(0, 0, 0, 0)], 1.0), *[([], 1.0)] * 8, ([(0, 0, 3 * GRACE_MS, 0)], 1.0)])])
        assert len(world.cluster.visible(LATE)) == 1
    finally:
        world.close()
        shutil.rmtree(root, ignore_errors=True)


def test_assignments_go_to_running_instances_only():
    root = Path(tempfile.mkdtemp())
    world = World(root)
    try:
        world.join("a", wipe=False)
        world.rebalance([0, 1, 2, 0])
        assert set(world.owner.values()) == {"a"}
        assert {(tp.topic, tp.partition) for tp in world.running["a"].consumer.assignment()} == set(THROUGH_REPARTITION.assigned)
        assert TopicPartition(SOURCE, 0) in world.running["a"].consumer.assignment()
    finally:
        world.close()
        shutil.rmtree(root, ignore_errors=True)
