"""Which standby copies this instance keeps, and keeping them: the standby half of a task manager.

Every few seconds, and soon after each rebalance, the group's description is
asked for (without blocking the loop) and ``service.runtime.placement`` says
which tasks this instance keeps a copy of. A copy starts by following its
changelog from its local checkpoint; a copy no longer wanted is closed after
``LINGER`` seconds, so that the moves of one rebalance do not open and close
copies back and forth. When a task's partition is assigned here, its copy
becomes the active task's store (``take``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import Future
from typing import Any

import structlog
from confluent_kafka import ConsumerGroupState
from confluent_kafka.admin import AdminClient

from service.config import Config
from service.core.pipeline import Pipeline
from service.core.topology import PipelinePlan
from service.runtime.changelog_reader import ChangelogReader
from service.runtime.ids import Partition, TaskId
from service.runtime.owners import instance_from_client_id
from service.runtime.placement import copies_for
from service.runtime.state_manager import StateManager
from service.runtime.tasks.standby import StandbyTask
from service.state.memory import StoreMemory

log = structlog.get_logger("sessionizer.standbys")

#: Seconds between two looks at the group when nothing happened.
REFRESH_INTERVAL = 5.0
#: Seconds after a rebalance before the group is described (it settles first).
AFTER_REBALANCE = 1.0
#: Seconds a copy no longer wanted is kept before it is closed.
LINGER = 30.0
#: Seconds a description may take.
DESCRIBE_TIMEOUT = 10.0
#: A copy this close to its changelog's end counts as warm (Kafka Streams' ``acceptable.recovery.lag``).
ACCEPTABLE_LAG = 10_000


class Standbys:
    def __init__(
        self,
        config: Config,
        pipelines: tuple[Pipeline, ...],
        plans: Mapping[str, PipelinePlan],
        reader: ChangelogReader,
        admin: AdminClient,
        memory: StoreMemory,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.replicas = config.num_standby_replicas
        self._config = config
        self._reader = reader
        self._admin = admin
        self._memory = memory
        self._clock = clock
        self._pipelines = {pipeline.name: pipeline for pipeline in pipelines}
        #: Every stateful task of the application, and the partition that says who runs it.
        self._tasks: list[TaskId] = []
        self._inputs: dict[Partition, TaskId] = {}
        for pipeline in pipelines:
            pipeline_plan = plans[pipeline.name]
            topic = pipeline.config.sources[0] if pipeline_plan.direct else pipeline.config.repartition_topic
            for partition in range(pipeline_plan.partitions):
                task = TaskId(pipeline.name, partition)
                self._tasks.append(task)
                self._inputs[Partition(topic, partition)] = task
        self.copies: dict[TaskId, StandbyTask] = {}
        self._unwanted_since: dict[TaskId, float] = {}
        self._pending: Future[Any] | None = None
        self._next_look = 0.0

    @property
    def enabled(self) -> bool:
        return self.replicas > 0

    def rebalanced(self) -> None:
        """The assignment changed: look at the group again once it settled."""
        self._next_look = min(self._next_look, self._clock() + AFTER_REBALANCE)

    def maintain(self, active: Collection[TaskId]) -> None:
        """Between polls: ask for the group's description when due, and act on an answer that came."""
        if not self.enabled:
            return
        now = self._clock()
        if self._pending is None:
            if now >= self._next_look:
                self._next_look = now + REFRESH_INTERVAL
                group = self._config.app_id
                self._pending = self._admin.describe_consumer_groups([group], request_timeout=DESCRIBE_TIMEOUT)[group]
            return
        if not self._pending.done():
            return
        pending, self._pending = self._pending, None
        try:
            description = pending.result()
        except Exception as exc:
            log.warning("could not describe the consumer group for standby placement", error=str(exc))
            return
        if description.state != ConsumerGroupState.STABLE:
            self._next_look = min(self._next_look, now + AFTER_REBALANCE)
            return
        members: set[str] = set()
        owners: dict[TaskId, str] = {}
        for member in description.members:
            instance = instance_from_client_id(member.client_id, self._config.app_id)
            if instance is None:
                continue
            members.add(instance)
            for tp in member.assignment.topic_partitions if member.assignment else ():
                task = self._inputs.get(Partition(tp.topic, tp.partition))
                if task is not None:
                    owners[task] = instance
        wanted = copies_for(self._config.instance_id, self._tasks, members, owners, self.replicas)
        self._apply(wanted - set(active), now)

    def warm_up(self) -> bool:
        """Before this instance joins: start a copy of every store, when the group has members.

        The group's assignor, not this instance, decides which partitions a
        newcomer receives, so it copies all of them; after it joined, the
        copies it neither runs nor keeps as standbys are closed after
        ``LINGER``. A group with no member (the application's first start, or
        all of it restarting) is not waited for: there is no one to take over
        from, and the disk's own stores restore their tails. False: no warm-up.
        """
        if not self.enabled:
            return False
        group = self._config.app_id
        try:
            description = self._admin.describe_consumer_groups([group], request_timeout=DESCRIBE_TIMEOUT)[group].result(
                DESCRIBE_TIMEOUT
            )
        except Exception as exc:
            log.warning("could not describe the consumer group; joining without warming up", error=str(exc))
            return False
        others = [m for m in description.members if instance_from_client_id(m.client_id, group) != self._config.instance_id]
        if not others:
            return False
        for task in self._tasks:
            if task not in self.copies:
                self._start(task)
        return True

    def warm(self) -> bool:
        """Every copy is within ``ACCEPTABLE_LAG`` records of its changelog's end."""
        return all(lag <= ACCEPTABLE_LAG for lag in self.lag().values())

    def _apply(self, wanted: set[TaskId], now: float) -> None:
        for task in sorted(wanted - self.copies.keys()):
            self._start(task)
        for task in list(self.copies):
            if task in wanted:
                self._unwanted_since.pop(task, None)
            elif now - self._unwanted_since.setdefault(task, now) >= LINGER:
                self._stop(task)

    def _start(self, task: TaskId) -> None:
        state = StateManager(self._config, self._pipelines[task.pipeline], task.partition, self._memory)
        copy = StandbyTask(state)
        try:
            self._reader.follow(state)
        except Exception:
            copy.close()
            raise
        self.copies[task] = copy

    def _stop(self, task: TaskId) -> None:
        copy = self.copies.pop(task)
        self._unwanted_since.pop(task, None)
        self._reader.unfollow(copy.state_manager)
        copy.close()
        log.info("standby closed", pipeline=task.pipeline, partition=task.partition)

    def take(self, task: TaskId) -> StateManager | None:
        """The copy's open store for the active task that takes ``task`` here; None without a copy."""
        copy = self.copies.pop(task, None)
        if copy is None:
            return None
        self._unwanted_since.pop(task, None)
        self._reader.unfollow(copy.state_manager)
        log.info("standby promoted", pipeline=task.pipeline, partition=task.partition, checkpoint=copy.state_manager.store.checkpoint)
        return copy.hand_over()

    def lag(self) -> dict[TaskId, int]:
        """Per copy, the changelog records it lacks."""
        by_changelog = self._reader.standby_lag()
        return {
            task: by_changelog[where]
            for task, copy in self.copies.items()
            if (where := Partition(copy.state_manager.changelog, task.partition)) in by_changelog
        }

    def close(self) -> None:
        for task in list(self.copies):
            self._stop(task)
