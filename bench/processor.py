"""Per-event cost of ``WindowProcessor.process``: the window stage's hot loop, no Kafka.

    python3 bench/processor.py --events 100000 --variant plain
    python3 bench/processor.py --events 100000 --variant rules

``plain`` is a session pipeline with seed 001's aggregates and no rules;
``rules`` adds a has_checkout flag, a sequence rule and two absence rules
(seed 000 and 004); ``pairing`` is seed 003's two-topic pairing. Events are
decoded before timing starts, as the runtime hands the processor decoded
events. Commits (close_due + store write) happen every 5,000 events, as
offline mode does, and are timed too. Prints the best of ``--runs`` runs in
microseconds per event.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from service.config import ConfigError, parse_config  # noqa: E402
from service.core.pipeline import Pipeline  # noqa: E402
from service.core.processor import WindowProcessor  # noqa: E402
from service.state.store import WindowStore  # noqa: E402

PLAIN = """
[pipelines.s]
sources = ["web", "mobile"]
key = "user_id"
time = "timestamp"
output = "out"
[pipelines.s.window]
type = "session"
gap = "30m"
grace = "2m"
[pipelines.s.aggregates]
event_types = { type = "count_by", field = "type" }
pages = { type = "count_distinct", field = "details.page" }
first_event = { type = "first", field = "type" }
last_event = { type = "last", field = "type" }
"""

RULES = PLAIN + """
has_checkout = { type = "any", field = "type", equals = "payment_processed" }
[pipelines.s.rules.purchase_completed]
type = "sequence"
first = { field = "type", equals = "item_added_to_cart" }
then = { field = "type", equals = "payment_processed" }
within = "5m"
topic = "purchases"
[pipelines.s.rules.abandoned_cart]
type = "absence"
first = { field = "type", equals = "item_added_to_cart" }
then = { field = "type", equals = "payment_processed" }
topic = "coupons"
[pipelines.s.rules.slow_checkout]
type = "absence"
first = { field = "type", equals = "item_added_to_cart" }
then = { field = "type", equals = "payment_processed" }
within = "10m"
topic = "nudges"
"""

PAIRING = """
[pipelines.s]
sources = ["web", "mobile"]
key = "user_id"
time = "timestamp"
output = "out"
[pipelines.s.window]
type = "session"
gap = "1m"
grace = "2m"
[pipelines.s.pairing]
"""

VARIANTS = {"plain": PLAIN, "rules": RULES, "pairing": PAIRING}
TYPES = ["page_viewed"] * 6 + ["item_added_to_cart", "payment_processed"]
PAGES = ["/home", "/products", "/cart", "/checkout", "/search"]


def generate(n: int, users: int, seed: int = 1) -> list[tuple[int, dict]]:
    """(source index, event) in time order: a few seconds between a user's events, sometimes an hour."""
    rng = random.Random(seed)
    clock = {f"user_{u}": 1_678_886_400_000 + rng.randrange(0, 3_600_000) for u in range(users)}
    names = list(clock)
    events = []
    for i in range(n):
        user = rng.choice(names)
        clock[user] += rng.choice([2_000, 5_000, 20_000, 3_600_000 if rng.random() < 0.05 else 10_000])
        event = {
            "event_id": f"evt_{i}",
            "timestamp": clock[user],
            "user_id": user,
            "type": rng.choice(TYPES),
            "details": {"page": rng.choice(PAGES)},
        }
        events.append((rng.randrange(2), event))
    events.sort(key=lambda item: item[1]["timestamp"])
    return events


def run_once(text: str, events: list[tuple[int, dict]]) -> float:
    problems: list[str] = []
    config = parse_config(tomllib.loads(text), problems)
    if problems:
        raise ConfigError(problems)
    pipeline = Pipeline(config.pipelines[0])
    directory = Path(tempfile.mkdtemp(prefix="bench-processor-"))
    store = WindowStore(directory / "store", pipeline.window)
    out: list = []
    processor = WindowProcessor(pipeline, store, out)
    prepared = []
    for source, event in events:
        key, time_ms = pipeline.extract(event, None)
        prepared.append((key, time_ms, event, orjson.dumps(event), source))
    process = processor.process
    try:
        started = time.perf_counter()
        for i, (key, time_ms, event, raw, source) in enumerate(prepared):
            if SOURCE_ARG:
                process(key, time_ms, event, raw, source)
            else:
                process(key, time_ms, event, raw)
            if i % 5_000 == 4_999:
                processor.close_due()
                store.apply(store.prepare(), checkpoint=None)
                out.clear()
        elapsed = time.perf_counter() - started
    finally:
        store.close()
        shutil.rmtree(directory)
    return elapsed / len(prepared) * 1e6


def _takes_source() -> bool:
    import inspect

    # ``process_event`` is the method since ``process`` became an attribute (``service.core.inline.session_process``).
    method = getattr(WindowProcessor, "process_event", None) or WindowProcessor.process
    return "source" in inspect.signature(method).parameters


SOURCE_ARG = _takes_source()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="plain")
    args = parser.parse_args()
    events = generate(args.events, args.users)
    results = [run_once(VARIANTS[args.variant], events) for _ in range(args.runs)]
    print(
        f"{args.variant}: {args.events} events, best {min(results):.3f} us/event, "
        f"median {sorted(results)[len(results) // 2]:.3f} us/event"
    )


if __name__ == "__main__":
    main()
