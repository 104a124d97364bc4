"""The two small names the runtime passes around everywhere: a topic partition, and a task.

Both are pairs, so as bare tuples mypy could not tell a repartition partition
from the window task that reads it. As named tuples they still compare, hash
and unpack as the pairs they are (a ``TopicPartition``'s topic and partition,
a pipeline's name and partition).
"""

from __future__ import annotations

from typing import NamedTuple


class Partition(NamedTuple):
    """A topic partition."""

    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}-{self.partition}"


class TaskId(NamedTuple):
    """A window task: one partition of one pipeline."""

    pipeline: str
    partition: int
