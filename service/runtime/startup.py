"""Start-up against the cluster: the admin client, the topics, then the stream loop.

The loop's clients are created once the topics exist: a client that looked
the topics up before they were created can be told "not leader" when a store
starts restoring. A property librdkafka refuses is a configuration problem and
is reported as one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from service.config import Config
from service.errors import ConfigError
from service.runtime.clients import admin_config
from service.runtime.loop import StreamLoop
from service.runtime.owners import OwnerDirectory
from service.runtime.topics import ensure_topics

T = TypeVar("T")


@dataclass
class Started:
    loop: StreamLoop
    owners: OwnerDirectory
    #: Partitions per topic, as found or created.
    partitions: dict[str, int]


def start(config: Config) -> Started:
    admin = _client(lambda: AdminClient(admin_config(config)))
    partitions = ensure_topics(admin, config)
    loop = _client(lambda: StreamLoop(config, partitions))
    return Started(loop, OwnerDirectory(admin, config), partitions)


def _client(make: Callable[[], T]) -> T:
    try:
        return make()
    except KafkaException as exc:
        raise ConfigError([f"kafka: {exc.args[0].str()}"]) from None
