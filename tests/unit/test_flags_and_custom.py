"""Session flags (any/all of a condition), event conditions and custom aggregates."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from service.config import AggregateConfig, ConditionConfig
from service.core.aggregates import build_aggregates
from service.core.conditions import compile_condition
from tests.helpers import Harness, session_config


def at(hhmm: str) -> int:
    hours, minutes = map(int, hhmm.split(":"))
    return int(datetime(2017, 7, 5, hours, minutes, tzinfo=UTC).timestamp() * 1000)


# -- conditions ---------------------------------------------------------------


@pytest.mark.parametrize(
    "equals,value,expected",
    [
        (("checkout",), "checkout", True),
        (("checkout",), "page", False),
        (("checkout",), None, False),
        (("checkout", "payment"), "payment", True),
        ((1,), 1, True),
        ((1,), 1.0, True),
        ((1,), True, False),
        ((True,), 1, False),
        ((True,), True, True),
        (("1",), 1, False),
        ((1,), "1", False),
        (("a", 2), 2, True),
        (("a", 2), "a", True),
        (("a", 2), "2", False),
        (None, 0, True),
        (None, False, True),
        (None, None, False),
    ],
)
def test_condition_compares_json_values(equals, value, expected):
    event = {} if value is None else {"v": value}
    assert compile_condition(ConditionConfig("v", equals))(event) is expected


def test_condition_reads_dotted_paths():
    matches = compile_condition(ConditionConfig("details.page", ("/cart",)))
    assert matches({"details": {"page": "/cart"}})
    assert not matches({"details": {"page": "/home"}})
    assert not matches({"details": "flat"})


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
