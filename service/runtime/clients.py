"""librdkafka configurations for the service's clients.

The user's ``[kafka]`` properties (security, SASL, SSL, tuning) reach every
client; ``[kafka.consumer]`` and ``[kafka.producer]`` reach one kind. The few
settings correctness depends on are set last and cannot be overridden.
"""

from __future__ import annotations

import logging
from typing import Any

from service.config import Config
from service.runtime.client_errors import CLIENT_ERRORS
from service.runtime.frames import PACK_LIMIT

#: librdkafka's default ``message.max.bytes``.
_LIBRDKAFKA_MESSAGE_MAX_BYTES = 1_000_000

#: The standard-library logger every client logs through (``service.ops.logs`` renders it).
KAFKA_LOGGER = "sessionizer.librdkafka"


def kafka_logger() -> logging.Logger:
    """The logger librdkafka clients are given (``logger`` client property)."""
    return logging.getLogger(KAFKA_LOGGER)


# Tuning defaults a user may override.
_CONSUMER_DEFAULTS = {
    "auto.offset.reset": "earliest",
    # Crash detection: a member that stops heartbeating is dropped after this long
    # (Kafka Streams' value before 3.0; the broker's minimum is 6 s). Its
    # partitions wait that long, so keep it short; a clean stop leaves at once.
    "session.timeout.ms": "10000",
    # A tenth of the session timeout: also how soon the other members hear that a rebalance started.
    "heartbeat.interval.ms": "1000",
    "max.poll.interval.ms": "300000",
    "fetch.wait.max.ms": "100",
    # librdkafka pauses a partition's fetching for this long once its prefetch
    # queue is full (default 1 s). With batches consumed every few milliseconds
    # that pause starved the loop: 10 ms gave 1.3-1.4x throughput in bench/bench.py.
    "fetch.queue.backoff.ms": "10",
    # Records fetched ahead, per partition (librdkafka's default is 64 MiB each):
    # 8 MiB keeps a backlog of many partitions from filling the memory.
    "queued.max.messages.kbytes": "8192",
    # librdkafka's statistics, for the metrics (service.runtime.kafka_stats); 0 turns them off.
    "statistics.interval.ms": "15000",
}
# The restore consumer reads whole changelogs as fast as it can: large fetches
# (1.6-1.9x the records/s of librdkafka's defaults in bench/scale.py), with a
# bounded prefetch per partition.
_RESTORE_DEFAULTS = {
    "fetch.max.bytes": "67108864",
    "max.partition.fetch.bytes": "16777216",
    "queued.max.messages.kbytes": "16384",
    "fetch.wait.max.ms": "10",
}
_PRODUCER_DEFAULTS = {
    "linger.ms": "5",
    "compression.type": "none",
    # Kafka Streams' exactly-once default: a crashed instance's open
    # transaction is aborted within 10 s, so whoever takes over its partitions
    # can read past it.
    "transaction.timeout.ms": "10000",
    # librdkafka's statistics, for the metrics (service.runtime.kafka_stats); 0 turns them off.
    "statistics.interval.ms": "15000",
}


def _common(config: Config, kind: str) -> dict[str, Any]:
    props: dict[str, Any] = dict(config.kafka)
    # librdkafka's own log lines go through structlog (JSON, app id, secrets scrubbed),
    # and its errors through one reporter that logs each kind once in a while.
    props["logger"] = kafka_logger()
    props["error_cb"] = CLIENT_ERRORS.callback(kind)
    return props


