"""Session windows whose sessions also carry the state of the pipeline's rules.

Kept apart from ``SessionWindows`` so a pipeline without rules runs the plain
class and pays nothing for them. Each session holds one state per rule beside
its aggregates; the hooks below call the rules at the moments a session
changes (``service.core.rules``) and collect what they derive into the caller's
``derived`` list.
"""

from __future__ import annotations

from typing import Any

from service.core.aggregates import Aggregate
from service.core.rules.base import Derived, Rule
from service.core.windows.session import Session, SessionWindows


class SessionWindowsWithRules(SessionWindows):
    """Every session of this kind has its rule states (``_new`` and ``load`` set them): the
    ``assert session.rules is not None`` below say so to the type checker."""

    def __init__(
        self,
        gap_ms: int,
        grace_ms: int,
        aggregates: tuple[Aggregate, ...],
        rules: tuple[Rule, ...],
        max_duration_ms: int | None = None,
        max_events: int | None = None,
    ) -> None:
        super().__init__(gap_ms, grace_ms, aggregates, max_duration_ms, max_events)
        self.rules = rules
        # The event being added, for the hooks ``SessionWindows.add`` calls;
        # set at the start of every ``add``.
        self._source = 0
        self._stream_time = 0
        self._out: list[Derived] = []

    def add(
        self, sessions: list[Session], time_ms: int, event: dict[str, Any], limit: int,
        source: int = 0, derived: list[Derived] | None = None, stream_time: int | None = None,
    ) -> int:
        self._source = source
        # Rules forget what no future event can match, and a future event may come
        # from a slower source than this one: they go by the task's stream time, not
        # by this event's limit (service.core.watermarks).
        self._stream_time = limit if stream_time is None else stream_time
        self._out = derived if derived is not None else []
        return super().add(sessions, time_ms, event, limit)

    def next_close(self, sessions: list[Session]) -> int:
        """The earliest session close or rule deadline: the store's index wakes the key then."""
        close = super().next_close(sessions)
        for session in sessions:
            assert session.rules is not None
            for rule, state in zip(self.rules, session.rules):
                deadline = rule.deadline(state)
                if deadline is not None and deadline < close:
                    close = deadline
        return close

    def pop_closed(self, sessions: list[Session], stream_time: int, derived: list[Derived] | None = None) -> list[Session]:
        out = derived if derived is not None else []
        for session in sessions:
            assert session.rules is not None
            session.rules = [rule.expire(state, stream_time, out) for rule, state in zip(self.rules, session.rules)]
        done = super().pop_closed(sessions, stream_time)
        for session in done:
            self._close(session, out)
        return done

    def pop_all(self, sessions: list[Session], derived: list[Derived] | None = None) -> list[Session]:
        out = derived if derived is not None else []
        done = super().pop_all(sessions)
        for session in done:
            self._close(session, out)
        return done

    def dump(self, sessions: list[Session]) -> list[Any]:
        """``[start, end, count, aggregates, {rule key: rule state}]`` per session."""
        rows = super().dump(sessions)
        for row, session in zip(rows, sessions):
            assert session.rules is not None
            row.append(self._dump_rules(session.rules))
        return rows

    def load(self, data: list[Any]) -> list[Session]:
        sessions = super().load(data)
        for session, item in zip(sessions, data):
            session.rules = self._load_rules(item[4] if len(item) > 4 else {})
        return sessions

    def _dump_rules(self, states: list[Any]) -> dict[str, Any]:
        return {rule.state_key: rule.dump(state) for rule, state in zip(self.rules, states)}

    def _load_rules(self, stored: dict[str, Any]) -> list[Any]:
        """Rule states by key, so a rule added to a running pipeline starts empty in its open
        sessions and a removed one is dropped, instead of states landing on the wrong rule."""
        return [rule.load(stored[rule.state_key]) if rule.state_key in stored else rule.init() for rule in self.rules]

    # -- hooks called by SessionWindows.add -----------------------------------

    def _new(self, time_ms: int, event: dict[str, Any]) -> Session:
        session = super()._new(time_ms, event)
        session.rules = [rule.init() for rule in self.rules]
        self._add_to_rules(session.rules, time_ms, event)
        return session

    def _add_event(self, session: Session, time_ms: int, event: dict[str, Any]) -> None:
        super()._add_event(session, time_ms, event)
        assert session.rules is not None
        self._add_to_rules(session.rules, time_ms, event)

    def _absorb(self, target: Session, other: Session) -> None:
        super()._absorb(target, other)
        out = self._out
        assert target.rules is not None and other.rules is not None
        target.rules = [rule.merge(a, b, out) for rule, a, b in zip(self.rules, target.rules, other.rules)]

    def _add_to_rules(self, states: list[Any], time_ms: int, event: dict[str, Any]) -> None:
        source, stream_time, out = self._source, self._stream_time, self._out
        for i, rule in enumerate(self.rules):
            states[i] = rule.add(states[i], time_ms, event, source, stream_time, out)

    def _close(self, session: Session, out: list[Derived]) -> None:
        bounds = self.bounds(session)
        values = self.values(session)
        assert session.rules is not None
        for rule, state in zip(self.rules, session.rules):
            rule.close(state, bounds, values, out)

