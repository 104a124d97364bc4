"""The tasks this instance runs, by what they read: Kafka Streams' ``Tasks``.

Source tasks are known by their partition, window tasks (direct ones too) by
their ``TaskId``; every task by each partition it reads. The task manager
adds a task when it is created and removes it when it is closed; the rest of
the runtime only looks them up.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from service.runtime.ids import Partition, TaskId
from service.runtime.tasks import SourceTask, Task, WindowTask


class Tasks:
    def __init__(self) -> None:
        self._sources: dict[Partition, SourceTask] = {}
        self._windows: dict[TaskId, WindowTask] = {}
        self._readers: dict[Partition, list[Task]] = {}

    def add_source(self, task: SourceTask) -> None:
        self._sources[task.inputs[0]] = task
        self._reading(task)

    def add_window(self, task: WindowTask) -> None:
        self._windows[task.task_id] = task
        self._reading(task)

    def _reading(self, task: Task) -> None:
        for where in task.inputs:
            self._readers.setdefault(where, []).append(task)

    def remove(self, task: Task) -> bool:
        """Forget ``task``; False when it was not here."""
        if self._sources.get(task.inputs[0]) is task:
            del self._sources[task.inputs[0]]
        else:
            ids = [task_id for task_id, window in self._windows.items() if window is task]
            if not ids:
                return False
            del self._windows[ids[0]]
        for where in task.inputs:
            readers = [t for t in self._readers.get(where, ()) if t is not task]
            if readers:
                self._readers[where] = readers
            else:
                self._readers.pop(where, None)
        return True

    # -- looking up -------------------------------------------------------------------------

    def readers(self, where: Partition) -> list[Task]:
        """The tasks reading ``where`` (a source task and direct tasks may share a partition)."""
        return self._readers.get(where, [])

    @property
    def sources(self) -> Mapping[Partition, SourceTask]:
        return self._sources

    @property
    def windows(self) -> Mapping[TaskId, WindowTask]:
        return self._windows

    def __iter__(self) -> Iterator[Task]:
        """Every task: source tasks first, then window tasks (the order a commit prepares them in)."""
        yield from self._sources.values()
        yield from self._windows.values()

    def running(self) -> list[Task]:
        return [task for task in self if task.running]

    def clear(self) -> None:
        self._sources.clear()
        self._windows.clear()
        self._readers.clear()
