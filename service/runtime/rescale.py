"""``sessionizer rescale``: move an application's state to another partition count, without replaying its sources.

Flink rescales by restoring a savepoint at a new parallelism; here the
changelogs are the savepoint. With every replica stopped:

1. **Drain.** What the repartition topics still hold is processed by the
   window tasks of the current layout (``StreamLoop`` with ``drain``), with
   the sources untouched, and committed as usual: the repartition frames keep
   their order and watermarks, and nothing is left behind in topics the new
   layout does not read.
2. **New topics.** The next generation's repartition and changelog topics
   are created with the new count; leftovers of an interrupted attempt are
   deleted first.
3. **Copy.** Every record of each old changelog partition goes, in order,
   to the partition of the new changelog its key belongs in
   (``service.core.partitioner``): a key lives in one old partition, so its
   records keep their order and the last one wins, as in a restore. Then
   each new partition gets its stream time and watermarks: the minimum over
   the old partitions that sent it keys (``service.core.layout``).
4. **Commit.** One record on the layout topic switches the application to
   the new generation. Killed before it, the old layout is intact and a new
   run starts over; after it, a new run finds the work done.

The sources' committed offsets are not touched. The old generation's topics
stay until ``rescale --cleanup``.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from service.config import Config
from service.core.layout import Layout, PartitionMeta, apply_layout, layout_topic, merged_meta
from service.core.partitioner import partition_for
from service.core.topology import plan
from service.errors import OperationRefused, UsageError
from service.runtime.admin import require_empty_group, wait_until_gone
from service.runtime.clients import admin_config, bulk_producer_config, restore_consumer_config
from service.runtime.layout import read_layout, write_layout
from service.runtime.loop import StreamLoop
from service.runtime.positions import checked
from service.runtime.tasks.window import WATERMARKS
from service.runtime.topics import delete_topics, ensure_topics, every_generation, internal_topics
from service.state.store import META_PREFIX, STREAM_TIME, WINDOW_PREFIX, decode_time, encode_time

log = structlog.get_logger("sessionizer.rescale")

#: How long the command waits for members of a crashed process to leave the group (its session timeout and some).
GROUP_PATIENCE = 20.0


@dataclass
class Copied:
    """One pipeline's changelog copy."""

    pipeline: str
    records: int = 0
    #: New partition -> the old partitions that sent it keys.
    senders: dict[int, set[int]] = field(default_factory=dict)


@dataclass
class Rescaled:
    old: Layout
    new: Layout
    drained: bool
    copied: list[Copied]
    seconds: float


def rescale(config: Config, partitions: int, report: Callable[[str], None] = print) -> Rescaled | None:
    """Move every pipeline's state to ``partitions``; None when it has that many already."""
    if partitions < 1:
        raise UsageError(f"--partitions {partitions}: expected a whole number >= 1")
    started = time.monotonic()
    admin = AdminClient(admin_config(config))
    _wait_for_empty_group(admin, config.app_id)
    counts = _counts(admin)
    old = read_layout(config, counts)
    if old.partitions == partitions and old.committed:
        report(f"the state already has {partitions} partitions (layout generation {old.generation}); nothing to do")
        return None
    old_config = apply_layout(dataclasses.replace(config, topics=dataclasses.replace(config.topics, partitions=old.partitions)), old)
    sized = dataclasses.replace(config, topics=dataclasses.replace(config.topics, partitions=partitions))
    new = Layout(old.generation + 1, partitions, _still_direct(sized, old, counts))
    new_config = apply_layout(sized, new)
    report(
        f"rescale of {config.app_id!r}: {old.partitions} -> {partitions} partitions, layout generation {old.generation} -> {new.generation}"
    )

    drained = _drain(old_config, old, counts, report)
    require_empty_group(admin, config.app_id)
    counts = _fresh_topics(admin, new_config, new, report)
    copied = [_copy(config, old_config, new_config, name, counts, report) for name in (p.name for p in config.pipelines)]
    require_empty_group(admin, config.app_id)
    write_layout(config, new)
    seconds = time.monotonic() - started
    report(
        f"committed layout generation {new.generation} ({partitions} partitions) in {seconds:.1f} s; "
        "start the replicas with topics.partitions = "
        f"{partitions}; 'sessionizer rescale --cleanup' deletes generation {old.generation}'s topics"
    )
    return Rescaled(old, new, drained, copied, seconds)


