"""Card selection (card-contract.md): one DVT card, the most urgent; one red-flag card; one imaging card per
modality; one card per other topic; on the order hooks, one appropriateness card per draft order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..facts import PatientFacts
from .base import DetailLine, Finding, Line, gate_posterior
from .causes import NO_DIAGNOSIS_LINE, assessment, differential, referred_pain
from .dvt import SCAN_ADVISED, dvt_findings
from .imaging import chronic_imaging, cyst_and_vessel_imaging, mechanical_imaging, strain_imaging, trauma_imaging
from .orders import order_findings
from .red_flags import RedFlag, red_flags

DVT_PRECEDENCE = ("dvt-urgent", "dvt-pregnancy", "dvt-postpartum", "dvt-under-18", "dvt-likely",
                  "dvt-likely-repeat-scan", "dvt-likely-after-negative-scan", "dvt-unlikely-positive-d-dimer",
                  "dvt-unlikely", "dvt-excluded-after-negative-scan", "dvt-unlikely-negative-d-dimer", "dvt-known",
                  "dvt-risk-factors-escalated", "dvt-risk-factors")


def _dvt_in_force(candidates: list[Finding]) -> Finding | None:
    if not candidates:
        return None
    ranked = sorted(candidates, key=lambda f: DVT_PRECEDENCE.index(f.card_id))
    chosen = ranked[0]
    others = ranked[1:]
    if others:
        # Only what the chosen card does not show already: the card builder leaves out data shown above, and the
        # whole block when nothing is left.
        also: list[DetailLine] = ["**Also applies (shown here, not as separate cards):**"]
        for other in others:
            also += [replace(line, rules=other.rules + line.rules) if isinstance(line, Line) else line
                     for line in other.evidence]
        chosen = replace(chosen, extra=chosen.extra + (tuple(also),))
    return chosen


def _with_assessment_folded(differential: list[Finding], assessment: list[Finding]) -> list[Finding]:
    """Card contract: two cards never say the same thing. With a differential card, K-14's advice is one line of
    it (its data among the differential's) and there is no assessment card; the assessment card is for K-14 alone."""
    if not (differential and assessment):
        return differential + assessment
    causes, k14 = differential[0], assessment[0]
    new_lines = tuple(line for line in k14.evidence if line not in causes.evidence and line != NO_DIAGNOSIS_LINE)
    return [replace(causes, rules=causes.rules + k14.rules, evidence=causes.evidence + new_lines,
                    folded=(k14.card_id,))]


@dataclass(frozen=True)
class RuleBook:
    """What the rules read from the card definitions: each imaging card's modality, and the red-flag table."""

    modality_of: dict[str, str]
    red_flags: tuple[RedFlag, ...]

    @classmethod
    def from_cards(cls, cards: dict[str, Any]) -> RuleBook:
        return cls({cid: d["modality"] for cid, d in cards["cards"].items() if "modality" in d},
                   tuple(RedFlag.from_row(row) for row in cards["red_flags"]))


def evaluate(facts: PatientFacts, hook: str, book: RuleBook) -> list[Finding]:
    """All findings for a hook, after the contract's selection.

    ``book`` maps each imaging card id to its modality (from cards.toml), so that only one imaging card per
    modality is kept, and carries the red-flag table.
    """
    dvt = _dvt_in_force(dvt_findings(facts))
    flags = red_flags(facts, book.red_flags)
    if hook == "patient-view":
        findings: list[Finding] = []
        if dvt is not None:
            findings.append(dvt)
        findings += flags
        if gate_posterior(facts):
            imaging = trauma_imaging(facts) + cyst_and_vessel_imaging(facts) + mechanical_imaging(facts) + \
                chronic_imaging(facts) + strain_imaging(facts)
            if dvt is not None and any(s.orderable == "venous-duplex" for s in dvt.suggestions):
                # K-08: the venous duplex the DVT card suggests shows the cyst too; no separate knee ultrasound
                imaging = [f for f in imaging if f.card_id != "us-bakers-cyst"]
            seen_modalities: set[str] = set()
            for finding in imaging:
                modality = book.modality_of[finding.card_id]
                if modality not in seen_modalities:
                    seen_modalities.add(modality)
                    findings.append(finding)
            findings += referred_pain(facts) + _with_assessment_folded(differential(facts), assessment(facts))
        return findings
    # Order hooks: appropriateness per draft order; the DVT card when a DVT test is being ordered or
    # the calf is hot and swollen (D-06); red flags are never suppressed.
    findings = order_findings(facts, dvt, red_flag=bool(flags))
    ordering_dvt_test = any(o.modality in ("venous-duplex", "d-dimer") for o in facts.draft_orders)
    if dvt is not None and (ordering_dvt_test or dvt.card_id == "dvt-urgent"):
        if ordering_dvt_test and dvt.card_id in SCAN_ADVISED:
            dvt = replace(dvt, rules=dvt.rules + ("D-06",), extra=(
                "**The venous duplex being ordered is the right test:** ask for the result within 4 hours.",) + dvt.extra)
        findings.insert(0, dvt)
    return findings + flags
