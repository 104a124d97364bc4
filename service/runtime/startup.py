"""Start-up against the cluster: reach the broker, check and create the topics, then build the loop.

A broker that does not answer yet is not a reason to die: containers start
in any order. Start-up retries with a growing pause, logging each attempt
with the broker's address and librdkafka's reason, while ``/readyz`` says
``broker unreachable: …``. What retrying cannot mend ends it with one line: a
configuration problem (a missing source topic, a property librdkafka
refuses) or a fatal client error (an authentication failure).

The loop's clients are created once the topics exist: a client that looked
the topics up before they were created can be told "not leader" when a store
starts restoring.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from service.config import Config
from service.errors import BrokerError, ConfigError, RegistryUnavailable, ServiceStopping
from service.runtime.client_errors import CLIENT_ERRORS
from service.runtime.clients import admin_config
from service.runtime.formats import Formats
from service.runtime.loop import StreamLoop
from service.runtime.owners import OwnerDirectory
from service.runtime.stats import LoopStats
from service.runtime.topics import Prepared, prepare_topics

log = structlog.get_logger("sessionizer.startup")

T = TypeVar("T")

#: How long one attempt waits for the broker's metadata, and the longest pause between attempts.
ATTEMPT_TIMEOUT = 5.0
MAX_BACKOFF = 30.0


@dataclass
class Started:
    loop: StreamLoop
    owners: OwnerDirectory
    #: Partitions per topic, as found or created.
    partitions: dict[str, int]
    #: The configuration with the internal topics of the committed layout (``service.core.layout``).
    config: Config


def start(config: Config, stats: LoopStats | None = None, stopping: Callable[[], bool] = lambda: False) -> Started:
    """Connect (retrying while the broker does not answer), ensure the topics, build the loop.

    Raises ``ServiceStopping`` when ``stopping()`` turns true while waiting.
    """
    stats = stats or LoopStats()
    admin = _client(lambda: AdminClient(admin_config(config)))
    prepared = _topics(admin, config, stats, stopping)
    config, partitions = prepared.config, prepared.partitions
    formats = _formats(config, stats, stopping)
    direct = prepared.layout.direct if prepared.layout.committed else None
    loop = _client(lambda: StreamLoop(config, partitions, stats, formats, direct=direct))
    return Started(loop, OwnerDirectory(admin, config), partitions, config)


def _topics(admin: AdminClient, config: Config, stats: LoopStats, stopping: Callable[[], bool]) -> Prepared:
    pause = 1.0
    attempt = 0
    while True:
        attempt += 1
        try:
            prepared = prepare_topics(admin, config, timeout=ATTEMPT_TIMEOUT)
        except KafkaException as exc:
            admin.poll(0.1)  # serves the admin client's error callbacks: the broker's address and why
            fatal = CLIENT_ERRORS.fatal
            if fatal is not None:
                raise BrokerError(f"kafka at {config.bootstrap_servers}: {fatal.str()}") from None
            reason = (CLIENT_ERRORS.last or exc.args[0]).str()
            stats.not_ready = f"broker unreachable: {reason}"
            log.warning(
                "broker unreachable, retrying",
                bootstrap_servers=config.bootstrap_servers,
                reason=reason,
                attempt=attempt,
                retry_in_seconds=pause,
            )
            _sleep(pause, stopping)
            pause = min(pause * 2, MAX_BACKOFF)
            continue
        CLIENT_ERRORS.clear()
        stats.not_ready = "starting"
        if attempt > 1:
            log.info("broker reached", bootstrap_servers=config.bootstrap_servers, attempts=attempt)
        return prepared


def _formats(config: Config, stats: LoopStats, stopping: Callable[[], bool]) -> Formats:
    """Decoders for the sources, and the output schemas registered, retrying while the registry does not answer.

    A schema the registry refuses (an incompatible change) is a ``ConfigError``:
    retrying cannot mend it, and nothing has been written with it.
    """
    formats = Formats(config)
    pause = 1.0
    attempt = 0
    while True:
        attempt += 1
        try:
            formats.register_outputs()
        except RegistryUnavailable as exc:
            stats.not_ready = f"schema registry unreachable: {exc}"
            log.warning("schema registry unreachable, retrying", error=str(exc), attempt=attempt, retry_in_seconds=pause)
            _sleep(pause, stopping)
            pause = min(pause * 2, MAX_BACKOFF)
            continue
        stats.not_ready = "starting"
        return formats


def _sleep(seconds: float, stopping: Callable[[], bool]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if stopping():
            raise ServiceStopping("stopped before the broker answered")
        time.sleep(0.1)


def _client(make: Callable[[], T]) -> T:
    try:
        return make()
    except KafkaException as exc:
        raise ConfigError([f"kafka: {exc.args[0].str()}"]) from None
