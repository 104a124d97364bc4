"""The task state machine: the steps it allows, and the ones that raise."""

from __future__ import annotations

import pytest

from service.runtime.ids import Partition
from service.runtime.tasks import IllegalTransition, Task, TaskState


class Plain(Task):
    """A task with nothing but the machine."""

    @property
    def name(self) -> str:
        return "plain"

    def add_records(self, partition, records) -> None:
        pass

    def prepare_commit(self, now: float) -> bool:
        return False

    def post_commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass


def plain() -> Plain:
    return Plain([Partition("t", 0)])


def test_a_task_with_a_store_restores_runs_is_suspended_and_closes():
    task = plain()
    assert task.state is TaskState.CREATED
    task.restoring()
    task.start()
    assert task.running
    task.restoring()  # a commit whose outcome is unknown: read the changelog back
    task.start()
    task.suspend()
    task.close()
    assert task.state is TaskState.CLOSED


def test_a_task_without_a_store_runs_at_once_and_can_close_from_any_state():
    task = plain()
    task.start()
    task.close()
    for steps in ([], ["restoring"], ["start"], ["start", "suspend"]):
        task = plain()
        for step in steps:
            getattr(task, step)()
        task.close()
        assert task.state is TaskState.CLOSED


@pytest.mark.parametrize(
    "steps",
    [
        ["suspend"],  # never ran
        ["restoring", "suspend"],  # still restoring
        ["restoring", "restoring"],
        ["start", "start"],
        ["start", "suspend", "restoring"],
        ["close", "start"],  # closed is the end
        ["close", "close"],
    ],
    ids=lambda steps: " -> ".join(steps),
)
def test_a_step_the_machine_does_not_allow_raises(steps):
    task = plain()
    for step in steps[:-1]:
        getattr(task, step)()
    with pytest.raises(IllegalTransition, match="task plain"):
        getattr(task, steps[-1])()
