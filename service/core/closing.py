"""The one predicate of event time.

A window is closed when stream time has passed its close time; it is emitted
then and can never change again. An event is late exactly when a window it
could still have to change is closed. Kafka Streams decides "emit" and "too
late" with two slightly different tests and can emit a second "final" record
for a window; here windows and rules alike ask ``closed``.
"""

from __future__ import annotations


def closed(close_time: int, stream_time: int) -> bool:
    """The one rule: a window whose close time stream time has passed is final."""
    return stream_time > close_time


#: Before any event time: what stream time is taken to be while it is still unknown.
EARLIEST = -(2**62)
