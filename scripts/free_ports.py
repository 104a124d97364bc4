#!/usr/bin/env python3
"""Print base ports of runs of free ports on 127.0.0.1, one per COUNT: what scripts/test.sh starts its servers on.

A Kafka broker listens on its port, the next (KRaft controller) and the one
after (SASL); the schema registry on its port and the next (management). Two
test runs on one machine must not share any of them, so each run picks bases
whose whole runs are free now, at random in a range below the kernel's
ephemeral ports (where outgoing connections would take them). The runs never
overlap each other, nor the ports given with ``--avoid`` (ones the caller set).

    python scripts/free_ports.py 3 2              # e.g. "23817 27140"
    python scripts/free_ports.py 2 --avoid 19092  # a run clear of 19092

A port is free when it can be bound now; another process may still take it
before the server starts, which the random pick makes unlikely.
"""

from __future__ import annotations

import argparse
import random
import socket
import sys
from collections.abc import Iterable, Sequence

#: Where bases are drawn from: above the well-known ranges, below Linux's ephemeral ports (32768-60999).
LOW, HIGH = 20000, 32000
#: Random draws before giving up (a machine with that few free ports has other troubles).
ATTEMPTS = 500


def bindable(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``port`` now (without SO_REUSEADDR: a port in TIME_WAIT counts as taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_run(count: int, avoid: Iterable[int] = (), rng: random.Random | None = None) -> int:
    """A base port ``p`` such that ``p`` .. ``p + count - 1`` are all bindable and none is in ``avoid``."""
    rng = rng or random.Random()
    avoided = set(avoid)
    for _ in range(ATTEMPTS):
        base = rng.randrange(LOW, HIGH - count + 1)
        run = range(base, base + count)
        if avoided.isdisjoint(run) and all(bindable(port) for port in run):
            return base
    raise RuntimeError(f"no {count} consecutive free ports found between {LOW} and {HIGH}")


def free_runs(counts: Sequence[int], avoid: Iterable[int] = ()) -> list[int]:
    """One base per count, the runs disjoint from each other and from ``avoid``."""
    taken = set(avoid)
    bases = []
    for count in counts:
        base = free_run(count, taken)
        taken.update(range(base, base + count))
        bases.append(base)
    return bases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("counts", nargs="+", type=int, metavar="COUNT", help="how many consecutive ports a run needs")
    parser.add_argument("--avoid", nargs="*", type=int, default=[], metavar="PORT", help="ports no run may include")
    args = parser.parse_args(argv)
    if any(count < 1 for count in args.counts):
        parser.error("each COUNT must be at least 1")
    try:
        print(" ".join(str(base) for base in free_runs(args.counts, args.avoid)))
    except RuntimeError as exc:
        print(f"free_ports.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