def cleanup(config: Config, report: Callable[[str], None] = print) -> list[str]:
    """Delete the internal topics and this machine's local stores of every generation but the committed one."""
    admin = AdminClient(admin_config(config))
    counts = _counts(admin)
    layout = read_layout(config, counts)
    if not layout.committed:
        report("this application was never rescaled; nothing to clean up")
        return []
    current = set(internal_topics(apply_layout(config, layout)))
    stale = [t for t in every_generation(config, counts) if t not in current and t != layout_topic(config)]
    deleted = delete_topics(admin, stale)
    wait_until_gone(admin, deleted)
    for topic in deleted:
        report(f"deleted {topic}")
    for path in stale_stores(config, layout.generation):
        shutil.rmtree(path, ignore_errors=True)
        report(f"deleted local store {path}")
    return deleted


def stale_stores(config: Config, generation: int) -> list[Path]:
    """Local store directories of other generations, of every instance on this machine (``store_path``)."""
    root = config.state_dir / config.app_id
    if not root.is_dir():
        return []
    names = [re.escape(p.name) for p in config.pipelines]
    pattern = re.compile(rf"({'|'.join(names)})(-g(\d+))?-\d+")
    out = []
    for instance in sorted(d for d in root.iterdir() if d.is_dir()):
        for store in sorted(instance.iterdir()):
            match = pattern.fullmatch(store.name)
            if match and int(match.group(3) or 0) != generation:
                out.append(store)
    return out


# -- the steps --------------------------------------------------------------------------


def _wait_for_empty_group(admin: AdminClient, group: str) -> None:
    """A process killed moments ago is still a member until its session times out: wait that long, then refuse."""
    deadline = time.monotonic() + GROUP_PATIENCE
    while True:
        try:
            require_empty_group(admin, group)
            return
        except OperationRefused:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def _still_direct(config: Config, old: Layout, counts: Mapping[str, int]) -> frozenset[str]:
    """Pipelines that may read their sources directly at the new count.

    Only a pipeline that did before, whose sources have the new count, and
    whose every source record was consumed: a record written before its topic
    gained partitions is not where a direct task would look for its key.
    """
    candidates = plan(config.pipelines, config.topics.partitions, counts, old.direct)
    direct = [p for p in config.pipelines if candidates[p.name].direct]
    if not direct:
        return frozenset()
    partitions = [TopicPartition(t, i) for p in direct for t in p.sources for i in range(counts.get(t, 0))]
    waiting = _unconsumed(config, partitions)
    return frozenset(p.name for p in direct if not any(where.topic in p.sources for where in waiting))


def _drain(old_config: Config, old: Layout, counts: dict[str, int], report: Callable[[str], None]) -> bool:
    """Process what the old repartition topics still hold; False when they held nothing."""
    plans = plan(old_config.pipelines, old_config.topics.partitions, counts, old.direct if old.committed else None)
    topics = [p.repartition_topic for p in old_config.pipelines if not plans[p.name].direct and p.repartition_topic in counts]
    waiting = _unconsumed(old_config, [TopicPartition(t, i) for t in topics for i in range(counts[t])])
    if not waiting:
        return False
    report(f"draining {len(waiting)} repartition partitions with records not yet processed (sources paused)")
    loop = StreamLoop(old_config, counts, direct=old.direct if old.committed else None, drain=True)
    loop.run()
    left = _unconsumed(old_config, waiting)
    if left:
        raise OperationRefused(f"repartition partitions not drained: {', '.join(f'{t.topic}-{t.partition}' for t in left)}")
    return True


def _fresh_topics(admin: AdminClient, new_config: Config, new: Layout, report: Callable[[str], None]) -> dict[str, int]:
    """The new generation's topics, empty: an interrupted attempt's are deleted first."""
    leftovers = delete_topics(admin, internal_topics(new_config))
    if leftovers:
        report(f"deleting what an interrupted attempt left: {', '.join(leftovers)}")
        wait_until_gone(admin, leftovers)
    return ensure_topics(admin, new_config, layout=new)


