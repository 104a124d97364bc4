"""Every aggregate merges, and merging equals adding everything to one state."""

from __future__ import annotations

import pytest

from service.config import AggregateConfig
from service.core.aggregates import build_aggregates

EVENTS = [
    (3, {"v": 5, "t": "page", "p": "/a"}),
    (1, {"v": 2, "t": "cart", "p": "/b"}),
    (7, {"v": 9, "t": "page", "p": "/a"}),
    (5, {"t": "page"}),
    (2, {"v": 1.5, "t": "pay", "p": {"x": 1}}),
]

CASES = [
    ("count", None, 5),
    ("count", "v", 4),
    ("sum", "v", 17.5),
    ("min", "v", 1.5),
    ("max", "v", 9),
    ("avg", "v", 17.5 / 4),
    ("first", "t", "cart"),
    ("last", "t", "page"),
    ("count_distinct", "p", 3),
    ("count_by", "t", {"page": 3, "cart": 1, "pay": 1}),
]


@pytest.mark.parametrize("kind,field,expected", CASES)
def test_result(kind, field, expected):
    (agg,) = build_aggregates((AggregateConfig("x", kind, field),))
    state = agg.init()
    for time_ms, event in EVENTS:
        state = agg.add(state, event, time_ms)
    assert agg.result(agg.load(agg.dump(state))) == expected


@pytest.mark.parametrize("kind,field,expected", CASES)
@pytest.mark.parametrize("split", [0, 1, 2, 4, 5])
def test_merge_of_two_halves_equals_the_whole(kind, field, expected, split):
    (agg,) = build_aggregates((AggregateConfig("x", kind, field),))
    left, right = agg.init(), agg.init()
    for time_ms, event in EVENTS[:split]:
        left = agg.add(left, event, time_ms)
    for time_ms, event in EVENTS[split:]:
        right = agg.add(right, event, time_ms)
    assert agg.result(agg.merge(left, right)) == expected
    assert agg.result(agg.merge(right, left)) == expected


def test_first_and_last_break_time_ties_by_value_not_arrival():
    first, last = build_aggregates((AggregateConfig("f", "first", "v"), AggregateConfig("l", "last", "v")))
    results = set()
    for order in ([("b", 1), ("a", 1)], [("a", 1), ("b", 1)]):
        f = l_state = None
        for value, time_ms in order:
            f = first.add(f, {"v": value}, time_ms)
            l_state = last.add(l_state, {"v": value}, time_ms)
        results.add((first.result(f), last.result(l_state)))
    assert results == {("a", "b")}


def test_numeric_aggregates_reject_non_numbers():
    from service.core.extract import BadRecord

    (agg,) = build_aggregates((AggregateConfig("total", "sum", "v"),))
    agg.check({"v": 3})
    agg.check({})
    with pytest.raises(BadRecord, match="wrong type"):
        agg.check({"v": "3"})
