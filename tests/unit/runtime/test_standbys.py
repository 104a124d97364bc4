"""Standby copies on fake clients and real RocksDB stores: placed from the group's description,
kept up to date from the changelog, promoted to the active task's store, restarted in full
when their checkpoint no longer fits the changelog."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from service.runtime.clients import consumer_client_id
from service.runtime.ids import TaskId
from service.runtime.tasks import TaskState
from tests.fakes import FakeCluster, FakeMessage, eof
from tests.unit.runtime.instances import Instances, event
from tests.unit.runtime.test_task_manager import CHANGELOG, FIRST_BATCH, MINUTE, PARTITIONS, PIPELINE, REPARTITION, T0, frame

__all__ = ["PARTITIONS", "PIPELINE"]  # the instance fixture reads them from this module

STANDBY = {"app": {"num_standby_replicas": 1}}
OTHER = "sessionizer-other-consumer"


def running_with_state(instance):
    """Instance ``a`` running partition 0, with u1's session committed to its changelog."""
    a = instance("a")
    a.assign((REPARTITION, 0))
    a.tasks.route(FIRST_BATCH[:2])
    a.tasks.commit()
    return a


def placed(instance, owner_partitions):
    """The group: ``instance`` with nothing, another instance running ``owner_partitions``; one look at it."""
    instance.admin.members = [(consumer_client_id(instance.config), []), (OTHER, owner_partitions)]
    instance.tasks.restore()  # asks for the description
    instance.tasks.restore()  # acts on it


def test_a_standby_copies_the_changelog_and_its_store_becomes_the_active_tasks_store(instance, cluster):
    a = running_with_state(instance)

    b = instance("b", **STANDBY)
    placed(b, [(REPARTITION, 0), (REPARTITION, 1)])
    assert set(b.tasks.standbys.copies) == {TaskId("s", 0), TaskId("s", 1)}
    assert {(tp.topic, tp.partition) for tp in b.restore_consumer.assignment()} == {(CHANGELOG, 0), (CHANGELOG, 1)}
    b.restore_consumer.feed(*cluster.messages(CHANGELOG))
    b.tasks.restore()
    end = cluster.end((CHANGELOG, 0))
    # The last offset is the transaction's marker, which no record carries.
    assert b.tasks.standby_lag() == {TaskId("s", 0): 1, TaskId("s", 1): 0}
    assert not b.tasks.restoring, "standbys are not restores: readiness does not wait for them"

    with capture_logs() as logs:
        b.assign((REPARTITION, 0))
    task = b.window(0)
    assert any(e["event"] == "standby promoted" and e["partition"] == 0 for e in logs)
    restoring = [e for e in logs if e["event"] in ("restoring state", "state up to date")]
    assert restoring and all(e.get("mode", "tail") == "tail" for e in restoring)
    assert TaskId("s", 0) not in b.tasks.standbys.copies
    b.restore_consumer.feed(eof(CHANGELOG, 0, end))
    b.tasks.restore()
    assert task.state is TaskState.RUNNING
    assert task.counts().restored == 0, "the copy was up to date: nothing to read again"
    assert task.store.peek(b"u1") == a.window().store.peek(b"u1")
    assert task.store.stream_time == T0 + MINUTE


def test_a_copy_whose_checkpoint_does_not_fit_the_changelog_is_copied_in_full_and_says_so(instance, cluster):
    running_with_state(instance)
    b = instance("b", **STANDBY)
    placed(b, [(REPARTITION, 0), (REPARTITION, 1)])
    b.restore_consumer.feed(*cluster.messages(CHANGELOG))
    b.tasks.restore()
    copy = b.tasks.standbys.copies[TaskId("s", 0)]
    checkpoint = copy.state_manager.store.checkpoint
    assert checkpoint is not None and checkpoint > 0
    b.close()

    c = instance("b", **STANDBY)  # the same state directory
    # The changelog's start moved past the copy's checkpoint (retention, or the topic was recreated).
    c.restore_consumer.watermarks[(CHANGELOG, 0)] = (checkpoint + 5, checkpoint + 10)
    with capture_logs() as logs:
        placed(c, [(REPARTITION, 0), (REPARTITION, 1)])
    said = [e for e in logs if e["event"] == "standby checkpoint does not fit the changelog, copying it fully"]
    assert [e["partition"] for e in said] == [0]
    assert c.tasks.standbys.copies[TaskId("s", 0)].state_manager.store.checkpoint is None


def test_without_standbys_configured_the_group_is_never_described(instance):
    a = instance("a")
    a.admin.members = [(OTHER, [(REPARTITION, 0)])]
    a.tasks.restore()
    a.tasks.restore()
    assert a.tasks.standbys.copies == {}


def test_a_copy_that_fell_behind_the_changelogs_start_is_copied_again_in_full_and_says_so(instance, cluster):
    running_with_state(instance)
    b = instance("b", **STANDBY)
    placed(b, [(REPARTITION, 0), (REPARTITION, 1)])
    copy = b.tasks.standbys.copies[TaskId("s", 0)]
    # Before the copy read anything, retention deleted the changelog's first records.
    b.restore_consumer.watermarks[(CHANGELOG, 0)] = (2, cluster.end((CHANGELOG, 0)))
    with capture_logs() as logs:
        b.restore_consumer.feed(*cluster.messages(CHANGELOG)[2:])
        b.tasks.restore()
    assert [e["partition"] for e in logs if e["event"] == "standby fell behind the changelog's start, copying it fully"] == [0]
    assert copy.state_manager.store.checkpoint is None
    assert [f.position for f in b.tasks.reader.following.values() if f.state is copy.state_manager] == [2]


