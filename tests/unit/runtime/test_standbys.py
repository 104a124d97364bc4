"""Standby copies on fake clients and real RocksDB stores: placed from the group's description,
kept up to date from the changelog, promoted to the active task's store, restarted in full
when their checkpoint no longer fits the changelog."""

from __future__ import annotations

from structlog.testing import capture_logs

from service.runtime.clients import consumer_client_id
from service.runtime.ids import TaskId
from service.runtime.tasks import TaskState
from tests.fakes import eof
from tests.unit.runtime.test_task_manager import CHANGELOG, FIRST_BATCH, MINUTE, PARTITIONS, PIPELINE, REPARTITION, T0

__all__ = ["PARTITIONS", "PIPELINE"]  # the instance fixture reads them from this module

STANDBY = {"app": {"num_standby_replicas": 1}}
OTHER = "sessionizer-other-consumer"


def placed(instance, owner_partitions):
    """The group: ``instance`` with nothing, another instance running ``owner_partitions``; one look at it."""
    instance.admin.members = [(consumer_client_id(instance.config), []), (OTHER, owner_partitions)]
    instance.tasks.restore()  # asks for the description
    instance.tasks.restore()  # acts on it


def test_a_standby_copies_the_changelog_and_its_store_becomes_the_active_tasks_store(instance, cluster):
    a = instance("a")
    a.assign((REPARTITION, 0))
    a.tasks.route(FIRST_BATCH[:2])
    a.tasks.commit()

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
    a = instance("a")
    a.assign((REPARTITION, 0))
    a.tasks.route(FIRST_BATCH[:2])
    a.tasks.commit()
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
