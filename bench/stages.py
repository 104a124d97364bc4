"""Per-event cost by stage, no broker: the source task, the direct task, the window task reading packs, decode, extract,
and the window stage, in µs per event; and closing, in µs per window emitted.

    python3 bench/stages.py                  # this checkout
    python3 bench/stages.py --repo OTHER     # another checkout, e.g. a worktree of an older commit

Prints the best of ``--runs`` timings per stage. ``--repo`` lets one run time
an older commit beside this one (the README's before/after table); it accepts
the flat ``service/`` layout of before the layered structure too.
"""

from __future__ import annotations

import argparse
import importlib
import random
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]

PIPELINE = """
[pipelines.s]
sources = ["web"]
key = "user_id"
time = "timestamp"
output = "out"
[pipelines.s.window]
type = "session"
gap = "60s"
grace = "5s"
[pipelines.s.aggregates]
types = { type = "count_by", field = "type" }
amount = { type = "sum", field = "details.amount" }
"""
TYPES = ["page_viewed"] * 6 + ["item_added_to_cart", "payment_processed"]
USERS = 5_000
#: Commits (close what is due, write the store) every this many events, as offline mode does.
COMMIT_EVERY = 5_000


def module(*names: str) -> ModuleType:
    """The first of ``names`` that imports: the layered module, or its flat predecessor."""
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError(names)


def events(count: int) -> list[bytes]:
    """``count`` JSON events of ``USERS`` users, each user's clock moving on by a few seconds, in time order."""
    rng = random.Random(1)
    clocks = [1_700_000_000_000 + rng.randrange(600_000) for _ in range(USERS)]
    timed = []
    for n in range(count):
        user = rng.randrange(USERS)
        clocks[user] += int(rng.expovariate(1 / 8000))
        event = {
            "event_id": f"e{n}",
            "user_id": f"user_{user}",
            "timestamp": clocks[user],
            "type": rng.choice(TYPES),
            "details": {"page": "/x", "amount": rng.randrange(500)},
        }
        timed.append((clocks[user], orjson.dumps(event)))
    timed.sort()
    return [raw for _, raw in timed]


def best(run: Callable[[], None], runs: int, count: int) -> float:
    """The fastest of ``runs`` timings, in µs per event."""
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        timings.append(time.perf_counter() - started)
    return min(timings) / count * 1e6


def run_window_stage(store_module: ModuleType, processor_module: ModuleType, pipeline: Any, keyed: list[Any], commit_every: int) -> None:
    """The window stage over ``keyed`` ((key, time), event, raw) in a fresh store: add each, and every
    ``commit_every`` events close what is due and write the store, as offline mode does."""
    with tempfile.TemporaryDirectory() as directory:
        store = store_module.WindowStore(Path(directory) / "s", pipeline.window)
        out: list[object] = []
        processor = processor_module.WindowProcessor(pipeline, store, out)
        process = processor.process
        for n, ((key, at), event, raw) in enumerate(keyed, 1):
            process(key, at, event, raw)
            if n % commit_every == 0:
                processor.close_due()
                store.apply(store.prepare(), None)
                out.clear()
        store.close()


