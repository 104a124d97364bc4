"""Where standby replicas live: rendezvous hashing over the group's members.

librdkafka's assignors cannot be replaced, so the group decides where a task
runs and no one can steer it to the replica holding its copy. What can be
chosen is where the copies go. Every instance reads the group's description
(``describe_consumer_groups``: members, their instance ids, their partitions)
and computes the same answer on its own, with no coordination:

- for each stateful task, the candidates are every member except the one
  running it;
- each candidate scores ``hash(instance id, task)``; the ``replicas`` highest
  hold a copy.

Rendezvous hashing moves few copies when members come and go: a new member
takes over only the copies it now scores highest for, and a member that
leaves hands over only its own. With ``replicas`` ≥ members − 1, every member
holds a copy of every task it does not run, so whoever the group picks after a
failure finds its copy warm. That is the case for two replicas and one standby,
the setting docs/operations.md recommends.

A copy is only ever written by the instance holding it, from the changelog
(read committed) into its own directory; the changelog is only ever written
by the task's one active owner, whose transactional producer fences any
other. So no two replicas write the same state, whatever the description says.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping

from service.runtime.ids import TaskId


def score(instance: str, task: TaskId) -> int:
    """A stable, well-mixed number for (instance, task): the same in every process and release."""
    digest = hashlib.blake2b(f"{instance}\0{task.pipeline}\0{task.partition}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def standby_holders(
    tasks: Iterable[TaskId], members: Collection[str], owners: Mapping[TaskId, str], replicas: int
) -> dict[TaskId, list[str]]:
    """Per task, the instances that keep a copy of its store, best first.

    ``members``: the instance ids in the group; ``owners``: which instance runs
    each task (a task missing from it runs nowhere yet, so every member is a
    candidate).
    """
    holders: dict[TaskId, list[str]] = {}
    if replicas <= 0:
        return holders
    for task in tasks:
        owner = owners.get(task)
        candidates = [member for member in members if member != owner]
        candidates.sort(key=lambda member: score(member, task), reverse=True)
        holders[task] = candidates[:replicas]
    return holders


def copies_for(
    instance: str, tasks: Iterable[TaskId], members: Collection[str], owners: Mapping[TaskId, str], replicas: int
) -> set[TaskId]:
    """The tasks ``instance`` keeps a standby copy of."""
    return {task for task, holders in standby_holders(tasks, members, owners, replicas).items() if instance in holders}
