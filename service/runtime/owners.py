"""Which instance owns which partition, from the consumer group's description.

``GET /sessions/{key}`` names the instance that holds a key it does not hold.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import structlog
from confluent_kafka.admin import AdminClient

from service.config import Config
from service.runtime.clients import consumer_client_id
from service.runtime.ids import Partition

log = structlog.get_logger("sessionizer.queries")


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
        self._owners: dict[Partition, Owner] = {}
        self._fetched = 0.0
        self._lock = threading.Lock()

    def owner(self, topic: str, partition: int) -> Owner | None:
        with self._lock:
            now = time.monotonic()
            missing = Partition(topic, partition) not in self._owners
            # A miss refreshes early (ownership may just have moved), at most once a second.
            if now - self._fetched > self.ttl or (missing and now - self._fetched > 1.0):
                self._refresh(now)
            return self._owners.get(Partition(topic, partition))

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
                owners[Partition(tp.topic, tp.partition)] = owner
        self._owners = owners


def same_instance_elsewhere(admin: AdminClient, config: Config, own_member_id: str | None, timeout: float = 10.0) -> str | None:
    """Another member of the group with this process's ``client.id`` (so its instance id), or None.

    Asked when the producer was fenced, to tell a newer process with this
    instance id (it is in the group) from the coordinator aborting a
    transaction that ran too long (no one else is). When the group cannot be
    described, None: the producer is then replaced, as for a timeout.
    """
    client_id = consumer_client_id(config)
    try:
        description = admin.describe_consumer_groups([config.app_id], request_timeout=timeout)[config.app_id].result(timeout)
    except Exception as exc:
        log.warning("could not describe the consumer group", group=config.app_id, error=str(exc))
        return None
    for member in description.members:
        if member.client_id == client_id and member.member_id != own_member_id:
            return f"member {member.member_id} on {member.host.lstrip('/')}"
    return None


def instance_from_client_id(client_id: str, app_id: str) -> str | None:
    """The instance id in a consumer's ``client.id`` (``<app id>-<instance id>-consumer``)."""
    prefix, suffix = f"{app_id}-", "-consumer"
    if client_id.startswith(prefix) and client_id.endswith(suffix) and len(client_id) > len(prefix) + len(suffix):
        return client_id[len(prefix) : -len(suffix)]
    return None
