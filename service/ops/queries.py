"""Open-window queries: ``GET /sessions/{key}``, the HTTP side.

An application can see a key's windows before they close (seed 004: offer the
coupon while the cart is still open), read from this instance's local state.
The HTTP thread computes the key's partition (Java's murmur2, as the producer
does), posts a query to the stream loop's inbox (``service.runtime.queries``)
and waits for the answer. When the partition is not local, it names the
instance that owns it, from the consumer group's description.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Protocol
from urllib.parse import quote

import orjson

from service.config import Config
from service.core.partitioner import partition_for
from service.core.pipeline import Pipeline
from service.core.topology import PipelinePlan
from service.errors import ServiceStopping
from service.runtime.owners import Owner
from service.runtime.queries import LOCAL, REMOTE, RESTORING, UNASSIGNED, Part, Query, QueryInbox


class Owners(Protocol):
    """Who owns a partition (``service.runtime.owners.OwnerDirectory``)."""

    def owner(self, topic: str, partition: int) -> Owner | None: ...


class SessionQueries:
    """``GET /sessions/{key}``: the HTTP side of a query."""

    def __init__(
        self,
        config: Config,
        pipelines: tuple[Pipeline, ...],
        partitions: Mapping[str, int],
        inbox: QueryInbox,
        owners: Owners | None,
        plans: Mapping[str, PipelinePlan] | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.config = config
        self.pipelines = pipelines
        self.partitions = dict(partitions)
        #: How each pipeline is read: its task count, and the topic whose partition i task i owns.
        self.plans = dict(plans or {})
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
            plan = self.plans.get(p.name)
            count = plan.partitions if plan is not None else self.partitions.get(p.config.repartition_topic, self.config.topics.partitions)
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
        plan = self.plans.get(pipeline.name)
        # A direct task owns partition i of every source; the first one names its owner.
        topic = pipeline.config.sources[0] if plan is not None and plan.direct else pipeline.config.repartition_topic
        owner = self.owners.owner(topic, part.partition) if self.owners else None
        if owner is None:
            part.status = UNASSIGNED
            return
        part.owner = {"instance_id": owner.instance_id, "client_id": owner.client_id, "host": owner.host}
        port = self.config.http.sessions_port or self.config.http.port
        if port:
            # Instances of one app share the configured port (one container image).
            url = f"http://{_host_for_url(owner.host)}:{port}/sessions/{quote(key_text, safe='')}"
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
