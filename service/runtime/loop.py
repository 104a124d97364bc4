"""The stream loop: one thread that polls, routes, punctuates and asks for commits.

Like a Kafka Streams ``StreamThread``, it owns the consumer and the
transactional producer and delegates the rest: the ``TaskManager`` owns the
tasks, restores their stores between polls and runs each commit, and
``LoopStats`` records what operators see. One iteration: poll a batch, hand
it to the tasks, step any restore, answer queries, punctuate on the wall
clock, and commit as ``CommitPace`` says: every ``commit_interval``, less
often while behind.
"""

from __future__ import annotations

import time
from collections.abc import Container, Mapping

import structlog
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from service.config import Config
from service.core.pipeline import Pipeline, compile_pipelines
from service.core.topology import plan
from service.core.watermarks import source_parts
from service.errors import ConsumerFenced, Fenced
from service.runtime.clients import admin_config, consumer_config, producer_config, restore_consumer_config
from service.runtime.formats import Formats
from service.runtime.ids import Partition, TaskId
from service.runtime.kafka_stats import ConsumerStatistics, ProducerStatistics
from service.runtime.owners import same_instance_elsewhere
from service.runtime.pace import CommitPace, poll_wait
from service.runtime.producer import TransactionalProducer
from service.runtime.progress import Progress
from service.runtime.punctuator import Punctuator
from service.runtime.queries import QueryInbox
from service.runtime.stats import LoopStats, Sample
from service.runtime.task_manager import Clients, TaskManager
from service.runtime.tasks import TaskState, WindowTask

log = structlog.get_logger("sessionizer.loop")

#: Seconds a joining replica warms its standby copies up at most before it joins anyway.
WARM_UP_PATIENCE = 300.0


