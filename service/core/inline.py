"""Per-pipeline functions with the per-event work written out in line.

Every event goes through a pipeline's extract (key, time, the aggregates'
type checks) and through every aggregate of its window. Through the objects'
methods that is a Python call per step and another per field lookup: about
ten calls an event for two aggregates, a quarter of the window stage's time
and most of the extract's (``bench/stages.py``). So, as ``dataclasses``
writes a class's ``__init__``, this module writes the source of one function
per pipeline with the common case of each step in line, and compiles it once
at start-up:

- ``adder``: each built-in aggregate's ``add`` (``_LINES``) with its field
  lookup; first, last, any, all, custom and any subclass are called through
  their ``add``, as before;
- ``extractor``: the key's and time's fast paths (a plain top-level field or
  the record key, an int of milliseconds) and the numeric aggregates' check
  for an int, a float or nothing; anything else calls the extractor or the
  check itself, which decides and names the problem;
- ``session_process``: ``WindowProcessor.process`` for session windows
  without caps or rules, with its common cases in line: an event on time that
  reaches one of the key's sessions and no other extends it, and one that
  reaches none starts a session, the adder's lines included. That is
  five calls an event (process, the store's ``changing``, the kind's ``add``,
  ``_add_event``, the adder) made two. Every other event (late, or merging
  sessions) goes through the processor's general path, which decides and
  says why.

Field names come from the config and enter the source only as ``repr``
literals.

The written-out lines must do exactly what the methods do:
``tests/unit/core/test_inline.py`` checks them on generated events.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import orjson

from service.core.aggregates import Aggregate, Avg, Count, CountBy, CountDistinct, Max, Min, Sum, hashable
from service.core.extract import MS_THRESHOLD, KeyExtractor, TimeExtractor

#: Adds one event (and its time) to a window's aggregate states, in place.
Adder = Callable[[list[Any], dict[str, Any], int], None]
#: ``(event, record timestamp, record key) -> (key, time)``; raises ``BadRecord``.
Extractor = Callable[[dict[str, Any], int | None, bytes | None], tuple[bytes, int]]


class Process(Protocol):
    """``WindowProcessor.process_event``'s signature."""

    def __call__(
        self, key: bytes, time_ms: int, event: dict[str, Any], raw: bytes | memoryview, source: int = 0, watermark: int | None = None
    ) -> None: ...


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
#: The aggregates whose check wants a number (``aggregates._NumericCheck``).
_NUMERIC = (Sum, Min, Max, Avg)


def adder(aggregates: tuple[Aggregate, ...]) -> Adder:
    """``add(states, event, time_ms)``: the event added to ``states``, one per aggregate, in their order."""
    namespace: dict[str, Any] = {"orjson": orjson, "hashable": hashable}
    function: Adder = _define("add", adder_source(aggregates, namespace), namespace, [a.name for a in aggregates])
    return function


def adder_source(aggregates: tuple[Aggregate, ...], namespace: dict[str, Any]) -> str:
    """The source of ``add``; what it calls (getters, ``add`` methods) goes into ``namespace``."""
    return _function("add(states, event, time_ms)", _adder_body(aggregates, namespace))


def _adder_body(aggregates: tuple[Aggregate, ...], namespace: dict[str, Any]) -> list[str]:
    """``add``'s lines: each aggregate's step on ``states[i]``, from ``event`` and ``time_ms``."""
    body = []
    for i, aggregate in enumerate(aggregates):
        state = f"states[{i}]"
        kind = type(aggregate)
        field = getattr(aggregate, "field", "")
        lines = (_COUNT_FIELD if field else _COUNT_ALL) if kind is Count else _LINES.get(kind)
        if lines is None:
            namespace[f"add_{i}"] = aggregate.add
            body.append(f"{state} = add_{i}({state}, event, time_ms)")
            continue
        if field:
            body.append(_value_source(field, f"get_{i}", aggregate, namespace))
        body.append(lines.format(state=state))
    return body


def session_process(
    processor: Any, general: Process, gap: int, grace: int, aggregates: tuple[Aggregate, ...], new_session: Callable[..., Any]
) -> Process:
    """``process`` for ``processor``, whose windows are sessions of ``gap`` and ``grace`` without caps or rules.

    ``general`` is the processor's general path (``process_event``), and
    ``new_session(start, end, count, states)`` makes a session. The
    written-out path reads the processor's store and counters at every call,
    since a task hands its processor a new store when it resets.
    """
    namespace: dict[str, Any] = {
        "processor": processor,
        "general": general,
        "new_session": new_session,
        "inits": tuple(a.init for a in aggregates),
        "orjson": orjson,
        "hashable": hashable,
    }
    source = session_process_source(gap, grace, aggregates, namespace)
    function: Process = _define("process", source, namespace, ["session", *(a.name for a in aggregates)])
    return function


