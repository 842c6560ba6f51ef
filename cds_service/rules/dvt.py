"""DVT pathway (rules.md §1 Wells, §2 D-01..D-10, P-01/P-02): which DVT card applies and why.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from ..facts import DDimer, Evidence, ImagingOnRecord, PatientFacts, WellsItem
from .base import (
    ADULT_AGE,
    Block,
    DetailLine,
    Finding,
    Line,
    Suggest,
    WellsResult,
    gate_safety,
    lines_of,
    pain_lines,
    same_side,
    wells_line,
    wells_points,
    within,
)

DDIMER_HOURS = 24
# DVT cards whose advice is a leg vein scan now: a duplex being ordered is the right test (D-06).
SCAN_ADVISED = frozenset({"dvt-urgent", "dvt-likely", "dvt-pregnancy", "dvt-postpartum", "dvt-under-18",
                          "dvt-unlikely-positive-d-dimer", "dvt-likely-repeat-scan"})
ESCALATION_POINTS = 2  # D-04: the record alone holds a "likely" Wells score (UNRESOLVED default)
_DUPLEX = Suggest("venous-duplex", "duplex")
# ... and those where a duplex order is never objected to (D-06/D-07): a known DVT, a negative scan being followed up.
NO_DUPLEX_OBJECTION = SCAN_ADVISED | {"dvt-known", "dvt-likely-after-negative-scan"}
NEGATIVE_SCAN_DAYS = 7  # D-10: a negative venous duplex in the last 7 days


def symptomatic_legs(facts: PatientFacts) -> list[str]:
    sides = {e.side for e in facts.leg_signs}
    legs = sorted({"left", "right"} & sides) if "both" not in sides else ["left", "right"]
    if legs:
        return legs
    painful = facts.painful_side
    return ["left", "right"] if painful == "both" else [painful]


def wells_score(facts: PatientFacts, leg: str, both_legs: bool = False) -> WellsResult:
    """Two-level Wells (rules.md §1) for one leg: leg findings of the other leg are not added (G-06)."""
    chosen: dict[str, WellsItem] = {}
    for item in facts.wells_items:
        if item.leg_specific:
            if leg != "unknown" and item.evidence.side not in (leg, "unknown", "both"):
                continue
            if both_legs and item.paired:
                continue  # G-06: with both legs symptomatic, only an explicit difference finding scores
        chosen.setdefault(item.criterion, item)
    score = sum(wells_points(i) for i in chosen.values())
    return WellsResult(score, leg, tuple(chosen.values()))


def best_wells(facts: PatientFacts) -> WellsResult:
    legs = symptomatic_legs(facts)
    results = [wells_score(facts, leg, both_legs=len(legs) > 1) for leg in legs]
    return max(results, key=lambda r: r.score)


def recent_ddimer(facts: PatientFacts) -> DDimer | None:
    recent = []
    for test in facts.d_dimers:
        at = test.at
        if isinstance(at, datetime):
            fresh = timedelta(0) <= facts.now - at <= timedelta(hours=DDIMER_HOURS)
        else:
            day = at if isinstance(at, date) else test.evidence.when
            fresh = day is not None and 0 <= (facts.today - day).days <= 1
        if fresh:
            recent.append(test)
    if not recent:
        return None
    return max(recent, key=lambda t: str(t.at))


def _recent_negative_scan(facts: PatientFacts, leg: str) -> ImagingOnRecord | None:
    """D-10: the newest normal venous duplex of the symptomatic leg in the last 7 days."""
    scans = [i for i in facts.imaging if i.modality == "venous-duplex" and i.result == "normal"
             and same_side(i.evidence.side, leg) and within(facts, i.evidence.when, NEGATIVE_SCAN_DAYS)]
    return max(scans, key=lambda i: i.evidence.when or date.min, default=None)


def _ddimer_since(facts: PatientFacts, day: date | None) -> DDimer | None:
    """The newest D-dimer with a readable result taken on or after a day."""
    tests = [t for t in facts.d_dimers if t.positive is not None and t.evidence.when is not None
             and day is not None and t.evidence.when >= day]
    return max(tests, key=lambda t: str(t.at or t.evidence.when), default=None)


def _mimic_note(facts: PatientFacts) -> tuple[Block, ...]:
    """D-05: an explaining diagnosis adds a sentence, never suppresses the DVT card."""
    mimics = facts.cond("bakers-cyst") + facts.cond("calf-strain") + facts.cond("cellulitis-leg") + \
        facts.cond("hamstring-strain")
    if not mimics:
        return ()
    return ((Line("**Another diagnosis is on record:**", tuple(mimics), ("D-05",), refer_back=True),
             "It does not exclude DVT: a ruptured Baker's cyst, calf tear or cellulitis can look the same. Follow the "
             "DVT pathway above; a venous duplex of the leg shows a cyst as well as a clot."),)


# VTE risk factors (rules.md R-01..R-08): kind -> (rule id, label). R-02 and R-03 are Wells items' criteria.
RISK_FACTORS: dict[str, tuple[str, str]] = {
    "obesity": ("R-01", "Obesity"),
    "active-cancer": ("R-02", "Active cancer"),
    "bedridden-or-major-surgery": ("R-03", "Recent surgery, hospital stay or immobility"),
    "long-haul-travel": ("R-04", "Long-haul travel (more than 4 hours seated)"),
    "pregnancy": ("R-05", "Pregnancy"),
    "postpartum": ("R-05", "Postpartum (6 weeks or less)"),
    "postpartum-late": ("R-05", "Postpartum 6-12 weeks (risk still raised)"),
    "oestrogen": ("R-06", "Oestrogen-containing contraception or HRT"),
    "previous-vte": ("R-07", "Previous venous thromboembolism"),
    "thrombophilia": ("R-08", "Thrombophilia"),
}
_HISTORY_CRITERIA = ("active-cancer", "paralysis-or-immobilisation", "bedridden-or-major-surgery", "previous-dvt")


def risk_factors(facts: PatientFacts) -> list[tuple[str, str, Evidence]]:
    """(rule id, label, evidence) of every risk factor on record, obesity first, then the Wells items that are ones."""
    kinds = [(r.kind, r.evidence) for r in facts.risk_factors if r.kind == "obesity"]
    kinds += [(i.criterion, i.evidence) for i in facts.wells_items if i.criterion in ("active-cancer",
                                                                                     "bedridden-or-major-surgery")]
    kinds += [(r.kind, r.evidence) for r in facts.risk_factors if r.kind != "obesity"]
    return [(*RISK_FACTORS[kind], evidence) for kind, evidence in kinds]


def _anticoagulant_note(facts: PatientFacts) -> tuple[Block, ...]:
    """D-08 [2026-11-26]: an anticoagulant for another reason is not a known DVT, but it changes management."""
    if not facts.anticoagulation or facts.recent_dvt:
        return ()
    return (("**On an anticoagulant (not for DVT):**",
             *(Line("-", (e,), ("D-08",), refer_back=True) for e in facts.anticoagulation),
             "A negative D-dimer is less reliable on anticoagulation, and the bleeding risk weighs on any treatment."),)


def _risk_lines(facts: PatientFacts) -> tuple[Block, ...]:
    risks = risk_factors(facts)
    if not risks:
        return ()
    block: list[DetailLine] = ["**VTE risk factors on record:**"]
    seen = set()
    for rule, label, evidence in risks:
        key = (rule, evidence.reference)
        if key not in seen:
            seen.add(key)
            block.append(Line(f"- {label}:", (evidence,), (rule,)))
    if facts.age is not None and facts.age > 40:
        block.append(f"- Age {facts.age} (over 40: a weak risk factor)")
    return (tuple(block),)


def _ddimer_note(facts: PatientFacts) -> tuple[str, ...]:
    if facts.age is not None and facts.age > 50:
        return (f"NICE NG158 suggests considering an age-adjusted D-dimer threshold over 50 (commonly age × 10 µg/L "
                f"FEU, here {facts.age * 10} µg/L FEU). The service shows this but does not apply it: use the "
                "laboratory's own cut-off unless your local protocol says otherwise.",)
    return ()


def dvt_findings(facts: PatientFacts) -> list[Finding]:
    """Every DVT rule that applies, most urgent first (D-01 > P-01/P-02/D-09 > D-02 > D-03 > D-04/D-08)."""
    if not gate_safety(facts):
        return []
    side = symptomatic_legs(facts)
    leg = "both" if len(side) > 1 else side[0]
    adult = facts.age is None or facts.age >= ADULT_AGE
    wells = best_wells(facts) if facts.leg_signs and adult and not facts.pregnant else None
    notes = _mimic_note(facts) + _anticoagulant_note(facts) + _risk_lines(facts)
    out: list[Finding] = []
    if facts.calf_warmth and facts.swelling_or_tenderness:  # D-01 (RF-01)
        out.append(_urgent(facts, leg, wells, notes))
    if not facts.leg_signs:
        return out + _without_leg_signs(facts, notes)
    signs = lines_of("Leg sign", facts.leg_signs)
    out += _special_groups(facts, signs, leg, wells, notes)
    if adult and not facts.pregnant and not facts.postpartum and wells is not None:
        out.append(_adult_pathway(facts, signs, wells, notes))
    return out


def _urgent(facts: PatientFacts, leg: str, wells: WellsResult | None, notes: tuple[str | Block, ...]) -> Finding:
    """D-01: a hot, swollen, tender calf: scan today, whatever the Wells score."""
    lines = lines_of("Calf warmth", facts.calf_warmth) + lines_of("Swelling or tenderness", facts.swelling_or_tenderness)
    if facts.pregnant or facts.postpartum:
        notes = ("**Pregnant or postpartum:** give therapeutic low-molecular-weight heparin until DVT is "
                 "excluded unless contraindicated; D-dimer is not useful in pregnancy.",) + notes
    return Finding("dvt-urgent", ("D-01", "RF-01"), lines, leg, suggestions=(_DUPLEX,), wells=wells, extra=notes)


def _special_groups(facts: PatientFacts, signs: tuple[Line, ...], leg: str, wells: WellsResult | None,
                    notes: tuple[str | Block, ...]) -> list[Finding]:
    """P-01 pregnancy, P-02 postpartum, D-09 under 18: the scan directly."""
    out = []
    if facts.pregnant:
        out.append(Finding("dvt-pregnancy", ("P-01",), lines_of("Pregnancy", facts.pregnant) + signs, leg,
                           suggestions=(_DUPLEX,), extra=notes))
    if facts.postpartum:
        out.append(Finding("dvt-postpartum", ("P-02",), lines_of("Postpartum", facts.postpartum) + signs, leg,
                           suggestions=(_DUPLEX,), wells=wells, extra=notes))
    if facts.age is not None and facts.age < ADULT_AGE:
        out.append(Finding("dvt-under-18", ("D-09",), (f"- Age {facts.age} (under 18)",) + signs, leg,
                           suggestions=(_DUPLEX,), extra=notes))
    return out


def _adult_pathway(facts: PatientFacts, signs: tuple[Line, ...], wells: WellsResult, notes: tuple[str | Block, ...]) -> Finding:
    """D-08 known DVT, else NICE NG158: D-02 (with D-10 after a negative scan) or D-03 by the Wells score."""
    if facts.recent_dvt:  # D-08: do not re-run the diagnostic pathway
        return _known_dvt(facts, signs, notes)
    scan = _recent_negative_scan(facts, wells.leg)
    if wells.likely and scan is not None:  # D-02 + D-10
        return _after_negative_scan(facts, scan, signs, wells, notes)
    if wells.likely:  # D-02
        return Finding("dvt-likely", ("D-02",), signs, wells.leg, suggestions=(_DUPLEX,), wells=wells, extra=notes)
    d_dimer = recent_ddimer(facts)
    if d_dimer is not None and d_dimer.positive:  # D-03 with a positive D-dimer on record
        return Finding("dvt-unlikely-positive-d-dimer", ("D-03",),
                       signs + lines_of("Positive D-dimer (last 24 h)", [d_dimer.evidence]), wells.leg,
                       suggestions=(_DUPLEX,), wells=wells, extra=notes)
    if d_dimer is not None and d_dimer.positive is False:  # D-03 completed: Wells <= 1, D-dimer negative
        return Finding("dvt-unlikely-negative-d-dimer", ("D-03",),
                       signs + lines_of("Negative D-dimer (last 24 h)", [d_dimer.evidence]), wells.leg,
                       wells=wells, extra=notes + _ddimer_note(facts))
    lines = signs
    if d_dimer is not None:  # a result whose sign cannot be read: ask for a readable one
        lines += lines_of("D-dimer (last 24 h), result not interpretable", [d_dimer.evidence])
    if scan is not None:  # D-10 under D-03: named, the D-dimer advice stands
        lines += lines_of("Negative leg vein scan (last 7 days)", [scan.evidence])
    return Finding("dvt-unlikely", ("D-03", "D-10") if scan else ("D-03",), lines, wells.leg,
                   suggestions=(Suggest("d-dimer", "d-dimer"),), wells=wells, extra=notes + _ddimer_note(facts))


def _without_leg_signs(facts: PatientFacts, notes: tuple[str | Block, ...]) -> list[Finding]:
    """D-08 known DVT, or D-04: VTE risk factors with knee pain and no leg signs (escalated when the record holds 2)."""
    if not (facts.posterior_knee_pain or facts.knee_pain_unknown_location):
        return []
    if facts.recent_dvt:
        return [_known_dvt(facts, (), notes)]
    if not risk_factors(facts):  # age alone never triggers D-04
        return []
    readable = {i.criterion: i for i in facts.wells_items if i.criterion in _HISTORY_CRITERIA}
    partial = sum(wells_points(i) for i in readable.values())
    lines = pain_lines(facts) or lines_of("Knee pain", [k.evidence for k in facts.knee_pain])
    if partial >= ESCALATION_POINTS:
        points = (f"**Wells items already in the record: {partial} points**",
                  *(wells_line(i) for i in readable.values()))
        return [Finding("dvt-risk-factors-escalated", ("D-04",), lines, facts.painful_side, indicator="warning",
                        extra=(points,) + _risk_lines(facts))]
    return [Finding("dvt-risk-factors", ("D-04",), lines, facts.painful_side, extra=_risk_lines(facts))]

def _after_negative_scan(facts: PatientFacts, scan: ImagingOnRecord, signs: tuple[Line, ...], wells: WellsResult,
                         notes: tuple[str | Block, ...]) -> Finding:
    """D-10 under D-02 (NG158 1.1.4-1.1.5): after a negative scan, the D-dimer decides; never a second scan at once."""
    lines = signs + lines_of("Negative leg vein scan (last 7 days)", [scan.evidence])
    test = _ddimer_since(facts, scan.evidence.when)
    if test is None:
        return Finding("dvt-likely-after-negative-scan", ("D-02", "D-10"), lines, wells.leg,
                       suggestions=(Suggest("d-dimer", "d-dimer"),), wells=wells, extra=notes + _ddimer_note(facts))
    lines += lines_of("D-dimer since the scan", [test.evidence])
    if test.positive:
        return Finding("dvt-likely-repeat-scan", ("D-02", "D-10"), lines, wells.leg,
                       suggestions=(Suggest("venous-duplex", "duplex"),), wells=wells, extra=notes)
    return Finding("dvt-excluded-after-negative-scan", ("D-02", "D-10"), lines, wells.leg, wells=wells, extra=notes)


def _known_dvt(facts: PatientFacts, signs: tuple[Line, ...], notes: tuple[str | Block, ...]) -> Finding:
    return Finding("dvt-known", ("D-08",), lines_of("Known recent DVT or anticoagulation", facts.recent_dvt) + signs,
                   facts.painful_side, extra=notes)
