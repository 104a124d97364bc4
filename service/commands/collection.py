"""The garbage collector's pace for the commands that handle events (``run``, ``process``, ``restore-state``).

Reference counting frees nearly everything these commands allocate per
event (decoded events, output records) at once; the cyclic collector only
has to find cycles. With CPython's default thresholds (700, 10, 10) it ran
about 1,900 times per 1,000,000 events in a three-topic replay, 14 of them
full collections over every cached window, for 0.37 s of the process's
5.9 s of CPU (a ``gc.callbacks`` timer around ``bench/bench.py``'s direct
path). At (50,000, 20, 20) it ran 5 times, for 0.05 s. Young cycles are
still collected after at most ``THRESHOLDS[0]`` allocations, so the
garbage cycles can hold stays a few megabytes, where a collector turned off
would let it grow without bound.
"""

from __future__ import annotations

import gc

#: Allocations before a young collection; young collections before a middle one; middle before a full one.
THRESHOLDS = (50_000, 20, 20)


def pace_collector() -> None:
    gc.set_threshold(*THRESHOLDS)
