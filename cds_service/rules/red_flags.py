"""Red flags (rules.md §5) as a table: the rows live in cards/cards.toml, this module only evaluates them.

One card lists every flag that fires, at the highest indicator. A flag fires when its gate holds and every
evidence source of any one of its alternatives has evidence; the sources are conditions by value set, local exam
findings, and three the rules compute (a recent knee injury, severe pain, fever).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..facts import Evidence, PatientFacts
from .base import ACUTE_DAYS, DetailLine, Finding, Line, acute_injuries, within

_INDICATOR_RANK = {"info": 0, "warning": 1, "critical": 2}
SEVERE_PAIN = 7  # RF-02: a pain score of 7/10 or more after trauma


@dataclass(frozen=True)
class RedFlag:
    """One row of the red-flag table."""

    id: str
    name: str
    indicator: str
    gate: str  # knee | limb
    when: tuple[tuple[str, ...], ...]  # alternatives, each a set of evidence sources that must all be present
    action: str
    urgency: str  # what to do, in a few words, for the card summary

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RedFlag:
        return cls(row["id"], row["name"], row["indicator"], row["gate"], tuple(tuple(a) for a in row["when"]),
                   row["action"], row["urgency"])


def _severe_pain(facts: PatientFacts) -> tuple[Evidence, ...]:
    pain = facts.pain_score
    severe = [pain.evidence] if pain is not None and pain.score >= SEVERE_PAIN and \
        within(facts, pain.evidence.when, ACUTE_DAYS) else []
    severe += [e for e in facts.finding("unable-bear-weight-4-steps") if within(facts, e.when, ACUTE_DAYS)]
    return tuple(severe)


_COMPUTED: dict[str, Callable[[PatientFacts], tuple[Evidence, ...]]] = {
    "recent-knee-injury": acute_injuries,
    "severe-pain": _severe_pain,
    "fever": lambda facts: facts.fever,
}


def evidence_of(facts: PatientFacts, source: str) -> tuple[Evidence, ...]:
    kind, _, name = source.partition(":")
    if kind == "condition":
        return facts.cond(name)
    if kind == "finding":
        return facts.finding(name)
    return _COMPUTED[source](facts)


def _fired(facts: PatientFacts, flag: RedFlag) -> tuple[Evidence, ...]:
    """The evidence of every alternative whose sources are all present (none: the flag does not fire)."""
    found: list[Evidence] = []
    for alternative in flag.when:
        evidence = [evidence_of(facts, source) for source in alternative]
        if all(evidence):
            found += [e for group in evidence for e in group]
    return tuple(found)


def red_flags(facts: PatientFacts, table: tuple[RedFlag, ...]) -> list[Finding]:
    local = bool(facts.posterior_knee_pain) or facts.knee_pain_unknown_location
    limb = local or facts.any_knee_pain or bool(facts.leg_signs)
    gates = {"knee": local, "limb": limb}
    fired = [(flag, evidence) for flag in table if gates[flag.gate] and (evidence := _fired(facts, flag))]
    if not fired:
        return []
    indicator = max((flag.indicator for flag, _ in fired), key=_INDICATOR_RANK.__getitem__)
    lines: list[DetailLine] = []
    for flag, evidence in fired:
        lines.append(f"- **{flag.name}**:")
        lines += [Line("  -", (e,), (flag.id,), refer_back=True) for e in evidence]
    # The summary names every flag; a single flag's urgency too (several: the card's default).
    names = [flag.name for flag, _ in fired]
    summary = {"red_flags": names[0]} if len(names) == 1 else {"red_flags": "; ".join(names[:-1]) + " and " + names[-1]}
    if len(fired) == 1:
        summary["urgency"] = fired[0][0].urgency
    return [Finding("red-flag", tuple(flag.id for flag, _ in fired), tuple(lines), facts.painful_side,
                    indicator=indicator, extra=tuple(flag.action for flag, _ in fired),
                    summary_values=tuple(summary.items()))]
