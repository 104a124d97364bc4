"""The written-out functions do what the objects' methods do: the adder as the aggregates' ``add``, the
extractor as the key and time extractors and the aggregates' checks, for every built-in type and field shape."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from service.config import AggregateConfig, ConditionConfig
from service.core.aggregates import Sum, build_aggregates
from service.core.extract import BadRecord, KeyExtractor, TimeExtractor
from service.core.inline import adder, adder_source, extractor, extractor_source
from tests.helpers import Harness, session_config

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


# -- the session processor's in-line path ---------------------------------------------------------

SESSION_AGGREGATES = """
total = { type = "sum", field = "amount" }
top = { type = "max", field = "d.v" }
kinds = { type = "count_by", field = "kind" }
firsts = { type = "first", field = "kind" }
"""


@contextmanager
def session_harnesses(extra_window: str = "") -> Iterator[tuple[Harness, Harness]]:
    """Two processors over one config, each over a store of its own: one as built, one forced onto
    the general path (``process_event``)."""
    config = session_config(gap="100ms", grace="50ms", extra_window=extra_window, aggregates=SESSION_AGGREGATES, time_format="epoch_ms")
    with tempfile.TemporaryDirectory() as directory:
        built, general = Harness(config, Path(directory) / "built"), Harness(config, Path(directory) / "general")
        general.processor.process = general.processor.process_event
        try:
            yield built, general
        finally:
            built.close()
            general.close()


def test_uncapped_sessions_take_the_in_line_path_and_capped_ones_the_general():
    with session_harnesses() as (built, _):
        assert getattr(built.processor.process, "__code__").co_filename.startswith("<sessionizer process: session")  # noqa: B009
    for extra in ("max_events = 3", 'max_duration = "1s"'):
        with session_harnesses(extra) as (capped, _):
            assert capped.processor.process == capped.processor.process_event


#: Steps of the clock and delays of arrival around gap (100 ms) and grace (50 ms), one off either side:
#: events join at the gap's edges, arrive exactly at grace behind or one past it, and bridge two sessions.
EDGES = [0, 1, 10, 49, 50, 51, 99, 100, 101, 150, 151]
session_events = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from(EDGES),  # how far the clock moves on before this event
        st.sampled_from(EDGES),  # how far behind the clock the event arrives
        st.integers(0, 2),  # source
        st.sampled_from([None, "view", "buy"]),
        numbers,
        st.booleans(),  # a commit after it
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(session_events, st.booleans())
# From a slower source, on time, a gap and a millisecond before the key's session: a session of its own.
@example([("b", 0, 0, 1, None, None, False), ("a", 0, 0, 0, None, None, False), ("a", 19, 0, 1, None, None, False)], True)
# The same key's next session from the slower source, listed after the first and earlier: an event after its
# start that also reaches the first merges the two.
@example(
    [("b", 0, 0, 1, None, None, False), ("a", 0, 0, 0, None, None, False), ("a", 0, 0, 1, None, None, False), ("a", 80, 0, 1, None, None, False)],
    True,
)
# From the slower source, exactly a gap from each of the key's two sessions: it merges them.
@example(
    [("b", 0, 0, 1, None, None, False), ("a", 0, 0, 0, None, None, False), ("a", 200, 0, 0, None, None, False), ("a", 20, 0, 1, None, None, False)],
    True,
)
def test_the_in_line_session_path_does_what_the_general_path_does(items, with_watermarks):
    """Same records out (sessions, late records and their headers), same counters, same stream time, commit by
    commit: new keys, extensions from before and after, new sessions past the gap, merges, late events, with and
    without each source's watermark."""
    with session_harnesses() as (built, general):
        marks: dict[int, int] = {}
        clock = 1_000
        for key, step, delay, source, kind, amount, commit in items:
            clock += step
            # With watermarks each source runs behind the one before by more than grace, and not late:
            # a key's session can start a gap after an event its slower source brings.
            time_ms = clock - delay - (120 * source if with_watermarks else 0)
            event: dict[str, Any] = {"user_id": key, "ts": time_ms, "amount": amount, "d": {"v": time_ms % 7}}
            if kind is not None:
                event["kind"] = kind
            mark = None
            if with_watermarks:
                mark = marks[source] = max(marks.get(source, time_ms), time_ms)
            for h in (built, general):
                h.send(event, source, mark)
                if with_watermarks:
                    h.processor.advance(min(marks.values()))  # stream time: the slowest source's watermark, as a task keeps it
            if commit:
                built.commit()
                general.commit()
                assert built.out == general.out
        built.finish()
        general.finish()
        assert built.out == general.out
        assert built.processor.counters == general.processor.counters
        assert built.store.stream_time == general.store.stream_time