def consumer_config(config: Config, co_partitioned: bool = False) -> dict[str, Any]:
    """The group member that reads source and repartition topics.

    ``co_partitioned``: some task reads partition i of several topics, which
    only the range assignor keeps on one member (``service.core.topology``).
    Its rebalances are eager: every partition is revoked and reassigned.
    """
    props = _common(config, "consumer")
    props.update(_CONSUMER_DEFAULTS)
    # Static membership (KIP-345), when asked for: a restart within the session
    # timeout keeps its partitions, with no rebalance. Off by default: after a
    # broker outage longer than the session timeout, librdkafka 2.16 fences its
    # own consumer on rejoining (issue #3437) and it stops fetching (seen in
    # the broker-restart test). ``ConsumerFenced`` restarts the loop when the
    # fence reaches it.
    if config.static_membership:
        props["group.instance.id"] = config.instance_id
    props.update(config.consumer)
    props.update(
        {
            "group.id": config.app_id,
            "client.id": consumer_client_id(config),
            "partition.assignment.strategy": "range" if co_partitioned else "cooperative-sticky",
            "enable.auto.commit": "false",
            "enable.auto.offset.store": "false",
            "enable.partition.eof": "true",
            "isolation.level": "read_committed" if config.exactly_once else "read_uncommitted",
        }
    )
    return props


def restore_consumer_config(config: Config) -> dict[str, Any]:
    """A consumer with no group, assigned changelog partitions while they restore."""
    props = _common(config, "restore consumer")
    props.update(_RESTORE_DEFAULTS)
    props.update(config.consumer)
    for group_only in ("group.instance.id", "session.timeout.ms", "max.poll.interval.ms", "partition.assignment.strategy"):
        props.pop(group_only, None)
    props.pop("statistics.interval.ms", None)  # no one reads this consumer's statistics
    props.update(
        {
            "group.id": f"{config.app_id}-restore-unused",
            "client.id": f"{config.app_id}-{config.instance_id}-restore",
            "enable.auto.commit": "false",
            "enable.auto.offset.store": "false",
            "enable.partition.eof": "true",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    return props


def producer_config(config: Config) -> dict[str, Any]:
    """One producer per process, transactional under exactly-once.

    ``murmur2_random`` puts a key in the partition a Java producer would.
    """
    props = _common(config, "producer")
    props.update(_PRODUCER_DEFAULTS)
    props.update(config.producer)
    props.update(
        {
            "client.id": f"{config.app_id}-{config.instance_id}-producer",
            "partitioner": "murmur2_random",
            "enable.idempotence": "true",
        }
    )
    if config.exactly_once:
        props["transactional.id"] = transactional_id(config)
    return props


def pack_limit(config: Config) -> int | None:
    """Bytes of entries a repartition pack holds at most; None for a record per event (``app.pack_frames = false``).

    Half the producer's ``message.max.bytes`` when that is less than
    ``PACK_LIMIT``: a pack, with its header and the record's overhead, then
    always fits what the producer accepts.
    """
    if not config.pack_frames:
        return None
    most = producer_config(config).get("message.max.bytes", _LIBRDKAFKA_MESSAGE_MAX_BYTES)
    try:
        return min(PACK_LIMIT, int(most) // 2)
    except ValueError:  # librdkafka refuses it when the producer is made, with its own message
        return PACK_LIMIT


def bulk_producer_config(config: Config, role: str) -> dict[str, Any]:
    """A producer outside any transaction, for maintenance commands that copy many records.

    Idempotent with ``acks=all``: a record is written once and only reported
    delivered once every in-sync replica has it. Large batches: the copy is
    throughput-bound. ``[kafka.producer]`` still applies (security, tuning).
    """
    props = _common(config, "producer")
    props.update({"linger.ms": "50", "batch.size": "1048576", "queue.buffering.max.messages": "1000000"})
    props.update(config.producer)
    props.pop("transactional.id", None)
    props.update(
        {"client.id": f"{config.app_id}-{config.instance_id}-{role}", "enable.idempotence": "true", "acks": "all"}
    )
    return props


def admin_config(config: Config) -> dict[str, Any]:
    props = _common(config, "admin")
    props["client.id"] = f"{config.app_id}-{config.instance_id}-admin"
    return props


def transactional_id(config: Config) -> str:
    """Stable per instance, so a restarted instance fences its previous incarnation."""
    return f"{config.app_id}-{config.instance_id}"


def consumer_client_id(config: Config) -> str:
    """The group member's ``client.id``: how the group's description names this instance (``service.runtime.owners``)."""
    return f"{config.app_id}-{config.instance_id}-consumer"
