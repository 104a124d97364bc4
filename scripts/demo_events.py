#!/usr/bin/env python3
"""Demo traffic for config/sessionizer.toml's source topics.

Three scenarios, in this order with ``--scenario all`` (the default):

- ``allofr``: seed 004's store visit by AllOfR, in the order the article
  receives it, the late 3:25 event last (it merges her last two sessions).
  Times are moved so her last event is now; with a 10-minute gap and a grace
  of at least 12 minutes (docker-compose.yml sets 15m) the merged session
  stays open for ``GET /sessions/AllOfR``.
- ``seed000``: seed 000's five events of user_123 across the web, mobile and
  backend topics, moved to now (``--keep-times`` sends them as written, 2023).
- ``random``: simulated users visiting the shop: a visit is a burst of events
  a few seconds apart, then the user is away for longer than the session gap,
  so sessions close and are emitted. Runs until stopped unless ``--duration``.

Only the ``confluent-kafka`` and ``orjson`` packages are needed, so it runs in
the service's image and on a laptop alike::

    python scripts/demo_events.py                                  # 127.0.0.1:9092
    python scripts/demo_events.py --bootstrap kafka:9092 --scenario random --users 50

``--format avro`` sends the same events as Avro in Confluent's wire format,
with ``DEMO_EVENT_SCHEMA`` registered under ``<topic>-value`` in the registry
``--schema-registry`` names (this needs the ``registry`` extra, as the image
has). The service then reads them with, for each topic,
``[sources."web_events"] format = "avro"`` and ``[schema_registry] url``
(docs/formats.md)::

    python scripts/demo_events.py --format avro --schema-registry http://localhost:8081/apis/ccompat/v7
"""

from __future__ import annotations

import argparse
import heapq
import random
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

WEB, MOBILE, BACKEND = "web_events", "mobile_events", "backend_events"
MINUTE = 60_000

# Seed 000, as written (epoch seconds, 2023-03-15).
SEED_000 = [
    (WEB, {"event_id": "evt_abc", "timestamp": 1678886400, "user_id": "user_123", "type": "page_viewed", "details": {"page": "/home"}}),
    (WEB, {"event_id": "evt_def", "timestamp": 1678886401, "user_id": "user_123", "type": "page_viewed", "details": {"page": "/products"}}),
    (MOBILE, {"event_id": "evt_ghi", "timestamp": 1678886405, "user_id": "user_123", "type": "item_added_to_cart",
              "details": {"item_id": "prod_xyz"}}),
    (WEB, {"event_id": "evt_jkl", "timestamp": 1678886410, "user_id": "user_123", "type": "page_viewed", "details": {"page": "/cart"}}),
    (BACKEND, {"event_id": "evt_mno", "timestamp": 1678886412, "user_id": "user_123", "type": "payment_processed",
               "details": {"order_id": "ord_789"}}),
]

#: Every demo event in Avro: fields an event lacks are null (their defaults).
DEMO_EVENT_SCHEMA = {
    "type": "record",
    "name": "DemoEvent",
    "namespace": "sessionizer.demo",
    "fields": [
        {"name": "event_id", "type": ["null", "string"], "default": None},
        {"name": "user_id", "type": "string"},
        {"name": "timestamp", "type": "long"},
        {"name": "type", "type": "string"},
        {
            "name": "details",
            "type": [
                "null",
                {
                    "type": "record",
                    "name": "Details",
                    "fields": [
                        {"name": n, "type": ["null", "string"], "default": None} for n in ("page", "item_id", "order_id")
                    ],
                },
            ],
            "default": None,
        },
    ],
}

# Seed 004: AllOfR's events on 5 July 2017 (PM), in the order they arrive.
ALLOFR = [
    ("put-item-in-cart", "14:30"),
    ("checkout", "14:34"),
    ("put-item-in-cart", "15:03"),
    ("remove-item-from-cart", "15:07"),
    ("preview-item", "15:16"),
    ("put-item-in-cart", "15:29"),
    ("checkout", "15:37"),
    ("put-item-in-cart", "15:25"),  # late: merges 15:03-15:16 and 15:29-15:37
]


def now_ms() -> int:
    return int(time.time() * 1000)


