"""Open-window queries, the stream loop's side: answered between polls, in the loop's thread.

Stores and their caches belong to the stream loop's thread, so an HTTP thread
never reads them. It posts a ``Query`` to the ``QueryInbox`` and waits; the
loop answers every posted query once per iteration, which is at least once
per commit interval (``service.ops.queries`` is the HTTP side).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from service.core.pipeline import Pipeline
from service.errors import ServiceStopping
from service.runtime.ids import TaskId
from service.runtime.tasks import TaskState, WindowTask

LOCAL = "local"
REMOTE = "remote"
RESTORING = "restoring"
UNASSIGNED = "unassigned"


@dataclass
class Part:
    """One pipeline's answer for a key."""

    pipeline: str
    partition: int
    status: str
    stream_time_ms: int | None = None
    windows: list[dict[str, Any]] = field(default_factory=list)
    owner: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pipeline": self.pipeline, "partition": self.partition, "status": self.status}
        if self.status == LOCAL:
            out["stream_time_ms"] = self.stream_time_ms
            out["windows"] = self.windows
        if self.owner is not None:
            out["owner"] = self.owner
        return out


@dataclass
class Query:
    key: bytes
    #: (pipeline, partition of its repartition topic)
    targets: list[tuple[Pipeline, int]]
    answer: Future[list[Part]] = field(default_factory=Future)


class QueryInbox:
    """Queries posted by HTTP threads, answered by the loop thread between polls."""

    def __init__(self) -> None:
        self._pending: deque[Query] = deque()
        self._closed = False

    def submit(self, query: Query) -> Future[list[Part]]:
        if self._closed:
            query.answer.set_exception(ServiceStopping())
        else:
            self._pending.append(query)
        return query.answer

    def serve(self, tasks: Mapping[TaskId, WindowTask]) -> None:
        """Answer every pending query (loop thread); costs one check when there is none."""
        pending = self._pending
        while pending:
            query = pending.popleft()
            try:
                query.answer.set_result(answer(tasks, query))
            except Exception as exc:
                query.answer.set_exception(exc)

    def close(self) -> None:
        """The loop is stopping: fail what is pending and refuse what comes."""
        self._closed = True
        while self._pending:
            self._pending.popleft().answer.set_exception(ServiceStopping())


def answer(tasks: Mapping[TaskId, WindowTask], query: Query) -> list[Part]:
    """Read the key's open windows from the tasks that hold it (loop thread only).

    The windows include changes not yet committed: a query sees events up to
    the last batch, as a session would close now.
    """
    parts = []
    for pipeline, partition in query.targets:
        task = tasks.get(TaskId(pipeline.name, partition))
        if task is None:
            parts.append(Part(pipeline.name, partition, REMOTE))
        elif task.state is not TaskState.RUNNING:
            parts.append(Part(pipeline.name, partition, RESTORING))
        else:
            kind = pipeline.window
            windows = []
            for window in task.store.peek(query.key):
                start, end = kind.bounds(window)
                windows.append(
                    {
                        "start_ms": start,
                        "end_ms": end,
                        # Event time after which the window is final; stream time
                        # passing it (events or, when idle, the wall clock) emits it.
                        "closes_at_ms": max(kind.next_close([window]), end),
                        "value": kind.values(window),
                    }
                )
            parts.append(Part(pipeline.name, partition, LOCAL, task.store.stream_time, windows))
    return parts
