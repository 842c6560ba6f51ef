"""Rules step: pure functions of the facts. Why did a card fire? The answer is in this file.

Each rule returns ``Finding``s naming the card definition to use (cards/cards.toml), the evidence
lines behind it, and any order it concerns. Rule ids are those of shared/clinical/rules.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .facts import DraftOrder, Evidence, PatientFacts

CHRONIC_WEEKS = 6  # rules.md §3 "Chronic": AAFP's 6 weeks (ACR's ≈3 months is UNRESOLVED there)
XRAY_LOOKBACK_DAYS = 365  # rules.md K-05/K-07: 12-month look-back for a prior radiograph
INJURY_LOOKBACK_DAYS = 42  # rules.md K-07: no knee injury in the last 6 weeks
ACR_MIN_AGE = 5


@dataclass(frozen=True)
class Finding:
    card_id: str
    evidence: tuple[str, ...]
    reads: frozenset[str]  # FHIR resource types whose absence or rejection could change this finding
    side: str = "unknown"
    order: DraftOrder | None = None
    reasons: tuple[str, ...] = field(default=())  # references the suggested order is for


def _same_knee(a: str, b: str) -> bool:
    # Unknown laterality counts as the same knee (rules.md G-06, conservative).
    return "unknown" in (a, b) or "both" in (a, b) or a == b


def differential(facts: PatientFacts) -> list[Finding]:
    """L-07: pain behind the knee and no diagnosis on record that explains it."""
    if not facts.posterior_knee_pain or facts.explaining_diagnoses:
        return []
    lines = tuple(f"- Posterior knee pain: {e.line()}" for e in facts.posterior_knee_pain)
    return [Finding("differential", lines, frozenset({"Condition"}), facts.painful_side)]


def _recent_xrays(facts: PatientFacts, side: str) -> list[Evidence]:
    return [
        i.evidence
        for i in facts.imaging
        if i.modality == "xray"
        and _same_knee(i.evidence.side, side)
        and (i.evidence.when is None or (facts.today - i.evidence.when).days <= XRAY_LOOKBACK_DAYS)
    ]


def mri_before_xray(facts: PatientFacts, orders: tuple[DraftOrder, ...]) -> list[Finding]:
    """K-07: knee MRI ordered for chronic knee pain without a knee radiograph in 12 months."""
    weeks = facts.weeks_of_pain()
    if weeks is None or weeks < CHRONIC_WEEKS:
        return []
    if facts.age is not None and facts.age < ACR_MIN_AGE:
        return []
    if facts.recent_knee_injuries or facts.mechanical_or_red_flags:
        return []
    findings = []
    for order in orders:
        if order.modality != "mri":
            continue
        side = order.side if order.side != "unknown" else facts.painful_side
        if _recent_xrays(facts, side):
            continue
        pain = [e for e in facts.posterior_knee_pain if _same_knee(e.side, side)]
        if not pain:
            continue
        onset = facts.pain_onset.isoformat() if facts.pain_onset else "unknown"
        lines = (
            *(f"- Knee pain: {e.line()}" for e in pain),
            f"- Pain for {int(weeks)} weeks (since {onset}): chronic (6 weeks or more)",
            f"- No knee radiograph of this knee on record in the {XRAY_LOOKBACK_DAYS} days before "
            f"{facts.today.isoformat()}",
            "- No knee injury in the last 6 weeks, and no locking, giving way or red flag on record",
        )
        findings.append(
            Finding(
                "mri-before-xray",
                lines,
                frozenset({"Condition", "Procedure", "DiagnosticReport", "Observation", "Patient"}),
                side,
                order=order,
                reasons=tuple(e.reference for e in pain if e.reference.startswith("Condition/")),
            )
        )
    return findings


PATIENT_VIEW_RULES: tuple[Callable[[PatientFacts], list[Finding]], ...] = (differential,)


def evaluate(facts: PatientFacts, hook: str, orders: tuple[DraftOrder, ...] = ()) -> list[Finding]:
    if hook == "patient-view":
        return [f for rule in PATIENT_VIEW_RULES for f in rule(facts)]
    return mri_before_xray(facts, orders)