def allofr_events(end_ms: int) -> list[tuple[str, dict[str, Any]]]:
    """The story moved so that its latest event (15:37) happens at ``end_ms``."""
    minutes = [int(t[:2]) * 60 + int(t[3:]) for _, t in ALLOFR]
    last = max(minutes)
    return [
        (WEB, {"event_id": f"allofr-{i}", "timestamp": end_ms - (last - m) * MINUTE, "user_id": "AllOfR", "type": kind})
        for i, ((kind, _), m) in enumerate(zip(ALLOFR, minutes))
    ]


def seed000_events(keep_times: bool, start_ms: int) -> list[tuple[str, dict[str, Any]]]:
    if keep_times:
        return [(topic, dict(event)) for topic, event in SEED_000]
    first = SEED_000[0][1]["timestamp"]
    return [
        (topic, {**event, "timestamp": start_ms + (event["timestamp"] - first) * 1000}) for topic, event in SEED_000
    ]


@dataclass(order=True)
class Visitor:
    """A simulated user: the time of their next event, and how many their visit still has."""

    next_ms: int
    user_id: str = field(compare=False)
    platform: str = field(compare=False)
    left: int = field(compare=False, default=0)
    cart: int = field(compare=False, default=0)


def random_events(
    rng: random.Random, users: int, away_min_ms: int, away_max_ms: int, clock=now_ms
) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """Endless (due time, topic, event): visits of 3-15 events, 1-20 s apart, then time away."""
    start = clock()
    heap = [
        Visitor(start + rng.randrange(0, 30_000), f"user_{n:04d}", rng.choice((WEB, MOBILE))) for n in range(users)
    ]
    heapq.heapify(heap)
    while True:
        visitor = heapq.heappop(heap)
        if visitor.left == 0:
            visitor.left = rng.randrange(3, 16)
            visitor.cart = 0
        topic, event = _visit_event(rng, visitor)
        yield visitor.next_ms, topic, event
        visitor.left -= 1
        if visitor.left:
            visitor.next_ms += rng.randrange(1_000, 20_000)
        else:
            visitor.next_ms += rng.randrange(away_min_ms, away_max_ms)
        heapq.heappush(heap, visitor)


def _visit_event(rng: random.Random, visitor: Visitor) -> tuple[str, dict[str, Any]]:
    event: dict[str, Any] = {"event_id": uuid.UUID(int=rng.getrandbits(128)).hex[:12], "user_id": visitor.user_id}
    roll = rng.random()
    if visitor.left == 1 and visitor.cart and roll < 0.5:
        event.update(type="payment_processed", details={"order_id": f"ord_{rng.randrange(10**6)}"})
        topic = BACKEND
    elif roll < 0.25:
        visitor.cart += 1
        event.update(type="item_added_to_cart", details={"item_id": f"prod_{rng.randrange(100)}"})
        topic = visitor.platform
    elif roll < 0.3 and visitor.cart:
        visitor.cart -= 1
        event.update(type="item_removed_from_cart", details={"item_id": f"prod_{rng.randrange(100)}"})
        topic = visitor.platform
    else:
        page = rng.choice(["/home", "/products", "/products/towers", "/cart", "/account"])
        event.update(type="page_viewed", details={"page": page})
        topic = visitor.platform
    return topic, event


class AvroFramer:
    """Events as Avro in Confluent's wire format: ``DEMO_EVENT_SCHEMA`` registered once per topic (``<topic>-value``)."""

    def __init__(self, registry_url: str) -> None:
        import json

        import fastavro
        from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

        self._client = SchemaRegistryClient({"url": registry_url, "timeout": 10})
        self._schema = Schema(json.dumps(DEMO_EVENT_SCHEMA), "AVRO")
        self._parsed = fastavro.parse_schema(DEMO_EVENT_SCHEMA)
        self._write = fastavro.schemaless_writer
        self._headers: dict[str, bytes] = {}

    def __call__(self, topic: str, event: dict[str, Any]) -> bytes:
        import io

        prefix = self._headers.get(topic)
        if prefix is None:
            schema_id = self._client.register_schema(f"{topic}-value", self._schema)
            prefix = self._headers[topic] = b"\x00" + schema_id.to_bytes(4, "big")
        out = io.BytesIO()
        out.write(prefix)
        self._write(out, self._parsed, event)
        return out.getvalue()


