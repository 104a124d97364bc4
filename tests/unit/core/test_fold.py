"""The generated adder does what the aggregates' ``add`` methods do, for every built-in type and field shape."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from service.config import AggregateConfig, ConditionConfig
from service.core.aggregates import Sum, build_aggregates
from service.core.fold import adder, adder_source

#: Top level, nested, a top-level key with a dot (which wins over the nested walk), three levels.
FIELDS = ["v", "d.v", "a.b.c"]
NUMERIC = ["sum", "min", "max", "avg"]
ANY_VALUE = ["count", "count_distinct", "count_by", "first", "last"]

numbers = st.one_of(st.none(), st.integers(-9, 9), st.floats(-10, 10, allow_nan=False))
scalars = st.one_of(st.none(), st.integers(-3, 3), st.sampled_from(["a", "b", 1.5, True]))
values = st.one_of(scalars, st.lists(scalars, max_size=2), st.dictionaries(st.sampled_from("xy"), scalars, max_size=1))


def events(leaf: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Events whose fields of ``FIELDS`` are missing, null, of ``leaf``, or in the way (a non-object where one is walked)."""
    maybe = st.one_of(st.just(...), leaf)
    inner = st.one_of(leaf, st.dictionaries(st.just("c"), leaf, max_size=1))
    return st.fixed_dictionaries(
        {},
        optional={
            "v": leaf,
            "d": st.one_of(leaf, st.dictionaries(st.just("v"), leaf, max_size=1)),
            "d.v": maybe,
            "a": st.one_of(leaf, st.dictionaries(st.just("b"), inner, max_size=1)),
        },
    ).map(lambda event: {k: v for k, v in event.items() if v is not ...})


def configs(types: list[str]) -> list[AggregateConfig]:
    return [AggregateConfig(f"{kind}_{n}", kind, field) for kind in types for n, field in enumerate(FIELDS)]


def through_methods(aggregates, timed_events):
    states = [a.init() for a in aggregates]
    for time_ms, event in timed_events:
        states = [a.add(state, event, time_ms) for a, state in zip(aggregates, states, strict=True)]
    return states


def through_adder(aggregates, timed_events):
    states = [a.init() for a in aggregates]
    add = adder(aggregates)
    for time_ms, event in timed_events:
        add(states, event, time_ms)
    return states


@settings(max_examples=300)
@given(st.lists(st.tuples(st.integers(0, 20), events(numbers)), max_size=8))
def test_numeric_aggregates_add_as_their_methods_do(timed_events):
    aggregates = build_aggregates((*configs(NUMERIC), AggregateConfig("all", "count")))
    assert through_adder(aggregates, timed_events) == through_methods(aggregates, timed_events)


@settings(max_examples=300)
@given(st.lists(st.tuples(st.integers(0, 20), events(values)), max_size=8))
def test_aggregates_of_any_value_add_as_their_methods_do(timed_events):
    flag = AggregateConfig("paid", "any", "v", condition=ConditionConfig("v", ("pay",)))
    aggregates = build_aggregates((*configs(ANY_VALUE), flag))
    assert through_adder(aggregates, timed_events) == through_methods(aggregates, timed_events)


def test_built_in_types_are_written_out_and_the_rest_called():
    aggregates = build_aggregates(
        (
            AggregateConfig("n", "count"),
            AggregateConfig("amount", "sum", "details.amount"),
            AggregateConfig("top", "first", "page"),
        )
    )
    namespace: dict[str, Any] = {}
    source = adder_source(aggregates, namespace)
    assert "states[0] += 1" in source
    assert "event.get('details')" in source
    assert "add_2(states[2], event, time_ms)" in source
    assert set(namespace) == {"add_2"}


def test_a_subclass_with_its_own_add_is_called_not_written_out():
    class Doubled(Sum):
        def add(self, state, event, time_ms):
            value = self.get(event)
            return state + 2 * value if value is not None else state

    states = [0]
    adder((Doubled("twice", "v"),))(states, {"v": 5}, 0)
    assert states == [10]


def test_no_aggregates_add_nothing():
    states: list[Any] = []
    adder(())(states, {"v": 1}, 0)
    assert states == []