MOVES = st.lists(
    st.one_of(
        st.tuples(st.just("assign"), st.integers(0, 1)),
        st.tuples(st.just("revoke"), st.integers(0, 1)),
        st.tuples(st.just("lose"), st.integers(0, 1)),
        st.tuples(st.just("other runs"), st.frozensets(st.integers(0, 1))),
        st.tuples(st.just("wait"), st.sampled_from([1.0, 40.0])),
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(MOVES)
def test_a_store_is_never_both_a_standby_copy_and_an_active_task_and_copies_stay_in_this_instances_directory(moves):
    """Whatever the group does, one process never opens a partition's store twice (RocksDB
    would refuse; worse, two writers), and its copies live under its own instance directory."""
    root = Path(tempfile.mkdtemp())
    made = Instances(FakeCluster(), root, PIPELINE, PARTITIONS)
    try:
        one = made("b", **STANDBY)
        held: set[int] = set()
        others: frozenset[int] = frozenset()
        kept: set[TaskId] = set()
        for move, value in moves:
            if move == "assign" and value not in held:
                one.assign((REPARTITION, value))
                held.add(value)
            elif move in ("revoke", "lose") and value in held:
                (one.revoke if move == "revoke" else one.lose)((REPARTITION, value))
                held.discard(value)
            elif move == "other runs":
                others = value
            elif move == "wait":
                one.now += value
            one.admin.members = [
                (consumer_client_id(one.config), [(REPARTITION, p) for p in sorted(held)]),
                (OTHER, [(REPARTITION, p) for p in sorted(others - held)]),
            ]
            one.now += 2.0  # placement is looked at again a second after a rebalance
            one.tasks.restore()  # asks
            one.tasks.restore()  # acts
            kept.update(one.tasks.standbys.copies)
            copies, active = set(one.tasks.standbys.copies), set(one.tasks.window_tasks)
            assert not copies & active
            own = root / "b"
            assert all(own in copy.state_manager.path.parents for copy in one.tasks.standbys.copies.values())
        if others - held:
            assert kept, "copies were placed"
    finally:
        made.close()
        shutil.rmtree(root, ignore_errors=True)


def test_a_replica_joining_a_running_group_copies_every_store_first_and_one_starting_alone_does_not(instance, cluster):
    running_with_state(instance)

    alone = instance("b", **STANDBY)
    alone.admin.members = []
    assert not alone.tasks.standbys.warm_up()
    assert alone.tasks.standbys.copies == {}
    alone.close()

    joining = instance("c", **STANDBY)
    joining.admin.members = [(OTHER, [(REPARTITION, 0), (REPARTITION, 1)])]
    assert joining.tasks.standbys.warm_up()
    assert set(joining.tasks.standbys.copies) == {TaskId("s", 0), TaskId("s", 1)}
    # Before anything was fetched, the lag is what the changelog held when the copy began.
    assert joining.tasks.standby_lag()[TaskId("s", 0)] == cluster.end((CHANGELOG, 0))
    joining.restore_consumer.feed(*cluster.messages(CHANGELOG))
    assert joining.tasks.warm_up_step(0.0)


def test_copies_wait_while_a_store_restores_and_go_on_once_it_finished(instance, cluster):
    """A restore reads alone, then the copies are read again: librdkafka keeps a pause when a
    partition is assigned anew, so the reader must resume them itself (seen: copies that
    never moved again, and a restore that waited on them for ever)."""
    a = instance("a")
    a.assign((REPARTITION, 0), (REPARTITION, 1))
    on_1 = FakeMessage(REPARTITION, 1, 0, key=b"u9", value=frame(T0, T0) + event("u9", T0), timestamp_ms=T0)
    a.tasks.route([*FIRST_BATCH[:2], on_1])
    a.tasks.commit()
    b = instance("b", **STANDBY)
    placed(b, [(REPARTITION, 0), (REPARTITION, 1)])
    assert set(b.tasks.standbys.copies) == {TaskId("s", 0), TaskId("s", 1)}
    # Partition 1 comes here before its copy read anything: its promoted store restores a tail.
    a.revoke((REPARTITION, 1))
    tail = cluster.end((CHANGELOG, 1))
    b.assign((REPARTITION, 1))
    assert b.tasks.restoring
    assert (CHANGELOG, 0) in b.restore_consumer.paused
    b.restore_consumer.feed(*[m for m in cluster.messages(CHANGELOG) if m.partition() == 1], eof(CHANGELOG, 1, tail))
    b.tasks.restore()
    assert not b.tasks.restoring
    assert (CHANGELOG, 0) not in b.restore_consumer.paused
    b.restore_consumer.feed(*[m for m in cluster.messages(CHANGELOG) if m.partition() == 0])
    b.tasks.restore()
    assert b.tasks.standby_lag()[TaskId("s", 0)] <= 1