def json_framer(topic: str, event: dict[str, Any]) -> bytes:
    return orjson.dumps(event)


class Sender:
    """Produces events (JSON, or Avro with ``frame``) keyed by user id, partitioned as a Java producer would."""

    def __init__(self, bootstrap: str, partitions: int, frame=json_framer) -> None:
        self.frame = frame
        # Idempotent: a retried batch cannot land after a later one and make its events late.
        self.producer = Producer(
            {"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 20, "enable.idempotence": True}
        )
        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        self.partitions = partitions
        self.sent = 0

    def ensure_topics(self, topics: list[str], timeout: float = 60) -> None:
        """Create the source topics if nothing has yet (scripts/run.sh and the compose file do; the service never does)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                existing = set(self.admin.list_topics(timeout=10).topics)
                break
            except KafkaException as exc:
                if time.monotonic() > deadline:
                    raise
                print(f"demo: waiting for the broker ({exc.args[0].str()})", file=sys.stderr)
                time.sleep(2)
        missing = [NewTopic(t, num_partitions=self.partitions, replication_factor=1) for t in topics if t not in existing]
        for topic, future in self.admin.create_topics(missing).items() if missing else ():
            try:
                future.result(30)
                print(f"demo: created {topic}", file=sys.stderr)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise

    def send(self, topic: str, event: dict[str, Any]) -> None:
        while True:
            try:
                self.producer.produce(topic, self.frame(topic, event), event["user_id"].encode())
                break
            except BufferError:
                self.producer.poll(0.1)
        self.producer.poll(0)
        self.sent += 1

    def flush(self) -> None:
        if self.producer.flush(30):
            raise SystemExit("demo: some events could not be delivered")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--scenario", choices=["all", "allofr", "seed000", "random"], default="all")
    parser.add_argument("--users", type=int, default=20, help="simulated users (random scenario)")
    parser.add_argument(
        "--away-minutes",
        type=float,
        nargs=2,
        default=(13, 40),
        metavar=("MIN", "MAX"),
        help="time a user is away between visits; more than gap + grace closes their session",
    )
    parser.add_argument("--duration", type=float, default=0, help="seconds of random traffic (0: until stopped)")
    parser.add_argument("--partitions", type=int, default=6, help="partitions of source topics it creates")
    parser.add_argument("--keep-times", action="store_true", help="send seed 000 with its 2023 timestamps")
    parser.add_argument("--seed", type=int, default=None, help="random seed, for repeatable traffic")
    parser.add_argument("--format", choices=["json", "avro"], default="json", help="how events are written (avro: see above)")
    parser.add_argument("--schema-registry", default="http://127.0.0.1:8081", help="registry URL for --format avro")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sender = Sender(args.bootstrap, args.partitions, AvroFramer(args.schema_registry) if args.format == "avro" else json_framer)
    sender.ensure_topics([WEB, MOBILE, BACKEND])
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))

    if args.scenario in ("all", "allofr"):
        for topic, event in allofr_events(now_ms()):
            sender.send(topic, event)
        sender.flush()
        print("demo: AllOfR's visit sent; try: curl http://localhost:9108/sessions/AllOfR", file=sys.stderr)
    if args.scenario in ("all", "seed000"):
        for topic, event in seed000_events(args.keep_times, now_ms()):
            sender.send(topic, event)
        sender.flush()
        print("demo: user_123's events sent; try: curl http://localhost:9108/sessions/user_123", file=sys.stderr)
    if args.scenario in ("all", "random"):
        rng = random.Random(args.seed)
        away = (int(args.away_minutes[0] * MINUTE), int(args.away_minutes[1] * MINUTE))
        until = time.monotonic() + args.duration if args.duration else None
        print(f"demo: {args.users} users visiting; Ctrl-C to stop", file=sys.stderr)
        for due, topic, event in random_events(rng, args.users, *away):
            while not stopping and (wait := (due - now_ms()) / 1000) > 0:
                time.sleep(min(wait, 0.5))
            if stopping or (until is not None and time.monotonic() > until):
                break
            event["timestamp"] = now_ms()
            sender.send(topic, event)
    sender.flush()
    print(f"demo: {sender.sent} events sent", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
