"""Aggregates over the events of one window.

Every aggregate can merge two of its states, because an out-of-order event
that bridges two sessions merges them (seed 004's "super aggregation"). States
are JSON-friendly so they go to RocksDB and the changelog as they are;
``dump``/``load`` convert the few that are not (sets).

Aggregates never see Kafka: they get a decoded event and its time.

The type names are declared once, in ``service.config.schema.AGGREGATE_TYPES``;
each class here says which one it implements in ``type_name``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self

import orjson

from service.config.plugins import import_class
from service.config.schema import AggregateConfig
from service.core.conditions import compile_condition
from service.core.extract import BadRecord, Getter, field_getter
from service.core.reasons import WRONG_TYPE


class Aggregate(Protocol):
    name: str

    def init(self) -> Any: ...

    def add(self, state: Any, event: dict[str, Any], time_ms: int) -> Any: ...

    def merge(self, left: Any, right: Any) -> Any: ...

    def result(self, state: Any) -> Any: ...

    def dump(self, state: Any) -> Any: ...

    def load(self, data: Any) -> Any: ...

    #: Validation run in the source stage, so a bad record is dead-lettered with
    #: its source coordinates; None when any value is acceptable. Read-only here,
    #: so a method, a class's ``check = None`` or an instance attribute all fit.
    @property
    def check(self) -> Callable[[dict[str, Any]], None] | None: ...


@dataclass
class _FieldAggregate:
    """Shared parts: a name, a field getter, identity dump/load, no type check."""

    name: str
    field: str

    #: The name in ``AGGREGATE_TYPES`` this class implements.
    type_name: ClassVar[str]

    @classmethod
    def from_config(cls, config: AggregateConfig) -> Self:
        return cls(config.name, config.field or "")

    def __post_init__(self) -> None:
        self.get: Getter = field_getter(self.field)

    def dump(self, state: Any) -> Any:
        return state

    def load(self, data: Any) -> Any:
        return data

    def result(self, state: Any) -> Any:
        return state


class _NumericCheck:
    """Mixin: the field, when present, must be a number (else the record is dead-lettered).

    The other aggregates say ``check = None`` themselves: a default on
    ``_FieldAggregate`` would clash with this method for mypy.
    """

    name: str
    field: str
    get: Getter

    def check(self, event: dict[str, Any]) -> None:
        value = self.get(event)
        kind = type(value)
        if kind is int or kind is float or value is None:  # the common cases first
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BadRecord(
                f"wrong type: aggregate {self.name!r} needs a number in {self.field!r}, got {type(value).__name__}",
                WRONG_TYPE,
            )


class Count(_FieldAggregate):
    """Events in which ``field`` is present and not null (all events when no field)."""

    type_name = "count"
    check = None

    def __post_init__(self) -> None:
        self.get = field_getter(self.field) if self.field else (lambda event: True)

    def init(self) -> int:
        return 0

    def add(self, state: int, event: dict[str, Any], time_ms: int) -> int:
        return state + 1 if self.get(event) is not None else state

    def merge(self, left: int, right: int) -> int:
        return left + right


class Sum(_NumericCheck, _FieldAggregate):
    type_name = "sum"

    def init(self) -> int | float:
        return 0

    def add(self, state: float, event: dict[str, Any], time_ms: int) -> float:
        value = self.get(event)
        return state + value if value is not None else state

    def merge(self, left: float, right: float) -> float:
        return left + right


class Min(_NumericCheck, _FieldAggregate):
    type_name = "min"

    def init(self) -> None:
        return None

    def add(self, state: float | None, event: dict[str, Any], time_ms: int) -> float | None:
        value = self.get(event)
        if value is None:
            return state
        return value if state is None or value < state else state

    def merge(self, left: float | None, right: float | None) -> float | None:
        if left is None:
            return right
        if right is None:
            return left
        return min(left, right)


class Max(Min):
    type_name = "max"

    def add(self, state: float | None, event: dict[str, Any], time_ms: int) -> float | None:
        value = self.get(event)
        if value is None:
            return state
        return value if state is None or value > state else state

    def merge(self, left: float | None, right: float | None) -> float | None:
        if left is None:
            return right
        if right is None:
            return left
        return max(left, right)


class Avg(_NumericCheck, _FieldAggregate):
    """State ``[sum, n]``; the result is None for a window without the field."""

    type_name = "avg"

    def init(self) -> list[float]:
        return [0, 0]

    def add(self, state: list[float], event: dict[str, Any], time_ms: int) -> list[float]:
        value = self.get(event)
        if value is not None:
            state[0] += value
            state[1] += 1
        return state

    def merge(self, left: list[float], right: list[float]) -> list[float]:
        return [left[0] + right[0], left[1] + right[1]]

    def result(self, state: list[float]) -> float | None:
        return state[0] / state[1] if state[1] else None


class First(_FieldAggregate):
    """The value with the smallest event time; state ``[time_ms, value]``.

    Ties in time are broken by the value's JSON text, so the result does not
    depend on arrival order.
    """

    type_name = "first"
    check = None
    keep_later = False

    def init(self) -> None:
        return None

    def add(self, state: list[Any] | None, event: dict[str, Any], time_ms: int) -> list[Any] | None:
        value = self.get(event)
        if value is None:
            return state
        return self.merge(state, [time_ms, value])

    def merge(self, left: list[Any] | None, right: list[Any] | None) -> list[Any] | None:
        if left is None:
            return right
        if right is None:
            return left
        if left[0] != right[0]:
            left_first = left[0] < right[0]
        else:
            left_first = _json(left[1]) <= _json(right[1])
        return right if left_first == self.keep_later else left

    def result(self, state: list[Any] | None) -> Any:
        return state[1] if state is not None else None


class Last(First):
    """The value with the largest event time (ties: the larger JSON text)."""

    type_name = "last"
    keep_later = True


class CountDistinct(_FieldAggregate):
    """Exact distinct count. The state is the set of values seen (objects and lists by their JSON text)."""

    type_name = "count_distinct"
    check = None

    def init(self) -> set[Any]:
        return set()

    def add(self, state: set[Any], event: dict[str, Any], time_ms: int) -> set[Any]:
        value = self.get(event)
        if value is not None:
            state.add(hashable(value))
        return state

    def merge(self, left: set[Any], right: set[Any]) -> set[Any]:
        return left | right

    def result(self, state: set[Any]) -> int:
        return len(state)

    def dump(self, state: set[Any]) -> list[Any]:
        return list(state)

    def load(self, data: list[Any]) -> set[Any]:
        return set(data)


class CountBy(_FieldAggregate):
    """Events per value of ``field``, e.g. per event type: ``{"page_viewed": 3, "checkout": 1}``."""

    type_name = "count_by"
    check = None

    def init(self) -> dict[str, int]:
        return {}

    def add(self, state: dict[str, int], event: dict[str, Any], time_ms: int) -> dict[str, int]:
        value = self.get(event)
        if value is not None:
            label = value if isinstance(value, str) else orjson.dumps(value).decode()
            state[label] = state.get(label, 0) + 1
        return state

    def merge(self, left: dict[str, int], right: dict[str, int]) -> dict[str, int]:
        merged = dict(left)
        for label, count in right.items():
            merged[label] = merged.get(label, 0) + count
        return merged


class _Configured:
    """Shared part of the aggregates built from their whole config (a condition, a user's class), not a field."""

    type_name: ClassVar[str]

    def __init__(self, config: AggregateConfig) -> None:
        self.name = config.name

    @classmethod
    def from_config(cls, config: AggregateConfig) -> Self:
        return cls(config)


class AnyMatch(_Configured):
    """Session flag: does at least one event meet the condition (seed 004's ``has_checkout``)?"""

    type_name = "any"
    check = None

    def __init__(self, config: AggregateConfig) -> None:
        super().__init__(config)
        assert config.condition is not None
        self.matches = compile_condition(config.condition)

    def init(self) -> bool:
        return False

    def add(self, state: bool, event: dict[str, Any], time_ms: int) -> bool:
        return state or self.matches(event)

    def merge(self, left: bool, right: bool) -> bool:
        return left or right

    def result(self, state: bool) -> bool:
        return state

    def dump(self, state: bool) -> bool:
        return state

    def load(self, data: bool) -> bool:
        return data


class AllMatch(AnyMatch):
    """Session flag: does every event of the window meet the condition?"""

    type_name = "all"

    def init(self) -> bool:
        return True

    def add(self, state: bool, event: dict[str, Any], time_ms: int) -> bool:
        return state and self.matches(event)

    def merge(self, left: bool, right: bool) -> bool:
        return left and right


class Custom(_Configured):
    """A user's aggregate class named in the config (``type = "custom"``).

    The class is built with the config's ``params`` and must have ``init``,
    ``add``, ``merge`` and ``result`` with the built-in aggregates' signatures;
    ``dump``/``load`` (a state that is not JSON as it is) and ``check`` (a
    source-stage type check) are optional. Its methods are bound here once, so
    calling them costs what a built-in aggregate's call costs.
    """

    type_name = "custom"

    def __init__(self, config: AggregateConfig) -> None:
        super().__init__(config)
        assert config.class_path is not None
        self.impl = import_class(config.class_path)(**config.params)
        self.init = self.impl.init
        self.add = self.impl.add
        self.merge = self.impl.merge
        self.result = self.impl.result
        self.dump = getattr(self.impl, "dump", _same)
        self.load = getattr(self.impl, "load", _same)
        self.check = getattr(self.impl, "check", None)


def _same(state: Any) -> Any:
    return state


#: The ``dump``/``load`` functions that return what they are given.
_IDENTITIES = frozenset({_FieldAggregate.dump, _FieldAggregate.load, AnyMatch.dump, AnyMatch.load, _same})


def keeps_state_as_is(aggregate: Aggregate) -> bool:
    """Do the aggregate's ``dump`` and ``load`` both return what they are given?

    Windows then store its state without a call per state and window (the
    store writes every changed key's windows at every commit). Judged by the
    functions themselves, so a subclass or a custom class with its own
    ``dump`` or ``load`` is never taken for one that stores as it is.
    """
    return all(getattr(method, "__func__", method) in _IDENTITIES for method in (aggregate.dump, aggregate.load))


def _json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def hashable(value: Any) -> Any:
    """The value as a set member: objects and lists by their JSON text (keys sorted)."""
    if isinstance(value, (dict, list)):
        return _json(value).decode()
    return value


class _Implementation(Protocol):
    """What the builder needs of a class: the type it implements and a way to build it from its config."""

    type_name: ClassVar[str]

    @classmethod
    def from_config(cls, config: AggregateConfig) -> Aggregate: ...


#: One class per name in ``AGGREGATE_TYPES``; each names its type, so the names are not listed here.
IMPLEMENTATIONS: tuple[type[_Implementation], ...] = (
    Count,
    Sum,
    Min,
    Max,
    Avg,
    First,
    Last,
    CountDistinct,
    CountBy,
    AnyMatch,
    AllMatch,
    Custom,
)
_BY_TYPE = {cls.type_name: cls for cls in IMPLEMENTATIONS}


def build_aggregate(config: AggregateConfig) -> Aggregate:
    implementation = _BY_TYPE.get(config.type)
    if implementation is None:
        raise NotImplementedError(
            f"aggregate {config.name!r}: type {config.type!r} has no implementation; "
            f"add a class with type_name = {config.type!r} to service.core.aggregates.IMPLEMENTATIONS"
        )
    return implementation.from_config(config)


def build_aggregates(configs: tuple[AggregateConfig, ...]) -> tuple[Aggregate, ...]:
    return tuple(build_aggregate(c) for c in configs)
