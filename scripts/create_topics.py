#!/usr/bin/env python3
"""Create a config's source topics, which the service itself never creates.

Source topics belong to their producers, so ``sessionizer run`` stops when one
is missing (docs/configuration.md, ``[topics]``). On a local broker and in the
compose demo nobody else makes them: this does, with the config's
``topics.partitions`` and ``topics.replication_factor`` and the
``SESSIONIZER__…`` environment applied, as the service would read it. Topics
that exist are left as they are.

    python scripts/create_topics.py config/sessionizer.toml
    SESSIONIZER__KAFKA__BOOTSTRAP_SERVERS=kafka:9092 python scripts/create_topics.py /app/config/sessionizer.toml
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.config import load_config
from service.errors import SessionizerError
from service.runtime.clients import admin_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--wait", type=float, default=60, help="seconds to wait for the broker to answer")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except SessionizerError as exc:
        print(f"create_topics: {exc}", file=sys.stderr)
        return exc.exit_code
    admin = AdminClient(admin_config(config))
    deadline = time.monotonic() + args.wait
    while True:
        try:
            existing = set(admin.list_topics(timeout=10).topics)
            break
        except KafkaException as exc:
            if time.monotonic() > deadline:
                print(f"create_topics: no broker at {config.bootstrap_servers}: {exc.args[0].str()}", file=sys.stderr)
                return 1
            time.sleep(2)
    topics = config.topics
    missing = [
        NewTopic(name, num_partitions=topics.partitions, replication_factor=topics.replication_factor)
        for name in config.source_topics()
        if name not in existing
    ]
    for name, future in admin.create_topics(missing).items() if missing else ():
        try:
            future.result(30)
            print(f"create_topics: created {name} ({topics.partitions} partitions)", file=sys.stderr)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                print(f"create_topics: {name}: {exc.args[0].str()}", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
