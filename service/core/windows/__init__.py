"""Window logic, free of Kafka and storage: lists of windows per key, changed in place.

Every decision about time goes through ``service.core.closing.closed``.
"""

from __future__ import annotations

from typing import Any

from service.config import WindowConfig
from service.core.aggregates import Aggregate
from service.core.closing import closed
from service.core.windows.base import WindowKind
from service.core.windows.fixed import FixedWindows
from service.core.windows.session import SessionWindows
from service.core.windows.with_rules import SessionWindowsWithRules

__all__ = ["WindowKind", "build_window_kind", "closed"]


def build_window_kind(config: WindowConfig, aggregates: tuple[Aggregate, ...], rules: tuple[Any, ...] = ()) -> WindowKind:
    if config.type == "session" and rules:
        return SessionWindowsWithRules(
            gap_ms=config.gap_ms,
            grace_ms=config.grace_ms,
            aggregates=aggregates,
            rules=rules,
            max_duration_ms=config.max_duration_ms,
            max_events=config.max_events,
        )
    if config.type == "session":
        return SessionWindows(
            gap_ms=config.gap_ms,
            grace_ms=config.grace_ms,
            aggregates=aggregates,
            max_duration_ms=config.max_duration_ms,
            max_events=config.max_events,
        )
    return FixedWindows(
        size_ms=config.size_ms,
        advance_ms=config.advance_ms,
        grace_ms=config.grace_ms,
        aggregates=aggregates,
    )
