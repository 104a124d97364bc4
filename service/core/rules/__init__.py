"""Rules: records derived from patterns in a session (see ``service.core.rules.base``)."""

from __future__ import annotations

from service.config import PipelineConfig
from service.core.rules.absence import AbsenceUntilClose, AbsenceWithin
from service.core.rules.base import Derived, Keeper, Rule
from service.core.rules.pairing import Pairing
from service.core.rules.sequence import Sequence

__all__ = ["Derived", "Keeper", "Rule", "build_rules"]


def build_rules(config: PipelineConfig) -> tuple[Rule, ...]:
    """The pipeline's rules, in config order, then its pairing."""
    grace = config.window.grace_ms
    rules: list[Rule] = []
    for rule in config.rules:
        if rule.type == "sequence":
            rules.append(Sequence(rule, grace))
        elif rule.within_ms is None:
            rules.append(AbsenceUntilClose(rule))
        else:
            rules.append(AbsenceWithin(rule, grace))
    if config.pairing is not None:
        rules.append(Pairing(config))
    return tuple(rules)
