"""Open-window queries: ``GET /sessions/{key}``.

An application can see a key's windows before they close (seed 004: offer the
coupon while the cart is still open), read from this instance's local state.

Stores and their caches belong to the stream loop's thread, so the HTTP thread
never reads them. It computes the key's partition (Java's murmur2, as the
producer does), posts a ``Query`` to the ``QueryInbox`` and waits; the loop
answers every posted query once per iteration, which is at least once per
commit interval. When the partition is not local, the HTTP thread names the
instance that owns it, from the consumer group's description.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson
import structlog
from confluent_kafka.admin import AdminClient

from service.config import Config
from service.core.partitioner import partition_for
from service.core.pipeline import Pipeline
from service.errors import ServiceStopping

if TYPE_CHECKING:
    from service.runtime.tasks import WindowTask

log = structlog.get_logger("sessionizer.queries")

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
    answer: Future = field(default_factory=Future)


class QueryInbox:
    """Queries posted by HTTP threads, answered by the loop thread between polls."""

    def __init__(self) -> None:
        self._pending: deque[Query] = deque()
        self._closed = False

    def submit(self, query: Query) -> Future:
        if self._closed:
            query.answer.set_exception(ServiceStopping())
        else:
            self._pending.append(query)
        return query.answer

    def serve(self, tasks: Mapping[tuple[str, int], WindowTask]) -> None:
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


def answer(tasks: Mapping[tuple[str, int], WindowTask], query: Query) -> list[Part]:
    """Read the key's open windows from the tasks that hold it (loop thread only).

    The windows include changes not yet committed: a query sees events up to
    the last batch, as a session would close now.
    """
    from service.runtime.tasks import TaskState

    parts = []
    for pipeline, partition in query.targets:
        task = tasks.get((pipeline.config.repartition_topic, partition))
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


@dataclass(frozen=True)
class Owner:
    instance_id: str | None
    client_id: str
    host: str


class OwnerDirectory:
    """Which instance owns which partition, from the consumer group's description (cached)."""

    def __init__(self, admin: AdminClient, config: Config, ttl: float = 5.0, timeout: float = 5.0) -> None:
        self.admin = admin
        self.group = config.app_id
        self.app_id = config.app_id
        self.ttl = ttl
        self.timeout = timeout
        self._owners: dict[tuple[str, int], Owner] = {}
        self._fetched = 0.0
        self._lock = threading.Lock()

    def owner(self, topic: str, partition: int) -> Owner | None:
        with self._lock:
            now = time.monotonic()
            missing = (topic, partition) not in self._owners
            # A miss refreshes early (ownership may just have moved), at most once a second.
            if now - self._fetched > self.ttl or (missing and now - self._fetched > 1.0):
                self._refresh(now)
            return self._owners.get((topic, partition))

    def _refresh(self, now: float) -> None:
        self._fetched = now
        try:
            future = self.admin.describe_consumer_groups([self.group], request_timeout=self.timeout)[self.group]
            description = future.result(self.timeout)
        except Exception as exc:
            log.warning("could not describe the consumer group", group=self.group, error=str(exc))
            return
        owners = {}
        for member in description.members:
            owner = Owner(instance_from_client_id(member.client_id, self.app_id), member.client_id, member.host.lstrip("/"))
            for tp in member.assignment.topic_partitions:
                owners[(tp.topic, tp.partition)] = owner
        self._owners = owners


def instance_from_client_id(client_id: str, app_id: str) -> str | None:
    """The instance id in a consumer's ``client.id`` (``<app id>-<instance id>-consumer``)."""
    prefix, suffix = f"{app_id}-", "-consumer"
    if client_id.startswith(prefix) and client_id.endswith(suffix) and len(client_id) > len(prefix) + len(suffix):
        return client_id[len(prefix) : -len(suffix)]
    return None


class SessionQueries:
    """``GET /sessions/{key}``: the HTTP side of a query."""

    def __init__(
        self,
        config: Config,
        pipelines: tuple[Pipeline, ...],
        partitions: Mapping[str, int],
        inbox: QueryInbox,
        owners: OwnerDirectory | None,
        timeout: float = 5.0,
    ) -> None:
        self.config = config
        self.pipelines = pipelines
        self.partitions = dict(partitions)
        self.inbox = inbox
        self.owners = owners
        self.timeout = timeout

    def lookup(self, key_text: str, pipeline: str | None = None) -> tuple[int, dict[str, Any]]:
        """HTTP status and JSON body for one key."""
        chosen = [p for p in self.pipelines if pipeline is None or p.name == pipeline]
        if not chosen:
            names = ", ".join(p.name for p in self.pipelines)
            return 404, {"error": f"no pipeline {pipeline!r}; pipelines: {names}"}
        targets = []
        key = b""
        for p in chosen:
            try:
                key = encode_key(key_text, len(p.config.key))
            except ValueError as exc:
                return 400, {"error": str(exc)}
            count = self.partitions.get(p.config.repartition_topic, self.config.topics.partitions)
            targets.append((p, partition_for(key, count)))
        try:
            parts = self.inbox.submit(Query(key, targets)).result(self.timeout)
        except ServiceStopping:
            return 503, {"error": "the service is stopping"}
        except FutureTimeout:
            return 503, {"error": f"the stream loop did not answer within {self.timeout} s"}
        for part in parts:
            if part.status == REMOTE:
                self._name_owner(part, key_text)
        body = {"key": key_text, "instance_id": self.config.instance_id, "pipelines": [p.as_dict() for p in parts]}
        statuses = {p.status for p in parts}
        if statuses == {LOCAL}:
            return 200, body
        if statuses & {RESTORING, UNASSIGNED}:
            return 503, body
        return 421, body

    def _name_owner(self, part: Part, key_text: str) -> None:
        pipeline = next(p for p in self.pipelines if p.name == part.pipeline)
        owner = self.owners.owner(pipeline.config.repartition_topic, part.partition) if self.owners else None
        if owner is None:
            part.status = UNASSIGNED
            return
        part.owner = {"instance_id": owner.instance_id, "client_id": owner.client_id, "host": owner.host}
        if self.config.http_port:
            # Instances of one app share the configured port (one container image).
            url = f"http://{_host_for_url(owner.host)}:{self.config.http_port}/sessions/{quote(key_text, safe='')}"
            part.owner["url"] = f"{url}?pipeline={quote(part.pipeline, safe='')}"


def encode_key(text: str, fields: int) -> bytes:
    """The grouping key's bytes, as the source stage builds them.

    One key field: its text. Several: a JSON array of their texts, e.g.
    ``["u1","shop-7"]``; spacing does not matter.
    """
    if not text:
        raise ValueError("empty key")
    if fields == 1:
        return text.encode()
    try:
        values = orjson.loads(text)
    except orjson.JSONDecodeError:
        values = None
    if not isinstance(values, list) or len(values) != fields:
        raise ValueError(f"this pipeline's key has {fields} fields: give a JSON array of {fields} values")
    return orjson.dumps([v if isinstance(v, str) else str(v) for v in values])


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host
