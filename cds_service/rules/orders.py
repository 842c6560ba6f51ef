"""Order hooks: appropriateness of each draft order (K-03, K-07, D-06, D-07).
"""

from __future__ import annotations

from ..facts import DraftOrder, PatientFacts
from .base import (
    ACR_MIN_AGE,
    ADULT_AGE,
    INJURY_LOOKBACK_DAYS,
    Finding,
    Suggest,
    acute_injuries,
    chronic_line,
    condition_refs,
    is_chronic,
    lines_of,
    same_side,
    within,
    xrays_of_knee,
)
from .dvt import NO_DUPLEX_OBJECTION, best_wells, recent_ddimer
from .imaging import cyst_imaging, ottawa, pittsburgh


def order_findings(facts: PatientFacts, dvt_in_force: Finding | None, red_flag: bool) -> list[Finding]:
    out = []
    for order in facts.draft_orders:
        if order.modality == "mri":
            out += mri_before_xray(facts, order, red_flag)
        elif order.modality == "xray":
            out += xray_not_required(facts, order, red_flag)
        elif order.modality == "venous-duplex":
            out += duplex_check(facts, order, dvt_in_force)
    return out


def mri_before_xray(facts: PatientFacts, order: DraftOrder, red_flag: bool) -> list[Finding]:
    """K-07: knee MRI ordered for chronic knee pain without a knee radiograph in 12 months."""
    if not is_chronic(facts) or (facts.age is not None and facts.age < ACR_MIN_AGE):
        return []
    if any(within(facts, e.when, INJURY_LOOKBACK_DAYS) or e.when is None for e in facts.cond("knee-injury")):
        return []
    if facts.cond("mechanical-or-red-flag") or facts.finding("knee-locking") or red_flag:
        return []
    side = order.side if order.side != "unknown" else facts.painful_side
    if xrays_of_knee(facts, side):
        return []
    pain = [e for e in facts.posterior_knee_pain if same_side(e.side, side)]
    if not pain:
        return []
    lines = (
        *lines_of("Knee pain", pain),
        chronic_line(facts),
        f"- No radiograph of this knee on record in the 12 months before {facts.today.isoformat()}",
        "- No knee injury in the last 6 weeks, and no locking, giving way or red flag on record",
    )
    return [Finding("mri-before-xray", ("K-07",), lines, side, order=order, reasons=condition_refs(pain),
                    suggestions=(Suggest("xray-standing", "replace", replaces=order),))]


def xray_not_required(facts: PatientFacts, order: DraftOrder, red_flag: bool) -> list[Finding]:
    """K-03: knee X-ray ordered after an injury with both decision rules negative."""
    ott, _ = ottawa(facts)
    pitt, _ = pittsburgh(facts)
    if ott is not False or pitt is True:
        return []
    if facts.cond("knee-effusion") or facts.finding("unable-bear-weight-4-steps") or red_flag:
        return []
    injuries = acute_injuries(facts)
    lines = lines_of("Knee injury", injuries) + (
        f"- Ottawa knee rule negative: age {facts.age}, no isolated patellar or fibular-head tenderness, able to "
        "flex to 90° and to bear weight",
        "- Pittsburgh knee rule negative" + (f" (mechanism: {facts.injury_mechanism})" if facts.injury_mechanism
                                             else " (no fall or blunt trauma recorded)"),
        "- No effusion on record")
    return [Finding("xray-not-required", ("K-03",), lines, order.side, order=order,
                    suggestions=(Suggest("remove", "remove", replaces=order, recommended=False),))]


def duplex_check(facts: PatientFacts, order: DraftOrder, dvt_in_force: Finding | None) -> list[Finding]:
    """D-06 / D-07: a venous duplex order is never objected to when DVT is likely or urgent."""
    urgent_or_likely = dvt_in_force is not None and dvt_in_force.card_id in NO_DUPLEX_OBJECTION
    if urgent_or_likely or facts.pregnant or facts.postpartum or (facts.age is not None and facts.age < ADULT_AGE):
        return []  # D-06: no objection
    if recent_ddimer(facts) is not None or facts.recent_dvt:
        return []
    if facts.calf_warmth and facts.swelling_or_tenderness:
        return []
    wells = dvt_in_force.wells if dvt_in_force is not None and dvt_in_force.wells else best_wells(facts)
    if wells.likely:
        return []
    cyst = cyst_imaging(facts)  # [2026-11-26] D-07 + K-08: the study that answers the cyst question, offered too
    return [Finding("d-dimer-first", ("D-07", *cyst[0].rules) if cyst else ("D-07",),
                    (f"- Venous duplex ordered: {order.label}", "- No D-dimer result in the last 24 hours",
                     *(cyst[0].evidence if cyst else ())), wells.leg, order=order, wells=wells,
                    reasons=cyst[0].reasons if cyst else (),
                    suggestions=(Suggest("d-dimer", "d-dimer"),) + ((Suggest("us-knee", "cyst"),) if cyst else ()),
                    folded=("us-bakers-cyst",) if cyst else ())]
