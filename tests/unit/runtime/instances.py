"""Service instances for the runtime's unit tests: a TaskManager over the fakes of ``tests.fakes``.

No broker and no threads: real RocksDB stores, the instance's own wall clock
(``Instance.now``), and a ``FakeCluster`` that stands for the broker, which
instances may share. Each test module says what differs (its pipeline, its
topics' partition counts, its admin client); the wiring is here once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import TopicPartition

from service.config import Config
from service.core.pipeline import compile_pipelines
from service.core.topology import plan
from service.runtime.client_errors import ClientErrors
from service.runtime.producer import TransactionalProducer
from service.runtime.stats import LoopStats
from service.runtime.task_manager import Clients, Clocks, TaskManager
from service.runtime.tasks import DirectTask, WindowTask
from service.state.store import WindowStore
from tests.fakes import FakeAdmin, FakeCluster, FakeConsumer, FakeProducer, Producers
from tests.helpers import config_from_toml, config_toml, pipeline, session_window

#: The partition count of every pipeline here.
PIPELINE_PARTITIONS = 2
#: The wall clock (epoch s) minus the instance's clock: at ``now = 1000`` it is 1,700,000,000 (T0 of the tests).
WALL_CLOCK_OFFSET = 1_700_000_000 - 1_000

Where = tuple[str, int]


def runtime_config(state_dir: Path, table: dict[str, Any], guarantee: str = "exactly_once", **tables: dict[str, Any]) -> Config:
    """Instance ``test``, its stores under ``state_dir``, and one pipeline, ``s``; ``tables`` adds ``topics``, ``kafka``…
    (an ``app`` table adds to the instance's own keys)."""
    app = {"instance_id": "test", "state_dir": str(state_dir), "processing_guarantee": guarantee, **tables.pop("app", {})}
    return config_from_toml(config_toml({"s": table}, app=app, **tables))


def event(user: str, at_ms: int) -> bytes:
    """An event of ``user`` at ``at_ms``, as the pipelines here read it (``user_id``, ``ts``)."""
    return orjson.dumps({"user_id": user, "ts": at_ms})


class Instance:
    """One service instance: a TaskManager over fakes on ``cluster``, for the topics of ``partitions`` (name: count)."""

    def __init__(
        self,
        cluster: FakeCluster,
        config: Config,
        partitions: dict[str, int],
        admin: FakeAdmin | None = None,
        consumer: type[FakeConsumer] = FakeConsumer,
    ) -> None:
        self.cluster = cluster
        self.config = config
        self.producers = Producers(cluster)
        self.transactional = TransactionalProducer(self.producers, config.exactly_once)
        self.consumer = consumer(cluster)
        cluster.topic_partitions.update(partitions)
        self.restore_consumer = consumer(cluster)
        self.admin = admin if admin is not None else FakeAdmin(cluster=cluster)
        self.stats = LoopStats()
        #: What the instance's clients would report through librdkafka's error callback.
        self.client_errors = ClientErrors()
        self.plans = plan(config.pipelines, PIPELINE_PARTITIONS, partitions)
        #: The instance's clock (monotonic seconds); tests move it on. Its wall clock moves with it.
        self.now = 1_000.0
        self.tasks = TaskManager(
            config,
            compile_pipelines(config.pipelines),
            self.plans,
            partitions,
            Clients(self.consumer, self.transactional, self.restore_consumer, self.admin, errors=self.client_errors),
            self.stats,
            clocks=Clocks(lambda: self.now, lambda: self.now + WALL_CLOCK_OFFSET),
        )
        self.transactional.init()

    @property
    def producer(self) -> FakeProducer:
        """The producer in use (a failed commit may have replaced the first)."""
        return self.producers.current

    def tick(self, seconds: float = 1.0, times: int = 1) -> None:
        """Let ``seconds`` pass, then punctuate, ``times`` over."""
        for _ in range(times):
            self.now += seconds
            self.tasks.punctuate(self.now)

    def assign(self, *partitions: Where) -> None:
        self.tasks.on_assign(self.consumer, [TopicPartition(t, p) for t, p in partitions])

    def revoke(self, *partitions: Where) -> None:
        tps = [TopicPartition(t, p) for t, p in partitions]
        self.tasks.on_revoke(self.consumer, tps)
        self.consumer.incremental_unassign(tps)  # what the client does after the callback

    def lose(self, *partitions: Where) -> None:
        tps = [TopicPartition(t, p) for t, p in partitions]
        self.tasks.on_lost(self.consumer, tps)
        self.consumer.incremental_unassign(tps)

    def window(self, partition: int = 0) -> WindowTask:
        return self.tasks.window_tasks[("s", partition)]

    def direct_task(self, partition: int = 0) -> DirectTask:
        task = self.window(partition)
        assert isinstance(task, DirectTask)
        return task

    def purge_due(self) -> None:
        """The purge interval has passed (purging reads the process's clock, not the instance's)."""
        self.tasks.committer.purge_due()

    @contextmanager
    def reopened(self, path: Path) -> Iterator[WindowStore]:
        """The store a task kept at ``path``, opened again (RocksDB lets it once the task closed it), then closed."""
        store = WindowStore(path, self.tasks.pipelines[0].window)
        try:
            yield store
        finally:
            store.close()

    def close(self) -> None:
        self.tasks.close()
        self.producers.release()


@dataclass
class Instances:
    """Instances on one cluster, each with its state directory ``root / name``: ``make(name)``, then ``close()`` them all."""

    cluster: FakeCluster
    root: Path
    table: dict[str, Any]
    partitions: dict[str, int]
    admin: Callable[[FakeCluster], FakeAdmin] = lambda cluster: FakeAdmin(cluster=cluster)
    #: The consumers' kind: fed by the test (``FakeConsumer``), or reading the cluster (``FetchingConsumer``).
    consumer: type[FakeConsumer] = FakeConsumer
    made: list[Instance] = field(default_factory=list)

    def __call__(self, name: str = "a", guarantee: str = "exactly_once", **tables: dict[str, Any]) -> Instance:
        config = runtime_config(self.root / name, self.table, guarantee, **tables)
        self.made.append(Instance(self.cluster, config, self.partitions, self.admin(self.cluster), self.consumer))
        return self.made[-1]

    def close(self) -> None:
        for one in self.made:
            one.close()


# -- a pipeline read directly -----------------------------------------------------------------------

WEB, MOBILE = "web", "mobile"
OUTPUT = "out"


def direct_instance(state_dir: Path, **tables: dict[str, Any]) -> Instance:
    """Pipeline ``s``: sessions (gap 10 s, grace 1 s) grouped by the record key over ``web`` and ``mobile``.

    Both topics have two partitions, as many as the pipeline: co-partitioned, so
    the pipeline reads them directly, without a repartition topic. The instance
    has a cluster of its own; ``tables`` adds to its config (``sources``, ``schema_registry``…).
    """
    table = pipeline([WEB, MOBILE], session_window("10s", "1s"), key="@key", output=OUTPUT, time_format="epoch_ms")
    config = runtime_config(state_dir, table, topics={"partitions": PIPELINE_PARTITIONS}, **tables)
    return Instance(FakeCluster(), config, {WEB: 2, MOBILE: 2, "sessionizer-s-changelog": 2})