def _copy(
    config: Config, old_config: Config, new_config: Config, name: str, counts: Mapping[str, int], report: Callable[[str], None]
) -> Copied:
    source = next(p for p in old_config.pipelines if p.name == name).changelog_topic
    target = next(p for p in new_config.pipelines if p.name == name).changelog_topic
    copied = Copied(name)
    if source not in counts:
        report(f"{name}: no changelog {source}, nothing to copy")
        return copied
    old_n, new_n = counts[source], counts[target]
    failures: list[KafkaError] = []

    def failed(error: KafkaError | None, _message: Any) -> None:
        if error is not None:
            failures.append(error)

    producer = Producer({**bulk_producer_config(config, "rescale"), "delivery.report.only.error": True, "on_delivery": failed})
    consumer = Consumer(restore_consumer_config(config))
    metas: dict[int, PartitionMeta] = {}
    senders: list[set[int]] = [set() for _ in range(new_n)]
    try:
        consumer.assign([TopicPartition(source, p, OFFSET_BEGINNING) for p in range(old_n)])
        ends = {p: consumer.get_watermark_offsets(TopicPartition(source, p), timeout=30)[1] for p in range(old_n)}
        open_partitions = {p for p, end in ends.items() if end > 0}
        window, meta = WINDOW_PREFIX[0], META_PREFIX[0]
        produce, poll = producer.produce, producer.poll
        records = 0
        while open_partitions:
            for message in consumer.consume(10_000, 1.0):
                error = message.error()
                partition: int = message.partition()  # type: ignore[assignment]  # a record or an EOF has one
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        open_partitions.discard(partition)
                        continue
                    raise KafkaException(error)
                key = message.key()
                if not key:
                    continue
                records += 1
                if key[0] == window:
                    to = partition_for(key[1:], new_n)
                    senders[to].add(partition)
                    while True:
                        try:
                            produce(target, message.value(), key, to)
                            break
                        except BufferError:
                            poll(0.1)
                elif key[0] == meta:
                    _remember(metas.setdefault(partition, PartitionMeta()), key[1:], message.value())
                if (message.offset() or 0) >= ends[partition] - 1:
                    open_partitions.discard(partition)
            poll(0)
            if failures:
                raise KafkaException(failures[0])
        for to in range(new_n):
            merged = merged_meta(metas, senders[to])
            if merged.stream_time is not None:
                produce(target, encode_time(merged.stream_time), META_PREFIX + STREAM_TIME, to)
            if merged.watermarks:
                produce(target, orjson.dumps([[s, m] for s, m in merged.watermarks.items()]), META_PREFIX + WATERMARKS, to)
        if producer.flush(60) or failures:
            raise KafkaException(failures[0] if failures else KafkaError(KafkaError._MSG_TIMED_OUT, f"copying to {target}"))
    finally:
        consumer.close()
    copied.records = records
    copied.senders = {to: set(s) for to, s in enumerate(senders)}
    report(f"{name}: {records} changelog records of {source} ({old_n} partitions) copied to {target} ({new_n})")
    return copied


def _remember(meta: PartitionMeta, name: bytes, value: bytes | None) -> None:
    if name == STREAM_TIME:
        meta.stream_time = None if value is None else decode_time(value)
    elif name == WATERMARKS:
        meta.watermarks = {} if value is None else {int(s): int(m) for s, m in orjson.loads(value)}


def _unconsumed(config: Config, partitions: list[TopicPartition]) -> list[TopicPartition]:
    """The partitions holding a record after the group's committed offset (a committed record, under read_committed)."""
    if not partitions:
        return []
    props = {**restore_consumer_config(config), "group.id": config.app_id}
    consumer = Consumer(props)
    try:
        committed = checked(consumer.committed(partitions, timeout=30))
        start = [TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING) for tp in committed]
        consumer.assign(start)
        pending = {(tp.topic, tp.partition) for tp in start}
        found: set[tuple[str, int]] = set()
        deadline = time.monotonic() + 60
        while pending and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.5):
                where = (message.topic() or "", message.partition() or 0)
                error = message.error()
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(error)
                if where not in pending:
                    continue  # a record fetched before its partition was paused
                if error is None:
                    found.add(where)
                pending.discard(where)
                consumer.pause([TopicPartition(*where)])
        if pending:
            raise OperationRefused(f"could not read {len(pending)} partitions to their end in 60 s")
        return [tp for tp in partitions if (tp.topic, tp.partition) in found]
    finally:
        consumer.close()


def _counts(admin: AdminClient) -> dict[str, int]:
    metadata = admin.list_topics(timeout=30)
    return {name: len(t.partitions) for name, t in metadata.topics.items() if t.error is None}
