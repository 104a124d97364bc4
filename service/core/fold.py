"""One function per pipeline that adds an event to every aggregate state of a window.

Every accepted event reaches every aggregate of its window. Through the
aggregates' methods that costs two Python calls per aggregate (``add``, then
its field getter) and a loop: a third of the window stage's time
(``bench/stages.py``, two aggregates). So, as ``dataclasses`` writes a class's
``__init__``, ``adder`` writes the source of one function for a pipeline's
aggregates, with each built-in aggregate's ``add`` and its field lookup
written out in line (``_LINES``), and compiles it once. Aggregates without
lines here (first, last, any, all, custom, and any subclass) are called
through their ``add`` as before.

The lines must do exactly what the class's ``add`` does:
``tests/unit/core/test_fold.py`` checks every built-in type on generated
events against its methods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from service.core.aggregates import Aggregate, Avg, Count, CountBy, CountDistinct, Max, Min, Sum, hashable

#: Adds one event (and its time) to a window's aggregate states, in place.
Adder = Callable[[list[Any], dict[str, Any], int], None]

#: Each built-in aggregate's ``add``, in line: ``{state}`` is its state (an
#: item of the list), ``value`` the value of its field (None when absent).
#: Keyed by the exact class, so a subclass with its own ``add`` is not taken for it.
_LINES: dict[type, str] = {
    Sum: "if value is not None:\n    {state} += value",
    Min: "if value is not None:\n    old = {state}\n    if old is None or value < old:\n        {state} = value",
    Max: "if value is not None:\n    old = {state}\n    if old is None or value > old:\n        {state} = value",
    Avg: "if value is not None:\n    pair = {state}\n    pair[0] += value\n    pair[1] += 1",
    CountDistinct: "if value is not None:\n    {state}.add(hashable(value))",
    CountBy: (
        "if value is not None:\n"
        "    label = value if isinstance(value, str) else orjson.dumps(value).decode()\n"
        "    counts = {state}\n"
        "    counts[label] = counts.get(label, 0) + 1"
    ),
}
#: ``count`` without a field counts every event.
_COUNT_ALL = "{state} += 1"
_COUNT_FIELD = "if value is not None:\n    {state} += 1"


def adder(aggregates: tuple[Aggregate, ...]) -> Adder:
    """``add(states, event, time_ms)``: the event added to ``states``, one per aggregate, in their order."""
    namespace: dict[str, Any] = {"orjson": orjson, "hashable": hashable}
    source = adder_source(aggregates, namespace)
    exec(compile(source, f"<sessionizer aggregates {', '.join(a.name for a in aggregates)}>", "exec"), namespace)
    function: Adder = namespace["add"]
    return function


def adder_source(aggregates: tuple[Aggregate, ...], namespace: dict[str, Any]) -> str:
    """The source of ``add``; what it calls (getters, ``add`` methods) goes into ``namespace``."""
    body = []
    for i, aggregate in enumerate(aggregates):
        state = f"states[{i}]"
        lines = _lines(aggregate)
        if lines is None:
            namespace[f"add_{i}"] = aggregate.add
            body.append(f"{state} = add_{i}({state}, event, time_ms)")
            continue
        field = getattr(aggregate, "field", "")
        if field:
            body.append(_value_source(field, i, aggregate, namespace))
        body.append(lines.format(state=state))
    if not body:
        body.append("pass")
    indented = "\n".join("    " + line for block in body for line in block.splitlines())
    return f"def add(states, event, time_ms):\n{indented}\n"


def _lines(aggregate: Aggregate) -> str | None:
    kind = type(aggregate)
    if kind is Count:
        return _COUNT_FIELD if getattr(aggregate, "field", "") else _COUNT_ALL
    return _LINES.get(kind)


def _value_source(field: str, i: int, aggregate: Aggregate, namespace: dict[str, Any]) -> str:
    """``value = `` the field's value, as ``service.core.extract.field_getter`` finds it."""
    parts = field.split(".")
    if len(parts) == 1:
        return f"value = event.get({field!r})"
    if len(parts) == 2:
        # A top-level key with the dot wins over the nested walk.
        outer, inner = parts
        return (
            f"value = event.get({field!r})\n"
            "if value is None:\n"
            f"    value = event.get({outer!r})\n"
            f"    value = value.get({inner!r}) if type(value) is dict else None"
        )
    namespace[f"get_{i}"] = getattr(aggregate, "get")  # noqa: B009  # deeper paths: the aggregate's own getter
    return f"value = get_{i}(event)"
