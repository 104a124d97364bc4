"""Every aggregate merges, and merging equals adding everything to one state; session flags (any/all of a
condition) and custom aggregates named in the config."""

from __future__ import annotations

import pytest

from service.config import AggregateConfig, ConditionConfig
from service.core.aggregates import build_aggregates
from tests.helpers import Harness, at, session_config

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


# -- flags ----------------------------------------------------------------------


def flag(kind, field="type", equals=("checkout",)):
    (agg,) = build_aggregates((AggregateConfig("f", kind, field, ConditionConfig(field, equals)),))
    return agg


@pytest.mark.parametrize(
    "kind,types,expected",
    [
        ("any", ["page", "checkout", "page"], True),
        ("any", ["page", "cart"], False),
        ("all", ["checkout", "checkout"], True),
        ("all", ["checkout", "page"], False),
    ],
)
@pytest.mark.parametrize("split", [0, 1, 2, 3])
def test_flags_merge_like_adding_everything_to_one_state(kind, types, expected, split):
    agg = flag(kind)
    left, right = agg.init(), agg.init()
    for t in types[:split]:
        left = agg.add(left, {"type": t}, 0)
    for t in types[split:]:
        right = agg.add(right, {"type": t}, 0)
    assert agg.result(agg.load(agg.dump(agg.merge(left, right)))) is expected
    assert agg.result(agg.merge(right, left)) is expected


def test_seed_004_has_checkout_per_session_and_after_the_merge(tmp_path):
    """Seed 004's table: which of AllOfR's sessions saw a checkout, before and after 15:25 merges two."""
    config = session_config(
        gap="10m",
        grace="15m",
        aggregates='has_checkout = { type = "any", field = "type", equals = "checkout" }\n'
        'all_in_store = { type = "all", field = "place", equals = "store" }',
    )
    events = [
        ("14:30", "put-item-in-cart"),
        ("14:34", "checkout"),
        ("15:03", "put-item-in-cart"),
        ("15:07", "remove-item-from-cart"),
        ("15:16", "preview-item"),
        ("15:29", "put-item-in-cart"),
        ("15:37", "checkout"),
    ]
    h = Harness(config, tmp_path / "store")
    try:
        for hhmm, kind in events:
            h.send({"user_id": "AllOfR", "ts": at(hhmm), "type": kind, "place": "store"})
        assert [s["has_checkout"] for s in h.processor.open_windows(b"AllOfR")] == [True, False, True]
        h.send({"user_id": "AllOfR", "ts": at("15:25"), "type": "put-item-in-cart", "place": "lobby"})
        h.finish()
        values = [r["value"] for r in h.emitted()]
        assert [(v["event_count"], v["has_checkout"], v["all_in_store"]) for v in values] == [
            (2, True, True),
            (6, True, False),
        ]
    finally:
        h.close()


# -- custom aggregates ------------------------------------------------------------

TOP_PAGES = (
    'top_pages = { type = "custom", class = "examples.aggregates:TopValues", params = { field = "page", n = 2 } }'
)


def test_custom_aggregate_from_the_config(tmp_path):
    h = Harness(session_config(gap="10m", aggregates=TOP_PAGES), tmp_path / "store")
    try:
        for minute, page in enumerate(["/home", "/cart", "/cart", "/products", "/home", "/cart"]):
            h.send({"user_id": "u", "ts": at(f"14:0{minute}"), "page": page})
        h.finish()
        (record,) = h.emitted()
        assert record["value"]["top_pages"] == [["/cart", 3], ["/home", 2]]
    finally:
        h.close()


def test_custom_aggregate_merges_when_an_event_bridges_two_sessions(tmp_path):
    h = Harness(session_config(gap="10m", grace="1h", aggregates=TOP_PAGES), tmp_path / "store")
    try:
        h.send({"user_id": "u", "ts": at("14:00"), "page": "/home"})
        h.send({"user_id": "u", "ts": at("14:20"), "page": "/cart"})
        h.send({"user_id": "u", "ts": at("14:21"), "page": "/cart"})
        h.commit()  # the state goes through dump/load (JSON) in the store
        h.send({"user_id": "u", "ts": at("14:10"), "page": "/home"})
        h.finish()
        (record,) = h.emitted()
        assert record["value"]["event_count"] == 4
        assert record["value"]["top_pages"] == [["/cart", 2], ["/home", 2]]
    finally:
        h.close()


class WithDumpAndCheck:
    """A custom aggregate whose state is a set, so it needs dump and load; it also checks types."""

    def __init__(self) -> None:
        pass

    def init(self):
        return set()

    def add(self, state, event, time_ms):
        state.add(event.get("tag"))
        return state

    def merge(self, left, right):
        return left | right

    def result(self, state):
        return sorted(t for t in state if t is not None)

    def dump(self, state):
        return sorted(state, key=str)

    def load(self, data):
        return set(data)

    def check(self, event):
        from service.core.extract import BadRecord

        if "tag" in event and not isinstance(event["tag"], str):
            raise BadRecord("wrong type: tag must be text")


def test_custom_aggregate_optional_dump_load_and_check(tmp_path):
    from service.core.extract import BadRecord

    aggregates = f'tags = {{ type = "custom", class = "{__name__}:WithDumpAndCheck" }}'
    h = Harness(session_config(gap="10m", aggregates=aggregates), tmp_path / "store")
    try:
        h.send({"user_id": "u", "ts": at("14:00"), "tag": "b"})
        h.commit()
        h.send({"user_id": "u", "ts": at("14:01"), "tag": "a"})
        with pytest.raises(BadRecord, match="tag must be text"):
            h.send({"user_id": "u", "ts": at("14:02"), "tag": 3})
        h.finish()
        assert h.emitted()[0]["value"]["tags"] == ["a", "b"]
    finally:
        h.close()


def test_which_aggregates_store_their_state_as_it_is():
    from service.core.aggregates import Sum, keeps_state_as_is

    def built(kind: str, field: str | None = "v", **extra) -> object:
        return build_aggregates((AggregateConfig("x", kind, field, **extra),))[0]

    class Rounded(Sum):
        def dump(self, state):
            return round(state)

    as_is = [kind for kind, field, _ in CASES if keeps_state_as_is(built(kind, field))]
    assert as_is == ["count", "count", "sum", "min", "max", "avg", "first", "last", "count_by"]
    assert not keeps_state_as_is(Rounded("x", "v"))  # its own dump: stored through it
    top_pages = built("custom", None, class_path="examples.aggregates:TopValues", params={"field": "page"})
    assert keeps_state_as_is(top_pages)
    assert not keeps_state_as_is(built("custom", None, class_path=f"{__name__}:WithDumpAndCheck"))
