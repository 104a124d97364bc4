"""The job of sessionizer's bench pipeline, in Quix Streams (``pip install quixstreams``, 3.x).

    python bench/peers/quix_job.py --bootstrap HOST:PORT --app-id ID --source TOPIC[,TOPIC...] --output TOPIC
        [--guarantee exactly-once|at-least-once] [--commit-interval 0.1] [--closing partition|key]
        [--keys str|json] [--group-by user_id|record-key]

JSON events from the source topics (several are joined with ``concat``), re-keyed
by ``user_id`` with ``group_by``, or with ``--group-by record-key`` grouped by their
record key as it is (no repartition topic: the sources must be co-partitioned and
keyed by user id; Quix then aligns partition i of every topic by timestamp) (one
``repartition__…`` topic, whose keys are the user id's bytes with ``--keys str``,
as Kafka Streams' and sessionizer's are, or Quix's default JSON, quotes included), event time from ``timestamp`` (epoch ms), session
windows with a 60 s gap and 5 s grace, aggregating the event count, the count
per ``type`` and the sum of ``details.amount``. ``final()`` emits one JSON
record per session when Quix closes it: once the partition's watermark (the
largest event time seen, with ``--closing partition``) passes
last event + 2 x gap + grace. Runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from typing import Any

from quixstreams import Application
from quixstreams.dataframe.windows.aggregations import Aggregator, Count

GAP_MS = 60_000
GRACE_MS = 5_000


class CountBy(Aggregator):
    """Events per value of a column: {"page_viewed": 3, …}."""

    def initialize(self) -> dict[str, int]:
        return {}

    def agg(self, old: dict[str, int], new: Any, timestamp: int) -> dict[str, int]:
        value = new.get(self.column)
        # Quix serializes the returned state at once, so updating it in place is safe.
        old[value] = old.get(value, 0) + 1
        return old

    def result(self, value: dict[str, int]) -> dict[str, int]:
        return value

    def merge(self, a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
        merged = dict(a)
        for value, n in b.items():
            merged[value] = merged.get(value, 0) + n
        return merged


class SumAmount(Aggregator):
    """Sum of ``details.amount``: Quix's own ``Sum`` reads top-level columns only."""

    def initialize(self) -> int:
        return 0

    def agg(self, old: int, new: Any, timestamp: int) -> int:
        return old + (new.get("details") or {}).get("amount", 0)

    def result(self, value: int) -> int:
        return value

    def merge(self, a: int, b: int) -> int:
        return a + b


def event_time(value: Any, headers: Any, timestamp: float, timestamp_type: Any) -> int:
    return value["timestamp"]


def render(window: dict[str, Any], key: Any, timestamp: int, headers: Any) -> dict[str, Any]:
    """The shape of sessionizer's record value (Quix's session ``end`` is exclusive: last event + 1)."""
    start, end = window["start"], window["end"] - 1
    return {
        "event": "session",
        "user_id": key,
        "value": {
            "session_start_ms": start,
            "session_end_ms": end,
            "event_count": window["count"],
            "duration_ms": end - start,
            "types": window["types"],
            "amount": window["amount"],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--app-id", required=True, help="consumer group")
    parser.add_argument("--source", required=True, help="a topic, or several separated by commas")
    parser.add_argument("--output", required=True)
    parser.add_argument("--guarantee", choices=["exactly-once", "at-least-once"], default="exactly-once")
    parser.add_argument("--commit-interval", type=float, default=0.1, help="seconds (Quix's default is 5)")
    parser.add_argument("--closing", choices=["partition", "key"], default="partition")
    parser.add_argument("--keys", choices=["str", "json"], default="str", help="serializer of the repartition keys")
    parser.add_argument("--group-by", choices=["user_id", "record-key"], default="user_id",
                        help="re-key by user_id through a repartition topic, or keep the sources' record keys")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="quix-job-") as state_dir:
        app = Application(
            broker_address=args.bootstrap,
            consumer_group=args.app_id,
            auto_offset_reset="earliest",
            processing_guarantee=args.guarantee,
            commit_interval=args.commit_interval,
            state_dir=state_dir,
            loglevel=logging.WARNING,
        )
        # The record keys matter only when they are the grouping key (the user id's bytes).
        keys = {"key_deserializer": "str"} if args.group_by == "record-key" else {}
        sources = [
            app.topic(name, value_deserializer="json", timestamp_extractor=event_time, **keys)
            for name in args.source.split(",")
        ]
        output = app.topic(args.output, value_serializer="json")
        sdf = app.dataframe(sources[0])
        for other in sources[1:]:
            sdf = sdf.concat(app.dataframe(other))
        if args.group_by == "user_id":
            sdf = sdf.group_by("user_id", key_serializer=args.keys, key_deserializer=args.keys)
        sdf = (
            sdf.session_window(inactivity_gap_ms=GAP_MS, grace_ms=GRACE_MS)
            .agg(count=Count(), types=CountBy("type"), amount=SumAmount())
            .final(closing_strategy=args.closing)
        )
        sdf.apply(render, metadata=True).to_topic(output)
        app.run()


if __name__ == "__main__":
    main()
