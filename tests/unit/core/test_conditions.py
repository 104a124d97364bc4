"""Event conditions: JSON values compared as JSON compares them, fields found by dotted paths."""

from __future__ import annotations

import pytest

from service.config import ConditionConfig
from service.core.conditions import compile_condition


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