def closing(store_module: ModuleType, processor_module: ModuleType, pipeline: Any, keyed: list[Any], runs: int) -> float:
    """Every window ``keyed`` leaves open, popped and rendered as its output record (``close_all``): the
    fastest of ``runs``, in µs per window. Adding the events first is not timed."""
    timings = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as directory:
            store = store_module.WindowStore(Path(directory) / "s", pipeline.window)
            processor = processor_module.WindowProcessor(pipeline, store, [])
            for (key, at), event, raw in keyed:
                processor.process(key, at, event, raw)
            started = time.perf_counter()
            windows = processor.close_all()
            timings.append((time.perf_counter() - started) / windows)
            store.close()
    return min(timings) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose service/ is timed")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(args.repo.resolve()))
    config_module = module("service.config")
    pipeline_module = module("service.core.pipeline", "service.pipeline")
    processor_module = module("service.core.processor", "service.processor")
    store_module = module("service.state.store", "service.store")

    problems: list[str] = []
    config = config_module.parse_config(tomllib.loads(PIPELINE), problems)
    if problems:
        raise SystemExit("\n".join(problems))
    pipeline = pipeline_module.Pipeline(config.pipelines[0])
    raws = events(args.events)
    decoded = [orjson.loads(raw) for raw in raws]
    extract = pipeline.extract
    keyed = [(extract(event, None), event, raw) for event, raw in zip(decoded, raws, strict=True)]

    def decode() -> None:
        loads = orjson.loads
        for raw in raws:
            loads(raw)

    def extract_all() -> None:
        for event in decoded:
            extract(event, None)

    def window_stage() -> None:
        run_window_stage(store_module, processor_module, pipeline, keyed, COMMIT_EVERY)

    def nowhere_producer() -> Any:
        """A real librdkafka producer that connects nowhere: ``produce`` queues
        the record and returns, as it does when the broker keeps up."""
        from confluent_kafka import Producer

        settings = {"bootstrap.servers": "127.0.0.1:1", "queue.buffering.max.messages": 2_000_000, "log_level": 0}
        return module("service.runtime.producer").TransactionalProducer(lambda: Producer(settings), exactly_once=False)

    def source_task() -> None:
        """The repartition path's first hop: a source task's records framed and handed to a producer that connects nowhere."""
        source_module = module("service.core.source")
        task_module = module("service.runtime.tasks")
        collector_module = module("service.runtime.collector")
        ids = module("service.runtime.ids")
        producer = nowhere_producer()
        where = ids.Partition("web", 0)
        topic = pipeline.config.repartition_topic
        task = task_module.SourceTask(
            where, source_module.SourceStage([pipeline]), {topic: 6}, collector_module.RecordCollector(producer), {}
        )
        for start in range(0, len(messages), COMMIT_EVERY):
            task.add_records(where, messages[start : start + COMMIT_EVERY])
        producer.producer.purge()

    def direct_task() -> None:
        """The direct path's task, all of it but the consumer: decode, extract, check the key's partition,
        window, commit (close what is due, write the changelog records to a producer that connects nowhere,
        write the store)."""
        task_module = module("service.runtime.tasks")
        collector_module = module("service.runtime.collector")
        ids = module("service.runtime.ids")
        state_module = module("service.runtime.state_manager")
        producer = nowhere_producer()
        with tempfile.TemporaryDirectory() as directory:
            direct_config = config_module.parse_config(
                tomllib.loads(f'[app]\nstate_dir = "{directory}"\n' + PIPELINE.replace('key = "user_id"', 'key = "@key"')), problems
            )
            direct = pipeline_module.Pipeline(direct_config.pipelines[0])
            state = state_module.StateManager(direct_config, direct, 0)
            # One partition: every key belongs in it, as the task checks.
            task = task_module.DirectTask(state, collector_module.RecordCollector(producer), 1)
            task.start()
            where = ids.Partition("web", 0)
            for start in range(0, len(keyed_messages), COMMIT_EVERY):
                task.add_records(where, keyed_messages[start : start + COMMIT_EVERY])
                task.prepare_commit(0.0)
                task.post_commit()
            state.close()
        producer.producer.purge()

    try:
        from confluent_kafka import Message

        messages = [Message(topic="web", partition=0, offset=n, value=raw, timestamp=(1, 0)) for n, raw in enumerate(raws)]
        source_cost = f"{best(source_task, args.runs, args.events):6.2f} µs/event"
    except (ImportError, AttributeError, TypeError) as exc:  # an older checkout, or an older confluent-kafka
        source_cost = f"   n/a ({exc})"

    try:
        keyed_messages = [
            Message(topic="web", partition=0, offset=n, key=key, value=raw, timestamp=(1, 0))
            for n, ((key, _), _, raw) in enumerate(keyed)
        ]
        direct_cost = f"{best(direct_task, args.runs, args.events):6.2f} µs/event"
    except (ImportError, AttributeError, TypeError, NameError) as exc:  # an older checkout
        direct_cost = f"   n/a ({exc})"

    def window_task() -> None:
        """The repartition path's second hop: a window task's packs read, windowed and committed (close what is due,
        the changelog records to a producer that connects nowhere, write the store)."""
        task_module = module("service.runtime.tasks")
        collector_module = module("service.runtime.collector")
        state_module = module("service.runtime.state_manager")
        producer = nowhere_producer()
        with tempfile.TemporaryDirectory() as directory:
            packed_config = config_module.parse_config(tomllib.loads(f'[app]\nstate_dir = "{directory}"\n' + PIPELINE), problems)
            packed = pipeline_module.Pipeline(packed_config.pipelines[0])
            state = state_module.StateManager(packed_config, packed, 0)
            task = task_module.WindowTask(state, [repartition], collector_module.RecordCollector(producer), [0])
            task.start()
            for commit in packs:
                task.add_records(repartition, commit)
                task.prepare_commit(0.0)
                task.post_commit()
            state.close()
        producer.producer.purge()

    try:
        frames = module("service.runtime.frames")
        repartition = module("service.runtime.ids").Partition(pipeline.config.repartition_topic, 0)
        packs: list[list[Any]] = []
        packed_values: list[bytes] = []
        # One source partition (id 0) feeding one repartition partition; a pack per commit, as a poll of a source gives.
        packer = frames.Packer(repartition.topic, 1, 0, lambda topic, key, value, partition: packed_values.append(value))
        mark = None
        for start in range(0, len(keyed), COMMIT_EVERY):
            for (key, at), _, raw in keyed[start : start + COMMIT_EVERY]:
                mark = at if mark is None or at > mark else mark
                packer.add(key, at, mark, raw)
            packer.flush()
            packs.append(
                [Message(topic=repartition.topic, partition=0, offset=n, value=v, timestamp=(1, 0)) for n, v in enumerate(packed_values)]
            )
            packed_values.clear()
        window_task_cost = f"{best(window_task, args.runs, args.events):6.2f} µs/event"
    except (ImportError, AttributeError, TypeError, NameError) as exc:  # an older checkout
        window_task_cost = f"   n/a ({exc})"

    def grouping() -> None:
        """The loop's first step on a consumed batch: its records by partition (five runs of 1,000 per batch)."""
        group = module("service.runtime.task_manager")._group
        for start in range(0, len(batched), COMMIT_EVERY):
            group(batched[start : start + COMMIT_EVERY])

    try:
        batched = [
            Message(topic="web", partition=(n // 1000) % 6, offset=n, value=raw, timestamp=(1, 0)) for n, raw in enumerate(raws)
        ]
        grouping_cost = f"{best(grouping, args.runs, args.events):6.2f} µs/record"
    except (ImportError, AttributeError, TypeError, NameError) as exc:
        grouping_cost = f"   n/a ({exc})"

    print(f"{args.events:,} events of {USERS:,} users, best of {args.runs} runs, {args.repo}")
    print(f"batch grouped by partition:                       {grouping_cost}")
    print(f"source task (decode, extract, frame, produce):    {source_cost}")
    print(f"direct task (decode, extract, window, commit):    {direct_cost}")
    print(f"window task (packs: read, window, commit):        {window_task_cost}")
    print(f"decode (orjson.loads):                            {best(decode, args.runs, args.events):6.2f} µs/event")
    print(f"extract (key, time, checks):                      {best(extract_all, args.runs, args.events):6.2f} µs/event")
    print(f"window stage (add, close due, commit to RocksDB): {best(window_stage, args.runs, args.events):6.2f} µs/event")
    try:
        closing_cost = f"{closing(store_module, processor_module, pipeline, keyed, args.runs):6.2f} µs/window"
    except (AttributeError, TypeError) as exc:  # an older checkout
        closing_cost = f"   n/a ({exc})"
    print(f"closing (pop, render, output record):             {closing_cost}")


if __name__ == "__main__":
    main()
