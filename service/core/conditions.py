"""Conditions on one event: "field ``type`` equals ``checkout``".

Session flags (``any``/``all``) and the rules in ``service.core.rules`` pick events
with the same small vocabulary, written in the config as a table::

    { field = "type", equals = "checkout" }          # the value equals this one
    { field = "type", in = ["checkout", "payment"] }  # the value is one of these
    { field = "details.coupon" }                      # the field is present and not null

Values compare as JSON values: ``equals = 1`` matches ``1`` and ``1.0`` but not
``true``, and ``equals = "1"`` does not match ``1``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from service.config import ConditionConfig, Scalar
from service.core.extract import field_getter

Condition = Callable[[dict[str, Any]], bool]


def compile_condition(config: ConditionConfig) -> Condition:
    """A predicate over a decoded event."""
    get = field_getter(config.field)
    if config.equals is None:
        return lambda event: get(event) is not None
    options = config.equals
    if len(options) == 1 and isinstance(options[0], str):
        # The most common case (one event type): text equals only text, so == suffices.
        text = options[0]
        if "." not in config.field:
            name = config.field  # a top-level field: one dict lookup, no getter call
            return lambda event: event.get(name) == text
        return lambda event: get(event) == text
    if all(isinstance(o, str) for o in options):
        # Several event types: a set lookup, for text values only (a dict is not hashable).
        texts = frozenset(options)

        def is_one_of(event: dict[str, Any]) -> bool:
            value = get(event)
            return isinstance(value, str) and value in texts

        return is_one_of
    return lambda event: any(_same(get(event), option) for option in options)


def _same(value: Any, option: Scalar) -> bool:
    if isinstance(option, bool) or isinstance(value, bool):
        return value is option
    if isinstance(option, str) or isinstance(value, str):
        return value == option and isinstance(value, str) and isinstance(option, str)
    return isinstance(value, (int, float)) and value == option
