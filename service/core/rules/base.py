"""Rules: records derived from patterns in a session, declared in the config.

A rule keeps a small state in every open session, next to the aggregates. The
state is part of the session: it goes to RocksDB and the changelog with it,
merges when sessions merge, and disappears when the session closes. So a rule
survives crashes and rebalances exactly as the session does, and the records
it derives ride the same transaction as everything else.

Rules see events only at four moments, each called by
``SessionWindowsWithRules``:

- ``add``: an accepted event joined the session;
- ``merge``: an out-of-order event joined two sessions into one;
- ``expire``: stream time passed a ``deadline`` the rule asked for;
- ``close``: the session is final.

Whatever a rule derives at one of these moments it appends to ``out`` as a
``Derived``; the processor adds the key, renders and produces it.

Every rule is written so that what it derives depends only on the set of
accepted events, never on the order they arrived in (docs/rules.md says why
each one is).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.core.extract import field_getter


@dataclass(frozen=True, slots=True)
class Derived:
    """A record a rule derived, before the processor renders it with the key."""

    topic: str
    #: The record's ``event`` name in the pipeline's envelope; None when
    #: ``values`` already is the whole record (pairing).
    event: str | None
    #: Event time the record is about; it becomes the envelope's ``timestamp``.
    moment_ms: int
    values: dict[str, Any]
    headers: tuple[tuple[str, bytes], ...] = ()


class Rule:
    """Base class: a rule does nothing at the moments it does not override."""

    name: str = ""
    #: What the state looks like; with the name it keys the state in the store.
    kind: str = ""

    @property
    def state_key(self) -> str:
        """``kind:name``: a rule whose kind changed in the config starts afresh rather than misreading its state."""
        return f"{self.kind}:{self.name}"

    def init(self) -> Any:
        return None

    def add(self, state: Any, time_ms: int, event: dict[str, Any], source: int, stream_time: int, out: list[Derived]) -> Any:
        return state

    def merge(self, left: Any, right: Any, out: list[Derived]) -> Any:
        return left

    def deadline(self, state: Any) -> int | None:
        """A close time (in the sense of ``service.core.windows.closed``) at which ``expire`` has work, or None."""
        return None

    def expire(self, state: Any, stream_time: int, out: list[Derived]) -> Any:
        return state

    def close(self, state: Any, bounds: tuple[int, int], values: dict[str, Any], out: list[Derived]) -> None:
        return None

    def dump(self, state: Any) -> Any:
        return state

    def load(self, data: Any) -> Any:
        return data


class Keeper:
    """The part of an event a rule carries into its derived record: chosen fields, or all of it."""

    def __init__(self, paths: tuple[str, ...] | None) -> None:
        self.paths = paths
        self._getters = tuple((p, field_getter(p)) for p in paths or ())

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        if self.paths is None:
            return event
        kept = {}
        for path, get in self._getters:
            value = get(event)
            if value is not None:
                kept[path] = value
        return kept
