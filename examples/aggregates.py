"""A custom aggregate: the most frequent values of a field in a session.

Named in the config as::

    [pipelines.sessions.aggregates]
    top_pages = { type = "custom", class = "examples.aggregates:TopValues", params = { field = "details.page", n = 3 } }

and emitted as ``"top_pages": [["/cart", 4], ["/home", 2], ["/products", 1]]``.

The contract, the same one the built-in aggregates follow:

- ``init()`` returns the state of an empty session;
- ``add(state, event, time_ms)`` returns the state with one more event (it may
  change ``state`` in place and return it);
- ``merge(left, right)`` returns the state of two sessions joined by an
  out-of-order event. It must not care which side is which nor in what order
  merges happen, or the result would depend on arrival order;
- ``result(state)`` is what goes into the output record;
- ``dump``/``load`` (optional) turn the state into JSON and back. Without them
  the state itself must be JSON: it goes to RocksDB and the changelog as it is;
- ``check(event)`` (optional) runs in the source stage and raises
  ``service.core.extract.BadRecord`` to send an unusable event to the dead-letter topic.
"""

from __future__ import annotations

from typing import Any

from service.core.extract import field_getter


class TopValues:
    def __init__(self, field: str, n: int = 3) -> None:
        if n < 1:
            raise ValueError("n must be at least 1")
        self.get = field_getter(field)
        self.n = n

    def init(self) -> dict[str, int]:
        return {}

    def add(self, state: dict[str, int], event: dict[str, Any], time_ms: int) -> dict[str, int]:
        value = self.get(event)
        if isinstance(value, str):
            state[value] = state.get(value, 0) + 1
        return state

    def merge(self, left: dict[str, int], right: dict[str, int]) -> dict[str, int]:
        merged = dict(left)
        for value, count in right.items():
            merged[value] = merged.get(value, 0) + count
        return merged

    def result(self, state: dict[str, int]) -> list[list[Any]]:
        # Most frequent first; ties by value, so the result does not depend on arrival order.
        ranked = sorted(state.items(), key=lambda item: (-item[1], item[0]))
        return [[value, count] for value, count in ranked[: self.n]]