def session_process_source(gap: int, grace: int, aggregates: tuple[Aggregate, ...], namespace: dict[str, Any]) -> str:
    """The source of ``session_process``'s function.

    It computes stream time and the event's limit as ``process_event`` does,
    and hands the event to it, unchanged, whenever the common case does not
    hold. Handing over after moving stream time is safe: ``process_event``
    finds stream time already at the event and moves it no further.
    """
    gap, grace = int(gap), int(grace)
    body = [
        "store = processor.store\n"
        "stream_time = store.stream_time\n"
        "if watermark is None:\n"
        "    if stream_time is None or time_ms > stream_time:\n"
        "        stream_time = store.stream_time = time_ms\n"
        "    limit = stream_time\n"
        "elif stream_time is None or watermark > stream_time:\n"
        "    limit = watermark\n"
        "else:\n"
        "    limit = stream_time",
        # Late (``SessionWindows.late_reason``): the general path sends it to the late topic, naming why.
        f"if time_ms + {grace} < limit:\n    return general(key, time_ms, event, raw, source, watermark)",
        # The sessions within gap of the event (``SessionWindows.add``'s touching sessions): two or more
        # merge, which is general. A direct task reads its sources a batch at a time, so a key's events
        # often go back and forth between the sessions it holds.
        "sessions = store.changing(key)\n"
        "session = None\n"
        f"low = time_ms - {gap}\n"
        f"high = time_ms + {gap}\n"
        "for other in sessions:\n"
        "    if other.start <= high and other.end >= low:\n"
        "        if session is not None:\n"
        "            return general(key, time_ms, event, raw, source, watermark)\n"
        "        session = other\n"
        # None: the event starts a session of its own (``SessionWindows._new``).
        "if session is None:\n"
        "    states = [init() for init in inits]\n"
        "    sessions.append(new_session(time_ms, time_ms, 1, states))\n"
        # One: the event extends it (``SessionWindows._add_event``).
        "else:\n"
        "    if time_ms < session.start:\n"
        "        session.start = time_ms\n"
        "    elif time_ms > session.end:\n"
        "        session.end = time_ms\n"
        "    session.count += 1\n"
        "    states = session.aggs",
        *_adder_body(aggregates, namespace),
        "processor.counters.processed += 1",
    ]
    return _function("process(key, time_ms, event, raw, source=0, watermark=None)", body)


def extractor(key: KeyExtractor, time: TimeExtractor, aggregates: tuple[Aggregate, ...]) -> Extractor:
    """``extract(event, record_ms, record_key=None)``: the key, the time, and every aggregate's check."""
    namespace: dict[str, Any] = {"key_of": key, "time_of": time}
    function: Extractor = _define("extract", extractor_source(key, time, aggregates, namespace), namespace, ["extract"])
    return function


def extractor_source(key: KeyExtractor, time: TimeExtractor, aggregates: tuple[Aggregate, ...], namespace: dict[str, Any]) -> str:
    """The source of ``extract``; the extractors and checks it falls back on are in ``namespace``."""
    body = []
    if key.record_key:
        body.append("key = record_key if record_key else key_of(event, record_key)")
    elif key.plain_field is None:
        body.append("key = key_of(event, record_key)")
    else:
        body.append(
            f"value = event.get({key.plain_field!r})\n"
            "if type(value) is str and value:\n"
            "    key = value.encode()\n"
            "else:\n"
            "    key = key_of(event, record_key)"
        )
    if time.plain_field is None:
        body.append("time_ms = time_of(event, record_ms)")
    else:
        in_ms = "" if time.format == "epoch_ms" else f" and value >= {MS_THRESHOLD}"
        body.append(
            f"value = event.get({time.plain_field!r})\n"
            f"if type(value) is int{in_ms}:\n"
            "    time_ms = value\n"
            "else:\n"
            "    time_ms = time_of(event, record_ms)"
        )
    for i, aggregate in enumerate(aggregates):
        check = aggregate.check
        if check is None:
            continue
        namespace[f"check_{i}"] = check
        if type(aggregate) in _NUMERIC:
            body.append(_value_source(getattr(aggregate, "field"), f"get_{i}", aggregate, namespace))  # noqa: B009
            body.append(f"kind = type(value)\nif not (kind is int or kind is float or value is None):\n    check_{i}(event)")
        else:
            body.append(f"check_{i}(event)")
    body.append("return key, time_ms")
    return _function("extract(event, record_ms, record_key=None)", body)


def _value_source(field: str, getter: str, aggregate: Aggregate, namespace: dict[str, Any]) -> str:
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
    namespace[getter] = getattr(aggregate, "get")  # noqa: B009  # deeper paths: the aggregate's own getter
    return f"value = {getter}(event)"


def _function(signature: str, body: list[str]) -> str:
    lines = [line for block in body for line in block.splitlines()] or ["pass"]
    return f"def {signature}:\n" + "".join(f"    {line}\n" for line in lines)


def _define(name: str, source: str, namespace: dict[str, Any], what: list[str]) -> Any:
    """Compile ``source`` in ``namespace`` and return its function ``name``; tracebacks name ``what``."""
    exec(compile(source, f"<sessionizer {name}: {', '.join(what)}>", "exec"), namespace)
    return namespace[name]