class StreamLoop:
    def __init__(
        self,
        config: Config,
        partitions: Mapping[str, int],
        stats: LoopStats | None = None,
        formats: Formats | None = None,
        direct: Container[str] | None = None,
        drain: bool = False,
    ) -> None:
        """``direct``: the pipelines the committed layout lets read their sources directly (None: never rescaled).

        ``drain``: read only the repartition topics, and stop once every one
        of their partitions is processed to its end and committed (``rescale``).
        """
        self.config = config
        self.drain = drain
        self.pipelines: tuple[Pipeline, ...] = compile_pipelines(config.pipelines)
        formats = formats if formats is not None else Formats(config)
        formats.attach_encoders(self.pipelines)
        self.plans = plan(config.pipelines, config.topics.partitions, partitions, direct)
        for pipeline_plan in self.plans.values():
            if pipeline_plan.note:
                log.info("pipeline read through its repartition topic", pipeline=pipeline_plan.name, why=pipeline_plan.note)
        self.stats = stats or LoopStats()
        self.queries = QueryInbox()
        producer_stats = ProducerStatistics(self.stats)
        co_partitioned = any(p.direct for p in self.plans.values())
        self.consumer = Consumer({**consumer_config(config, co_partitioned), "stats_cb": ConsumerStatistics(self.stats)})
        admin = AdminClient(admin_config(config))
        self.producer = TransactionalProducer(
            lambda: Producer({**producer_config(config), "stats_cb": producer_stats}),
            config.exactly_once,
            successor=lambda: same_instance_elsewhere(admin, config, self._member_id()),
        )
        self.tasks = TaskManager(
            config,
            self.pipelines,
            self.plans,
            partitions,
            Clients(
                self.consumer,
                self.producer,
                Consumer(restore_consumer_config(config)),
                admin,
                ends_admin=lambda: AdminClient(admin_config(config)),
            ),
            self.stats,
            formats=formats,
        )
        self.punctuator = Punctuator(config.punctuate_interval_ms / 1000)
        self._catching_up = Progress("catching up")
        self._running = False
        self._stop_requested = False

    # -- lifecycle ------------------------------------------------------------

    @property
    def topics(self) -> list[str]:
        return self.tasks.creator.repartition_topics if self.drain else self.tasks.topics

    def run(self) -> None:
        """Process until ``stop`` is called; then commit, close the stores and leave the group."""
        tasks = self.tasks
        self.producer.init()
        if not self.drain:
            self._warm_up()
        self.consumer.subscribe(self.topics, on_assign=tasks.on_assign, on_revoke=tasks.on_revoke, on_lost=tasks.on_lost)
        log.info("started", topics=self.topics, guarantee=self.config.processing_guarantee)
        config = self.config
        pace = CommitPace(config.commit_interval_ms / 1000, config.catch_up_commit_interval_ms / 1000, time.monotonic())
        self._running = True
        clean = False
        fenced = False
        try:
            while not self._stop_requested:
                try:
                    self._iterate(pace)
                except KafkaException as exc:
                    if exc.args[0].fatal() and not self.config.exactly_once:
                        raise
                    # A failed produce or group call leaves this batch half
                    # done: drop it, as a failed commit would.
                    log.warning("processing failed, aborting and rewinding", error=str(exc.args[0]))
                    tasks.abort_and_rewind()
            clean = True
        except ConsumerFenced:
            fenced = True
            raise
        finally:
            self._close(clean)
            if fenced and self.producer.stepped_down:
                # Its abort met the producer's fence and found the other process in the group.
                raise Fenced(
                    "another process with this instance id joined the group and took over its transactional id; "
                    "this one stops (give each instance its own instance_id)"
                ) from None

    def _warm_up(self) -> None:
        """With standbys, a replica joining a running group first copies the stores it may receive.

        Kafka Streams warms a newcomer up while the others keep its future
        partitions (KIP-441), which needs an assignor of its own; here the
        newcomer warms up before it joins, so the partitions the group then
        moves to it restore only their tails. It is not ready meanwhile, and
        waits at most ``WARM_UP_PATIENCE``.
        """
        tasks = self.tasks
        if not tasks.standbys.warm_up():
            return
        started = time.monotonic()
        self.stats.not_ready = "warming up standby copies before joining the group"
        log.info("warming up before joining the group", stores=len(tasks.standbys.copies), records=sum(tasks.standby_lag().values()))
        warm = False
        while not self._stop_requested and time.monotonic() - started < WARM_UP_PATIENCE:
            self.stats.last_iteration = time.monotonic()  # alive (``/healthz``), not ready
            if tasks.warm_up_step(0.1):
                warm = True
                break
        log.info("warmed up" if warm else "joining before the copies are warm", seconds=round(time.monotonic() - started, 3))

    def _iterate(self, pace: CommitPace) -> None:
        """One poll-process-punctuate(-commit) round; no poll while the last one's records are still in hand."""
        tasks = self.tasks
        restoring = tasks.restoring
        if not tasks.in_hand:
            # Wait for records until the next commit or punctuation, whichever is first: an idle loop must
            # still punctuate every punctuate_interval, or the broker's answers on quiet sources come too
            # far apart to count as watched time (``service.runtime.ends``) and quiet windows never close.
            now = time.monotonic()
            wait = 0.0 if restoring else poll_wait(min(pace.deadline - now, self.punctuator.remaining(now)))
            tasks.hold(self.consumer.consume(self.config.poll_batch, wait))
        routed = tasks.route_next()
        tasks.poll_schemas()
        if tasks.keeps_state:
            tasks.restore(timeout=0.05 if restoring and not routed else 0.0)
        self.producer.poll()
        now = time.monotonic()
        restoring_now = len(tasks.restore_remaining())
        if restoring_now < self.stats.restoring:
            # Sample before saying so: whoever sees the restore finished sees its counts too.
            self._sample(now)
        self.stats.restoring = restoring_now
        if self.stats.tick(now):
            self._sample(now)
        self.queries.serve(self.tasks.window_tasks)
        if self.punctuator.due(now):
            self.stats.punctuations += 1
            self.tasks.punctuate(now)
        if pace.due(now, tasks.behind, tasks.cache_over_budget):
            tasks.commit()
            pace.committed(time.monotonic())
            if self.drain and not tasks.in_hand and tasks.drained():
                log.info("repartition topics drained")
                self._stop_requested = True

    def _member_id(self) -> str | None:
        """This consumer's id in the group; None when it has none (not joined, or closed)."""
        try:
            return self.consumer.memberid() or None
        except (RuntimeError, KafkaException):
            return None

    def stop(self) -> None:
        """Ask the loop to finish its current batch and shut down cleanly (also before ``run``)."""
        self._stop_requested = True

    @property
    def ready(self) -> bool:
        """Partitions are assigned, restored and processing."""
        return self._running and bool(self.consumer.assignment()) and not self.tasks.restoring

    def _close(self, clean: bool) -> None:
        """Leave cleanly after ``stop``; after an error, commit nothing.

        A batch interrupted by an exception is half processed: committing it
        would publish some of its records without their offsets, and they would
        be produced again after the restart. Aborting leaves the last commit
        as the truth.
        """
        self._running = False
        self.stats.running = False
        self.queries.close()
        if clean:
            try:
                self.tasks.commit()
            except Exception:
                log.exception("final commit failed")
                clean = False
        if not clean:
            try:
                self.tasks.abort_and_rewind(lost=True)
            except Exception:
                log.exception("abort failed")
        if clean:
            self._leave_group()
        self.consumer.close()  # the revoke callback (if still assigned) commits and closes the tasks
        self.tasks.close()
        try:
            self.producer.close()
        except Exception as exc:
            # Everything was committed or aborted above; an error while letting the
            # producer go must not take the place of the reason the loop stops.
            log.warning("closing the producer failed", error=repr(exc))
        log.info("stopped", commits=self.stats.commits, clean=clean)

    def _leave_group(self, patience: float = 10.0) -> None:
        """Leave the group now, so the partitions move at once rather than after the session timeout.

        A static member's ``close`` does not leave (KIP-345: it may come back
        within the session timeout and keep its partitions); ``unsubscribe``
        does, once the revocation it starts has run. Records consumed meanwhile
        are dropped: they were not processed, and the next owner reads them
        from the committed offsets.
        """
        try:
            self.consumer.unsubscribe()
            deadline = time.monotonic() + patience
            while self.consumer.assignment() and time.monotonic() < deadline:
                self.consumer.consume(self.config.poll_batch, 0.05)
        except Exception as exc:  # leaving is a courtesy: the session timeout does it otherwise
            log.warning("leaving the group failed", error=repr(exc))

    # -- measuring ----------------------------------------------------------------

    def _sample(self, now: float) -> None:
        """Lag, store sizes and task totals, read in the loop's own thread; a failure is logged, never raised."""
        try:
            self.stats.sample = sample = self.take_sample(now)
        except Exception as exc:  # a metric must never stop the loop
            log.warning("metrics sampling failed", error=str(exc))
            return
        lag = sum(sample.lag.values())
        if lag:  # a replay, or a backlog after an outage: say how it goes every 10 s
            self._catching_up.done = sum(self.stats.consumed.values())
            running = [t.store.stream_time for t in self.tasks.running_windows if t.store.stream_time is not None]
            self._catching_up.report(remaining=lag, stream_time=min(running, default=None))

    def take_sample(self, now: float) -> Sample:
        """Lag is the high watermark librdkafka last saw in a fetch response (the last
        stable offset under read_committed) minus the consumer's position: no request
        to the broker is made."""
        consumer = self.consumer
        assignment = consumer.assignment()
        lag: dict[Partition, int] = {}
        if assignment:
            for tp in consumer.position(assignment):
                if tp.offset < 0:
                    continue  # nothing fetched yet
                _low, high = consumer.get_watermark_offsets(tp, cached=True)
                if high >= 0:
                    lag[Partition(tp.topic, tp.partition)] = max(0, high - tp.offset)
        windows = list(self.tasks.window_tasks.values())
        stores = {t.task_id: (t.store.approximate_keys(), t.store.approximate_bytes()) for t in windows}
        states = [t.state for t in windows]
        stream_time: dict[TaskId, int] = {}
        watermarks: dict[tuple[str, int, str], int] = {}
        for task in windows:
            if task.state is not TaskState.RUNNING:
                continue  # a restoring task's stream time is the restore's, not yet the data's
            if task.store.stream_time is not None:
                stream_time[task.task_id] = task.store.stream_time
            for topic, mark in topic_watermarks(task).items():
                watermarks[(task.pipeline.name, task.partition, topic)] = mark
        remaining = self.tasks.restore_remaining()
        standby_lag = self.tasks.standby_lag()
        self.stats.records_sent = self.tasks.records_sent
        return Sample(
            at=now,
            assigned=len(assignment),
            lag=lag,
            stores=stores,
            tasks=self.tasks.task_counts(),
            task_states={state.value: states.count(state) for state in TaskState},
            restore_remaining=remaining,
            standby_lag=standby_lag,
            stream_time=stream_time,
            watermarks=watermarks,
        )


def topic_watermarks(task: WindowTask) -> dict[str, int]:
    """Per source topic of ``task``, its watermark as the task sees it (epoch ms).

    That is the lowest watermark among the topic's partitions, the one that
    holds stream time back. A topic with a partition not heard from yet has
    none.
    """
    marks = task.watermarks
    topics = task.pipeline.config.sources
    lowest: dict[str, int] = {}
    unknown: set[str] = set()
    for source in marks.expected | marks.marks.keys():
        index, _ = source_parts(source)
        topic = topics[index] if index < len(topics) else str(index)
        mark = marks.marks.get(source)
        if mark is None:
            unknown.add(topic)
        elif topic not in lowest or mark < lowest[topic]:
            lowest[topic] = mark
    return {topic: mark for topic, mark in lowest.items() if topic not in unknown}
