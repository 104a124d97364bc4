"""The aggregate types a config may name are the types service.core implements."""

from __future__ import annotations

import pytest

from service.config.schema import AGGREGATE_TYPES, AggregateConfig, ConditionConfig
from service.core import aggregates
from service.core.aggregates import IMPLEMENTATIONS, build_aggregate


def test_declared_and_implemented_type_names_are_the_same_set():
    implemented = [cls.type_name for cls in IMPLEMENTATIONS]
    assert len(implemented) == len(set(implemented)), "two classes claim the same type_name"
    assert set(implemented) == set(AGGREGATE_TYPES)


@pytest.mark.parametrize("kind", sorted(AGGREGATE_TYPES))
def test_each_declared_type_builds_to_its_class(kind):
    declared = AGGREGATE_TYPES[kind]
    config = AggregateConfig(
        name="a",
        type=kind,
        field="v" if declared.needs_field else None,
        condition=ConditionConfig("v") if declared.condition else None,
        class_path="examples.aggregates:TopValues" if declared.custom else None,
        params={"field": "page"} if declared.custom else {},
    )
    built = build_aggregate(config)
    assert type(built).type_name == kind
    assert built.name == "a"


def test_a_declared_type_without_implementation_is_a_clear_error(monkeypatch):
    monkeypatch.delitem(aggregates._BY_TYPE, "sum")
    with pytest.raises(NotImplementedError, match=r"type 'sum' has no implementation.*type_name = 'sum'"):
        build_aggregate(AggregateConfig("total", "sum", "v"))
