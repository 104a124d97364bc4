"""The written-out functions do what the objects' methods do: the adder as the aggregates' ``add``, the
extractor as the key and time extractors and the aggregates' checks, for every built-in type and field shape."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.config import AggregateConfig, ConditionConfig
from service.core.aggregates import Sum, build_aggregates
from service.core.extract import BadRecord, KeyExtractor, TimeExtractor
from service.core.inline import adder, adder_source, extractor, extractor_source

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


KEYS = [("user_id",), ("d.v",), ("@key",), ("user_id", "v")]
TIMES = [("ts", "auto"), ("ts", "epoch_ms"), ("ts", "epoch_s"), ("ts", "iso8601"), ("d.v", "auto"), (None, "auto")]
stamps = st.one_of(
    st.none(),
    st.integers(-(10**13), 10**13),
    st.sampled_from([0, 1_700_000_000, 1_700_000_000_000, 99_999_999_999, 100_000_000_000, 1.5, float("inf"), True]),
    st.sampled_from(["2023-03-15T13:20:00", "2023-03-15T13:20:00+01:00", "1700000000", "x", " 5 ", ""]),
)
keys = st.one_of(st.none(), st.sampled_from(["u1", "", "ü", 7, True, 1.5, ["u"]]))


def outcome(function, *args):
    try:
        return "ok", function(*args)
    except BadRecord as exc:
        return "bad", str(exc), exc.code


def reference(key, time, aggregates):
    def extract(event, record_ms, record_key=None):
        found = key(event, record_key), time(event, record_ms)
        for aggregate in aggregates:
            if aggregate.check is not None:
                aggregate.check(event)
        return found

    return extract


@settings(max_examples=400)
@given(
    st.sampled_from(KEYS),
    st.sampled_from(TIMES),
    st.fixed_dictionaries({}, optional={"user_id": keys, "ts": stamps, "v": keys}),
    st.one_of(st.none(), st.dictionaries(st.just("v"), st.one_of(stamps, keys), max_size=1), stamps),
    st.one_of(st.none(), st.integers(-5, 2_000_000_000_000)),
    st.one_of(st.none(), st.sampled_from([b"", b"k1"])),
)
def test_the_extractor_finds_and_refuses_keys_and_times_as_the_extractors_do(paths, timed, event, nested, record_ms, record_key):
    if nested is not None:
        event["d"] = nested
    key, time = KeyExtractor(paths), TimeExtractor(*timed)
    written = extractor(key, time, ())
    assert outcome(written, event, record_ms, record_key) == outcome(reference(key, time, ()), event, record_ms, record_key)


@settings(max_examples=300)
@given(
    st.fixed_dictionaries({}, optional={"v": values, "d": st.one_of(values, st.dictionaries(st.just("v"), values, max_size=1))}),
    st.one_of(st.just(...), values),
)
def test_the_extractor_checks_numbers_as_the_aggregates_do(event, dotted):
    event |= {"user_id": "u1", "ts": 1_700_000_000_000}
    if dotted is not ...:
        event["d.v"] = dotted
    key, time = KeyExtractor(("user_id",)), TimeExtractor("ts")
    configs = [AggregateConfig(f"{kind}_{n}", kind, field) for kind in (*NUMERIC, "count") for n, field in enumerate(FIELDS)]
    aggregates = build_aggregates(tuple(configs))
    written = extractor(key, time, aggregates)
    assert outcome(written, event, None, None) == outcome(reference(key, time, aggregates), event, None, None)


def test_the_extractor_writes_out_the_fast_paths_and_calls_the_rest():
    aggregates = build_aggregates((AggregateConfig("amount", "sum", "details.amount"), AggregateConfig("top", "first", "page")))
    namespace: dict[str, Any] = {"key_of": None, "time_of": None}
    source = extractor_source(KeyExtractor(("user_id",)), TimeExtractor("timestamp"), aggregates, namespace)
    assert "event.get('user_id')" in source and "event.get('timestamp')" in source
    assert "kind is int or kind is float" in source
    assert "check_1" not in source  # first has no check
    composite = extractor_source(KeyExtractor(("a", "b")), TimeExtractor(None), (), {})
    assert "key = key_of(event, record_key)" in composite and "time_ms = time_of(event, record_ms)" in composite


def test_a_check_that_fails_names_its_aggregate():
    (aggregate,) = build_aggregates((AggregateConfig("amount", "sum", "v"),))
    extract = extractor(KeyExtractor(("user_id",)), TimeExtractor("ts"), (aggregate,))
    assert extract({"user_id": "u", "ts": 1_700_000_000_000, "v": 2.5}, None) == (b"u", 1_700_000_000_000)
    with pytest.raises(BadRecord, match="amount"):
        extract({"user_id": "u", "ts": 1_700_000_000_000, "v": "2"}, None)


def test_field_names_enter_the_source_as_literals_whatever_they_hold():
    odd = "a'\"\n); import os #"
    (aggregate,) = build_aggregates((AggregateConfig("s", "sum", odd),))
    extract = extractor(KeyExtractor((odd,)), TimeExtractor(odd, "epoch_ms"), (aggregate,))
    assert extract({odd: 1_700_000_000_000}, None)[1] == 1_700_000_000_000
    states = [0]
    adder((aggregate,))(states, {odd: 5}, 0)
    assert states == [5]
