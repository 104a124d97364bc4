"""What every task is to the loop and the task manager: one interface, one state machine.

Kafka Streams' ``Task``: the manager routes records to a task by input
partition, tells it when an input is read to its end, waits, or is quiet,
asks it for its inputs' watermarks (alignment), punctuates it, and takes it
through the two steps of a commit. It never needs to know what kind of task
it holds.

A task's state moves along this machine, and nothing else:

| from | to |
|---|---|
| CREATED | RESTORING, RUNNING (a task with no store), CLOSED |
| RESTORING | RUNNING, CLOSED |
| RUNNING | RESTORING, SUSPENDED, CLOSED |
| SUSPENDED | RUNNING, CLOSED |

- RESTORING: its store is being brought up to its changelog; its inputs are
  paused. A running task goes back here when a commit's outcome is unknown.
- RUNNING: it processes records.
- SUSPENDED: its partitions are being revoked; it was committed and takes
  nothing more.
- CLOSED: its store is closed. Every state may close.

A step the machine does not allow raises ``IllegalTransition``: a task that
processes while restoring, or runs again once closed, is a bug to find at
once, not a state to carry on in.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from enum import Enum
from typing import NamedTuple

from service.runtime.frames import Record
from service.runtime.ids import Partition, TaskId
from service.runtime.state_manager import StateManager
from service.runtime.stats import TaskCounts


class TaskState(Enum):
    CREATED = "created"
    RESTORING = "restoring"
    RUNNING = "running"
    SUSPENDED = "suspended"
    CLOSED = "closed"


_ALLOWED: dict[TaskState, frozenset[TaskState]] = {
    TaskState.CREATED: frozenset({TaskState.RESTORING, TaskState.RUNNING, TaskState.CLOSED}),
    TaskState.RESTORING: frozenset({TaskState.RUNNING, TaskState.CLOSED}),
    TaskState.RUNNING: frozenset({TaskState.RESTORING, TaskState.SUSPENDED, TaskState.CLOSED}),
    TaskState.SUSPENDED: frozenset({TaskState.RUNNING, TaskState.CLOSED}),
    TaskState.CLOSED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A task was asked to move to a state its machine does not allow from where it is."""


class AlignmentInput(NamedTuple):
    """One input as alignment sees it (``service.runtime.alignment``).

    ``group``: the inputs compared with each other (a pipeline's source
    partitions on this instance, or one direct task's inputs).
    """

    group: object
    partition: Partition
    watermark: int | None
    ended: bool


class Task(ABC):
    """A unit of work over some input partitions."""

    def __init__(self, inputs: list[Partition]) -> None:
        #: The partitions this task consumes, in a fixed order.
        self.inputs = inputs
        self.state = TaskState.CREATED

    @property
    @abstractmethod
    def name(self) -> str:
        """What the logs call it."""

    # -- the state machine ---------------------------------------------------------

    def _move(self, to: TaskState) -> None:
        if to not in _ALLOWED[self.state]:
            raise IllegalTransition(f"task {self.name}: {self.state.value} -> {to.value}")
        self.state = to

    def restoring(self) -> None:
        """Its store is brought up to its changelog before it processes anything more."""
        self._move(TaskState.RESTORING)

    def start(self) -> None:
        """It processes records from now on."""
        self._move(TaskState.RUNNING)

    def suspend(self) -> None:
        """Its partitions go: it was committed, and takes nothing more."""
        self._move(TaskState.SUSPENDED)

    def close(self) -> None:
        """Close what it holds (its store); it is done."""
        self._move(TaskState.CLOSED)
        self._release()

    @property
    def running(self) -> bool:
        return self.state is TaskState.RUNNING

    @property
    def state_manager(self) -> StateManager | None:
        """Its store, restored from its changelog before it runs; None for a task without state."""
        return None

    def retired_counts(self) -> tuple[TaskId, TaskCounts] | None:
        """What it counted, kept for the metrics once it is gone; None for a task that counts nothing."""
        return None

    # -- records and inputs -------------------------------------------------------------

    @abstractmethod
    def add_records(self, partition: Partition, records: list[Record]) -> None:
        """Process records of ``partition``, one of its inputs (only while running)."""

    def input_ended(self, partition: Partition) -> None:
        """``partition`` was read to its end after its last record (librdkafka's end-of-partition event)."""
        return None  # a kind that cares overrides it

    def input_waiting(self, partition: Partition) -> None:
        """``partition`` has records waiting (for the schema registry): it is not read to its end."""
        return None  # a kind that cares overrides it

    def input_bound(self, partition: Partition, bound: int) -> None:
        """``partition`` is quiet: its watermark is at least ``bound`` (``service.runtime.ends``)."""
        return None  # a kind that cares overrides it

    def alignment(self) -> list[AlignmentInput]:
        """Its inputs' watermarks, for alignment; none by default."""
        return []

    def punctuate(self, now: float) -> None:
        """The wall clock moved on (every ``punctuate_interval``)."""
        return None  # a kind that cares overrides it

    # -- commits --------------------------------------------------------------------------

    @abstractmethod
    def prepare_commit(self, now: float) -> bool:
        """Before the transaction: hand what this commit holds to the collector; True if it holds state."""

    @abstractmethod
    def post_commit(self) -> None:
        """The transaction committed."""

    @abstractmethod
    def rollback(self) -> None:
        """The transaction was aborted: back to the last commit."""

    def _release(self) -> None:
        """Close what the task holds."""
        return None  # a kind that cares overrides it
