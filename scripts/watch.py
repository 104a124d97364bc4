"""Print what the service writes, as a read_committed consumer would see it.

    .venv/bin/python scripts/watch.py                      # outputs, late and dead-letter topics of config/sessionizer.toml
    .venv/bin/python scripts/watch.py --topic xp-session-events
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

from confluent_kafka import Consumer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.config import load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="config/sessionizer.toml")
    parser.add_argument("--topic", action="append", help="a topic to watch (repeatable)")
    args = parser.parse_args()
    config = load_config(args.config)
    topics = args.topic or sorted(
        {t for p in config.pipelines for t in (p.output.topic, p.late_topic, p.dead_letter_topic, *p.derived_topics())}
    )
    consumer = Consumer(
        {
            **config.kafka,
            "group.id": f"watch-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe(topics)
    print(f"watching {', '.join(topics)} (Ctrl-C to stop)", file=sys.stderr)
    try:
        while True:
            message = consumer.poll(1.0)
            if message is None or message.error() is not None:
                continue
            key = message.key().decode(errors="replace") if message.key() else None
            reason = dict(message.headers() or []).get("sessionizer.reason") or dict(message.headers() or []).get(
                "sessionizer.error"
            )
            suffix = f"  ({reason.decode(errors='replace')})" if reason else ""
            print(f"{message.topic()} {key}: {message.value().decode(errors='replace')}{suffix}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


if __name__ == "__main__":
    main()
