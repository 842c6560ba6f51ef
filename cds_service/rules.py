"""Rules step: pure functions of the facts. Why did a card fire? The answer is in this file.

Rule ids are those of shared/clinical/rules.md. Each rule returns ``Finding``s naming the card
definition (cards/cards.toml), the evidence lines behind it, and what to suggest. ``select`` then
applies the card contract: one DVT card (the most urgent), one red-flag card with every flag,
one imaging card per modality, one card per other topic, one appropriateness card per draft order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta

from .facts import DDimer, DraftOrder, Evidence, ImagingOnRecord, PatientFacts, WellsItem

CHRONIC_WEEKS = 6  # §3 "Chronic": AAFP's 6 weeks (ACR's ≈3 months is UNRESOLVED)
XRAY_LOOKBACK_DAYS = 365  # K-05/K-07: 12-month look-back (UNRESOLVED design choice)
INJURY_LOOKBACK_DAYS = 42  # K-07: no knee injury in the last 6 weeks
ACUTE_DAYS = 7  # Ottawa: injury within 7 days
PITTSBURGH_DAYS = 6  # Pittsburgh: not applicable more than 6 days after injury
ACR_MIN_AGE = 5
YOUNG_AGE = 40  # K-09 "young" (UNVERIFIED heuristic threshold in rules.md §6)
ADULT_AGE = 18
DDIMER_HOURS = 24
NEGATIVE_SCAN_DAYS = 7  # D-10: a negative venous duplex in the last 7 days

WELLS_ORDER = ("active-cancer", "paralysis-or-immobilisation", "bedridden-or-major-surgery", "deep-vein-tenderness",
               "entire-leg-swollen", "calf-swelling-3cm", "pitting-oedema", "collateral-superficial-veins",
               "previous-dvt", "alternative-diagnosis")
_INDICATOR_RANK = {"info": 0, "warning": 1, "critical": 2}
_ALL_TYPES = frozenset({"Patient", "Condition", "Observation", "Procedure", "MedicationRequest", "Encounter",
                        "DiagnosticReport"})


@dataclass(frozen=True)
class Suggest:
    """An orderable the card offers: create it, and on order hooks maybe remove the draft it replaces."""

    orderable: str  # xray-standing | xray-trauma | mri | us-knee | us-popliteal-artery | venous-duplex | d-dimer
    label: str  # key into the card definition's suggestion_labels
    replaces: DraftOrder | None = None
    recommended: bool = True


@dataclass(frozen=True)
class WellsResult:
    score: int
    leg: str
    items: tuple[WellsItem, ...]

    @property
    def likely(self) -> bool:
        return self.score >= 2  # W-11: two-level Wells, likely >= 2

    @property
    def criteria(self) -> list[str]:
        present = {i.criterion for i in self.items}
        return [c for c in WELLS_ORDER if c in present]

    def extension(self) -> dict:
        return {"score": self.score, "likely": self.likely, "leg": self.leg, "criteria": self.criteria}

    def lines(self) -> list[str]:
        out = [f"**Two-level Wells score: {self.score}** ({'DVT likely' if self.likely else 'DVT unlikely'}; "
               f"{self.leg} leg)"]
        for item in sorted(self.items, key=lambda i: WELLS_ORDER.index(i.criterion)):
            sign = "+" if item.points > 0 else ""
            out.append(f"- {item.rule} {item.criterion} ({sign}{item.points}): {item.evidence.line()}")
        if not self.items:
            out.append("- no Wells criterion found in the record")
        return out


@dataclass(frozen=True)
class Finding:
    card_id: str
    rules: tuple[str, ...]
    evidence: tuple[str, ...]
    side: str = "unknown"
    reads: frozenset[str] = _ALL_TYPES
    order: DraftOrder | None = None
    reasons: tuple[str, ...] = ()
    suggestions: tuple[Suggest, ...] = ()
    wells: WellsResult | None = None
    indicator: str | None = None  # overrides the definition's (escalation, locked knee)
    extra: tuple[str, ...] = field(default=())  # more markdown paragraphs for the detail


# --- helpers -------------------------------------------------------------------------------------


def _same_knee(a: str, b: str) -> bool:
    # Unknown laterality counts as the same side (rules.md G-06, conservative).
    return "unknown" in (a, b) or "both" in (a, b) or a == b


def _lines(prefix: str, evidence: Iterable[Evidence]) -> tuple[str, ...]:
    return tuple(f"- {prefix}: {e.line()}" for e in evidence)


def _condition_refs(evidence: Iterable[Evidence]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(e.reference for e in evidence if e.reference.startswith("Condition/")))


def _within(facts: PatientFacts, when: date | None, days: int) -> bool:
    return when is not None and 0 <= (facts.today - when).days <= days


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
            if both_legs and item.criterion == "calf-swelling-3cm" and "paired" in item.evidence.label:
                continue  # G-06: with both legs symptomatic, only an explicit difference finding scores
        chosen.setdefault(item.criterion, item)
    score = sum(i.points for i in chosen.values())
    return WellsResult(score, leg, tuple(chosen.values()))


def best_wells(facts: PatientFacts) -> WellsResult:
    legs = symptomatic_legs(facts)
    results = [wells_score(facts, leg, both_legs=len(legs) > 1) for leg in legs]
    return max(results, key=lambda r: r.score)


def _recent_ddimer(facts: PatientFacts) -> DDimer | None:
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
             and _same_knee(i.evidence.side, leg) and _within(facts, i.evidence.when, NEGATIVE_SCAN_DAYS)]
    return max(scans, key=lambda i: i.evidence.when or date.min, default=None)


def _ddimer_since(facts: PatientFacts, day: date | None) -> DDimer | None:
    """The newest D-dimer with a readable result taken on or after a day."""
    tests = [t for t in facts.d_dimers if t.positive is not None and t.evidence.when is not None
             and day is not None and t.evidence.when >= day]
    return max(tests, key=lambda t: str(t.at or t.evidence.when), default=None)


def _acute_injuries(facts: PatientFacts, days: int = ACUTE_DAYS) -> tuple[Evidence, ...]:
    injuries = facts.cond("knee-injury") + facts.cond("ligament-injury")
    return tuple(e for e in injuries if _within(facts, e.when, days))


def _xrays_of_knee(facts: PatientFacts, side: str, days: int | None = XRAY_LOOKBACK_DAYS):
    return [i for i in facts.imaging if i.modality == "xray" and _same_knee(i.evidence.side, side)
            and (days is None or i.evidence.when is None or (facts.today - i.evidence.when).days <= days)]


def _chronic(facts: PatientFacts) -> bool:
    weeks = facts.weeks_of_pain()
    return weeks is not None and weeks >= CHRONIC_WEEKS


def _pain_lines(facts: PatientFacts) -> tuple[str, ...]:
    return _lines("Pain behind the knee", facts.posterior_knee_pain)


def _chronic_line(facts: PatientFacts) -> str:
    weeks = int(facts.weeks_of_pain() or 0)
    return f"- Pain for {weeks} weeks (since {facts.pain_onset.isoformat()}): chronic (6 weeks or more)"


def gate_posterior(facts: PatientFacts) -> bool:
    """G-05: pain behind the knee is on record."""
    return bool(facts.posterior_knee_pain)


def gate_safety(facts: PatientFacts) -> bool:
    """G-05 safety gate for DVT and limb-threatening red flags: posterior or unlocated knee pain, or
    leg signs (with knee pain anywhere, and, by the reviewer's recommendation for the UNRESOLVED
    case, without knee pain too)."""
    return bool(facts.posterior_knee_pain) or facts.knee_pain_unknown_location or bool(facts.leg_signs)


# --- DVT pathway (rules.md §1, §2) ----------------------------------------------------------------


def _mimic_note(facts: PatientFacts) -> tuple[str, ...]:
    """D-05: an explaining diagnosis adds a sentence, never suppresses the DVT card."""
    mimics = facts.cond("bakers-cyst") + facts.cond("calf-strain") + facts.cond("cellulitis-leg") + \
        facts.cond("hamstring-strain")
    if not mimics:
        return ()
    names = "; ".join(e.line() for e in mimics)
    return (f"**Another diagnosis is on record ({names})**, but it does not exclude DVT: a ruptured Baker's cyst, "
            "calf tear or cellulitis can look the same. Follow the DVT pathway above; a venous duplex of the leg "
            "shows a cyst as well as a clot. (D-05)",)


def _risk_lines(facts: PatientFacts) -> tuple[str, ...]:
    if not facts.risk_factors:
        return ()
    lines = ["**VTE risk factors on record:**"]
    seen = set()
    for rule, label, evidence in facts.risk_factors:
        key = (rule, evidence.reference)
        if key not in seen:
            seen.add(key)
            lines.append(f"- {rule} {label}: {evidence.line()}")
    if facts.age is not None and facts.age > 40:
        lines.append(f"- R-09 Age {facts.age} (over 40: weak factor, shown only)")
    return ("\n".join(lines),)


def _ddimer_note(facts: PatientFacts) -> tuple[str, ...]:
    if facts.age is not None and facts.age > 50:
        return (f"NICE NG158 suggests considering an age-adjusted D-dimer threshold over 50 (commonly age × 10 µg/L "
                f"FEU, here {facts.age * 10} µg/L FEU). The service shows this but does not apply it: use the "
                "laboratory's own cut-off unless your local protocol says otherwise. (D-03)",)
    return ()


def dvt_findings(facts: PatientFacts) -> list[Finding]:
    """Every DVT rule that applies, most urgent first (D-01 > P-01/P-02/D-09 > D-02 > D-03 > D-04/D-08)."""
    if not gate_safety(facts):
        return []
    out: list[Finding] = []
    side = symptomatic_legs(facts)
    leg = "both" if len(side) > 1 else side[0]
    adult = facts.age is None or facts.age >= ADULT_AGE
    signs = _lines("Leg sign", facts.leg_signs)
    wells = best_wells(facts) if facts.leg_signs and adult and not facts.pregnant else None
    notes = _mimic_note(facts) + _risk_lines(facts)
    duplex = Suggest("venous-duplex", "duplex")
    d_dimer = _recent_ddimer(facts)

    if facts.calf_warmth and facts.swelling_or_tenderness:  # D-01 (RF-01)
        lines = _lines("Calf warmth", facts.calf_warmth) + _lines("Swelling or tenderness",
                                                                  facts.swelling_or_tenderness)
        extra = notes
        if facts.pregnant or facts.postpartum:
            extra = ("**Pregnant or postpartum:** give therapeutic low-molecular-weight heparin until DVT is "
                     "excluded unless contraindicated; D-dimer is not useful in pregnancy. (P-01)",) + extra
        out.append(Finding("dvt-urgent", ("D-01", "RF-01"), lines, leg, suggestions=(duplex,), wells=wells,
                           extra=extra))
    if facts.leg_signs:
        if facts.pregnant:  # P-01
            out.append(Finding("dvt-pregnancy", ("P-01",), _lines("Pregnancy", facts.pregnant) + signs, leg,
                               suggestions=(duplex,), extra=notes))
        if facts.postpartum:  # P-02
            out.append(Finding("dvt-postpartum", ("P-02",), _lines("Postpartum", facts.postpartum) + signs, leg,
                               suggestions=(duplex,), wells=wells, extra=notes))
        if facts.age is not None and facts.age < ADULT_AGE:  # D-09
            out.append(Finding("dvt-under-18", ("D-09",), (f"- Age {facts.age} (under 18)",) + signs, leg,
                               suggestions=(duplex,), extra=notes))
        if adult and not facts.pregnant and not facts.postpartum and wells is not None:
            if facts.recent_dvt:  # D-08: do not re-run the diagnostic pathway
                out.append(_known_dvt(facts, signs, notes))
            elif wells.likely and (scan := _recent_negative_scan(facts, wells.leg)) is not None:  # D-02 + D-10
                out.append(_after_negative_scan(facts, scan, signs, wells, notes))
            elif wells.likely:  # D-02
                out.append(Finding("dvt-likely", ("D-02",), signs, wells.leg, suggestions=(duplex,), wells=wells,
                                   extra=notes))
            elif d_dimer is not None and d_dimer.positive:  # D-03 with a positive D-dimer on record
                out.append(Finding("dvt-unlikely-positive-d-dimer", ("D-03",),
                                   signs + _lines("Positive D-dimer (last 24 h)", [d_dimer.evidence]), wells.leg,
                                   suggestions=(duplex,), wells=wells, extra=notes))
            elif d_dimer is not None and d_dimer.positive is False:  # D-03 completed: Wells <= 1, D-dimer negative
                out.append(Finding("dvt-unlikely-negative-d-dimer", ("D-03",),
                                   signs + _lines("Negative D-dimer (last 24 h)", [d_dimer.evidence]), wells.leg,
                                   wells=wells, extra=notes + _ddimer_note(facts)))
            else:  # D-03
                lines = signs
                if d_dimer is not None:  # a result whose sign cannot be read: ask for a readable one
                    lines += _lines("D-dimer (last 24 h), result not interpretable", [d_dimer.evidence])
                scan = _recent_negative_scan(facts, wells.leg)  # D-10 under D-03: named, the D-dimer advice stands
                rule_ids = ("D-03", "D-10") if scan else ("D-03",)
                lines += _lines("Negative leg vein scan (last 7 days)", [scan.evidence]) if scan else ()
                out.append(Finding("dvt-unlikely", rule_ids, lines, wells.leg, suggestions=(Suggest("d-dimer", "d-dimer"),),
                                   wells=wells, extra=notes + _ddimer_note(facts)))
    elif facts.posterior_knee_pain or facts.knee_pain_unknown_location:
        if facts.recent_dvt:  # D-08
            out.append(_known_dvt(facts, (), notes))
        else:
            readable = {i.criterion: i for i in facts.wells_items if i.rule in ("W-01", "W-02", "W-03", "W-09")}
            if any(rule != "R-09" for rule, _, _ in facts.risk_factors):  # D-04 (age alone never triggers)
                partial = sum(i.points for i in readable.values())
                lines = _pain_lines(facts) or _lines("Knee pain", [k.evidence for k in facts.knee_pain])
                if partial >= 2:
                    points = [f"- {i.rule} {i.criterion} (+1): {i.evidence.line()}" for i in readable.values()]
                    out.append(Finding("dvt-risk-factors-escalated", ("D-04",), lines, facts.painful_side,
                                       indicator="warning",
                                       extra=("**Wells items already in the record: " + str(partial) + " points**\n"
                                              + "\n".join(points),) + _risk_lines(facts)))
                else:
                    out.append(Finding("dvt-risk-factors", ("D-04",), lines, facts.painful_side,
                                       extra=_risk_lines(facts)))
    return out


def _after_negative_scan(facts: PatientFacts, scan: ImagingOnRecord, signs: tuple[str, ...], wells: WellsResult,
                         notes: tuple[str, ...]) -> Finding:
    """D-10 under D-02 (NG158 1.1.4-1.1.5): after a negative scan, the D-dimer decides; never a second scan at once."""
    lines = signs + _lines("Negative leg vein scan (last 7 days)", [scan.evidence])
    test = _ddimer_since(facts, scan.evidence.when)
    if test is None:
        return Finding("dvt-likely-after-negative-scan", ("D-02", "D-10"), lines, wells.leg,
                       suggestions=(Suggest("d-dimer", "d-dimer"),), wells=wells, extra=notes + _ddimer_note(facts))
    lines += _lines("D-dimer since the scan", [test.evidence])
    if test.positive:
        return Finding("dvt-likely-repeat-scan", ("D-02", "D-10"), lines, wells.leg,
                       suggestions=(Suggest("venous-duplex", "duplex"),), wells=wells, extra=notes)
    return Finding("dvt-excluded-after-negative-scan", ("D-02", "D-10"), lines, wells.leg, wells=wells, extra=notes)


def _known_dvt(facts: PatientFacts, signs: tuple[str, ...], notes: tuple[str, ...]) -> Finding:
    return Finding("dvt-known", ("D-08",), _lines("Known recent DVT or anticoagulation", facts.recent_dvt) + signs,
                   facts.painful_side, extra=notes)


# --- red flags (rules.md §5) ----------------------------------------------------------------------


def red_flags(facts: PatientFacts) -> list[Finding]:
    flags: list[tuple[str, str, str, tuple[Evidence, ...]]] = []  # (rule, indicator, name, evidence)
    local = bool(facts.posterior_knee_pain) or facts.knee_pain_unknown_location
    limb = local or facts.any_knee_pain or bool(facts.leg_signs)
    if local:
        injuries = _acute_injuries(facts)
        severe = []
        if facts.pain_score is not None and facts.pain_score.value and \
                float(facts.pain_score.value.split("/")[0]) >= 7 and _within(facts, facts.pain_score.when, ACUTE_DAYS):
            severe.append(facts.pain_score)
        severe += [e for e in facts.finding("unable-bear-weight-4-steps") if _within(facts, e.when, ACUTE_DAYS)]
        if injuries and severe:
            flags.append(("RF-02", "warning", "Severe pain after a knee injury", injuries + tuple(severe)))
        locked = facts.finding("knee-locking") + facts.cond("knee-locking")
        if locked:
            flags.append(("RF-03", "critical", "Locked knee", locked))
        giving_way = facts.cond("knee-giving-way")
        if giving_way:
            flags.append(("RF-04", "warning", "Knee giving way", giving_way))
    if limb:
        threatened = facts.cond("knee-dislocation") + facts.cond("limb-ischaemia")
        if threatened:
            flags.append(("RF-05", "critical", "Threatened limb (cold, pale or pulseless leg, or knee dislocation)",
                          threatened))
        septic = facts.cond("septic-arthritis")
        effusion_fever = facts.cond("knee-effusion") + facts.fever if facts.cond("knee-effusion") and facts.fever \
            else ()
        if septic or effusion_fever:
            flags.append(("RF-06", "critical", "Possible septic arthritis", septic + effusion_fever))
        compartment = facts.cond("compartment-syndrome")
        if compartment:
            flags.append(("RF-07", "critical", "Possible compartment syndrome", compartment))
    if not flags:
        return []
    indicator = max((f[1] for f in flags), key=_INDICATOR_RANK.__getitem__)
    lines: list[str] = []
    actions = []
    for rule, _, name, evidence in flags:
        lines.append(f"- **{name}** ({rule}):")
        lines += [f"  - {e.line()}" for e in evidence]
        actions.append(rule)
    return [Finding("red-flag", tuple(actions), tuple(lines), facts.painful_side, indicator=indicator,
                    extra=tuple(RED_FLAG_ACTIONS[r] for r in actions))]


RED_FLAG_ACTIONS = {
    "RF-02": "- Severe pain after injury: assess the same day for fracture or internal injury; Ottawa/Pittsburgh "
             "decide on radiographs.",
    "RF-03": "- Locked knee: urgent orthopaedic review; MRI of the knee without contrast.",
    "RF-04": "- Giving way: orthopaedic referral; MRI to look for ligament or meniscal injury.",
    "RF-05": "- Threatened limb: emergency vascular or orthopaedic assessment now; after a knee dislocation, "
             "radiographs, MRI and CT or MR angiography.",
    "RF-06": "- Possible septic arthritis: same-day assessment and joint aspiration before antibiotics.",
    "RF-07": "- Possible compartment syndrome: emergency surgical assessment now.",
}


# --- knee imaging (rules.md §3), referred pain (§4), differential (§7) ---------------------------


def ottawa(facts: PatientFacts) -> tuple[bool | None, list[str]]:
    """K-01: None when not applicable; else (positive, criteria that were met)."""
    injuries = _acute_injuries(facts)
    if not injuries or facts.pregnant or facts.cond("knee-prosthesis") or facts.cond("leg-paralysis"):
        return None, []
    met = []
    if facts.age is not None and facts.age >= 55:
        met.append(f"age {facts.age} (55 or over)")
    for code, label in (("isolated-patellar-tenderness", "isolated tenderness of the patella"),
                        ("fibular-head-tenderness", "tenderness at the head of the fibula"),
                        ("unable-flex-90", "unable to flex to 90°"),
                        ("unable-bear-weight-4-steps", "unable to bear weight for 4 steps")):
        for evidence in facts.finding(code):
            if _within(facts, evidence.when, ACUTE_DAYS):
                met.append(f"{label} ({evidence.when.isoformat() if evidence.when else 'undated'}; "
                           f"{evidence.reference})")
                break
    if facts.age is None and not met:
        return None, []  # the age criterion cannot be judged
    return bool(met), met


def pittsburgh(facts: PatientFacts) -> tuple[bool | None, list[str]]:
    """K-02: blunt trauma or fall, and age < 12 or > 50 or unable to take 4 weight-bearing steps."""
    injuries = _acute_injuries(facts, PITTSBURGH_DAYS)
    if not injuries or facts.prior_knee_surgery:
        return None, []
    mechanism = facts.injury_mechanism or ""
    if not any(word in mechanism for word in ("fall", "blunt")):
        return False, []
    met = []
    if facts.age is not None and (facts.age < 12 or facts.age > 50):
        met.append(f"{mechanism} with age {facts.age}")
    if any(_within(facts, e.when, ACUTE_DAYS) for e in facts.finding("unable-bear-weight-4-steps")):
        met.append(f"{mechanism} and unable to take 4 weight-bearing steps")
    return bool(met), met


def trauma_imaging(facts: PatientFacts) -> list[Finding]:
    injuries = _acute_injuries(facts)
    if not injuries:
        return []
    ott, ott_met = ottawa(facts)
    pitt, pitt_met = pittsburgh(facts)
    lines = _lines("Knee injury", injuries)
    out = []
    xray_done = _xrays_of_knee(facts, facts.painful_side, days=ACUTE_DAYS)
    if (ott or pitt) and not xray_done:
        only_age = bool(ott) and not pitt and all(m.startswith("age") for m in ott_met)
        criteria = [f"- Ottawa knee rule positive: {m}" for m in ott_met] + \
                   [f"- Pittsburgh knee rule positive: {m}" for m in pitt_met]
        out.append(Finding("xray-trauma", tuple(r for r, hit in (("K-01", ott), ("K-02", pitt)) if hit),
                           lines + tuple(criteria), facts.painful_side, reasons=_condition_refs(injuries),
                           suggestions=(Suggest("xray-trauma", "order"),),
                           indicator="info" if only_age else None))
    locked = facts.finding("knee-locking") + facts.cond("knee-locking")
    derangement = facts.cond("meniscal-tear") + facts.cond("ligament-injury")
    fracture_excluded = any(i.result == "normal" for i in xray_done) or (ott is False and pitt is not True)
    if locked or (derangement and fracture_excluded and not out):
        why = _lines("Locked knee", locked) + _lines("Suspected internal derangement", derangement)
        if fracture_excluded:
            why += ("- Fracture excluded or Ottawa/Pittsburgh negative",)
        out.append(Finding("mri-derangement", ("K-04",), lines + why, facts.painful_side,
                           reasons=_condition_refs(derangement + injuries), suggestions=(Suggest("mri", "order"),),
                           indicator="critical" if locked else None))
    return out


def chronic_imaging(facts: PatientFacts) -> list[Finding]:
    if not _chronic(facts) or _acute_injuries(facts):
        return []
    out = []
    side = facts.painful_side
    recent = _xrays_of_knee(facts, side)
    if not recent:  # K-05
        out.append(Finding("xray-chronic", ("K-05",), _pain_lines(facts) + (
            _chronic_line(facts),
            f"- No radiograph of this knee in the 12 months before {facts.today.isoformat()}"),
            side, reasons=_condition_refs(facts.posterior_knee_pain),
            suggestions=(Suggest("xray-standing", "order"),)))
    else:
        negative = [i for i in _xrays_of_knee(facts, side, days=None) if i.result in ("normal", "effusion-only")]
        mri_on_record = [i for i in facts.imaging if i.modality == "mri" and _same_knee(i.evidence.side, side)]
        if negative and not mri_on_record:  # K-06
            xray = negative[-1]
            out.append(Finding("mri-after-xray", ("K-06",), _pain_lines(facts) + (
                _chronic_line(facts),
                f"- Knee radiograph {'normal' if xray.result == 'normal' else 'showing only an effusion'}: "
                f"{xray.evidence.line()}"), side, reasons=_condition_refs(facts.posterior_knee_pain),
                suggestions=(Suggest("mri", "order"),)))
    return out


def cyst_and_vessel_imaging(facts: PatientFacts) -> list[Finding]:
    out = []
    aneurysm = facts.cond("popliteal-aneurysm") + facts.finding("pulsatile-popliteal-mass")
    if not aneurysm and facts.cond("aaa") and facts.posterior_swelling:
        aneurysm = facts.cond("aaa")
    if aneurysm:  # K-13
        out.append(Finding("us-popliteal-artery", ("K-13",), _lines("Possible popliteal artery aneurysm", aneurysm),
                           facts.painful_side, reasons=_condition_refs(aneurysm),
                           suggestions=(Suggest("us-popliteal-artery", "order"),)))
    cyst = facts.cond("bakers-cyst")
    us_done = [i for i in facts.imaging if i.modality in ("us-knee", "venous-duplex")]
    if (cyst or facts.posterior_swelling) and not us_done and not aneurysm:  # K-08
        if facts.leg_signs or facts.cond("ruptured-bakers-cyst"):
            return out  # the DVT pathway runs; its venous duplex shows the cyst too (K-08)
        lines = _lines("Baker's cyst", cyst) or ("- Swelling or fullness behind the knee recorded",)
        out.append(Finding("us-bakers-cyst", ("K-08",), _pain_lines(facts) + lines, facts.painful_side,
                           reasons=_condition_refs(cyst or facts.posterior_knee_pain),
                           suggestions=(Suggest("us-knee", "order"),)))
    return out


def mechanical_imaging(facts: PatientFacts) -> list[Finding]:
    """K-09: meniscal tear or mechanical symptoms."""
    tear = facts.cond("meniscal-tear")
    locked = facts.finding("knee-locking") + facts.cond("knee-locking")
    giving_way = facts.cond("knee-giving-way")
    if not (tear or locked or giving_way) or _acute_injuries(facts):
        return []
    injured = facts.cond("knee-injury") + facts.cond("ligament-injury")
    young_after_trauma = facts.age is not None and facts.age < YOUNG_AGE and bool(injured)
    root = facts.cond("meniscal-root-tear")
    if locked or giving_way or root or young_after_trauma:
        lines = _lines("Meniscal tear", tear) + _lines("Locking", locked) + _lines("Giving way", giving_way)
        if young_after_trauma:
            lines += (f"- Age {facts.age} (under 40) with a knee injury on record",)
        return [Finding("mri-mechanical", ("K-09",), lines, facts.painful_side,
                        reasons=_condition_refs(tear + giving_way + locked), suggestions=(Suggest("mri", "order"),),
                        indicator="critical" if locked else None)]
    if not _xrays_of_knee(facts, facts.painful_side):
        return [Finding("xray-degenerative-tear", ("K-09",), _lines("Meniscal tear", tear) + (
            f"- Age {facts.age if facts.age is not None else 'unknown'}, no locking or giving way on record",
            "- No knee radiograph in the last 12 months"), facts.painful_side, reasons=_condition_refs(tear),
            suggestions=(Suggest("xray-standing", "order"),))]
    return []


def strain_imaging(facts: PatientFacts) -> list[Finding]:
    """K-11: hamstring or calf strain."""
    strain = facts.cond("hamstring-strain") + facts.cond("calf-strain")
    if not strain:
        return []
    return [Finding("mri-strain", ("K-11",), _lines("Muscle strain", strain), facts.painful_side,
                    reasons=_condition_refs(strain), suggestions=(Suggest("mri", "order", recommended=False),))]


def referred_pain(facts: PatientFacts) -> list[Finding]:
    """N-01 (sciatica and similar) and K-10 (normal knee MRI): one referred-pain card."""
    rules, lines, extra = [], [], []
    sciatica = facts.cond("sciatica-referred")
    if sciatica:
        rules.append("N-01")
        lines += _lines("Possible source of referred pain", sciatica)
        extra.append("Pain from the L5/S1 roots or the sciatic nerve is often felt behind the knee. Examine the "
                     "lumbar spine (straight-leg raise, neurology); nerve studies if there is a deficit. This alone "
                     "is no reason to escalate to a knee MRI. (N-01)")
    normal_mri = [i for i in facts.imaging if i.modality == "mri" and i.result == "normal"
                  and _same_knee(i.evidence.side, facts.painful_side)]
    if normal_mri:
        rules.append("K-10")
        lines += _lines("Normal knee MRI", [i.evidence for i in normal_mri])
        extra.append("With a normal knee MRI, do not repeat it: look outside the joint, at the veins (Wells if there "
                     "are leg signs), the lumbar spine and the hip. (K-10)")
    if not rules:
        return []
    return [Finding("referred-pain", tuple(rules), _pain_lines(facts) + tuple(lines), facts.painful_side,
                    extra=tuple(extra))]


DIFFERENTIAL_GROUPS = (
    ("L-06", "with back or buttock pain, or pain running down the leg",
     "lumbar radiculopathy (sciatica); piriformis syndrome", "examine the spine; nerve studies if deficits"),
    ("L-01", "inner (medial) side", "semimembranosus tendinopathy; medial meniscus tear (posterior horn or root); "
     "osteoarthritis", "MRI if mechanical symptoms; X-ray if 45 or over or chronic"),
    ("L-02", "outer (lateral) side", "biceps femoris tendinopathy; lateral meniscus tear; popliteus tendinopathy "
     "(rare)", "MRI if mechanical symptoms; ultrasound for the tendon"),
    ("L-03", "centre of the back of the knee, with swelling or fullness",
     "Baker's cyst (often with osteoarthritis or a meniscal tear); osteoarthritis; popliteal artery aneurysm if "
     "pulsatile (rare); DVT (rarely isolated here)",
     "ultrasound of the popliteal fossa for cyst or aneurysm; for DVT, Wells then D-dimer or venous duplex (an MSK "
     "ultrasound does not exclude DVT)"),
    ("L-04", "about 5 cm above the back of the knee, after sprinting or kicking",
     "hamstring muscle or tendon tear", "MRI or ultrasound if a rupture or avulsion is suspected"),
    ("L-05", "below the knee into the calf", "calf (gastrocnemius or soleus) tear; DVT; referred lumbar pain",
     "Wells first if there are leg signs"),
)


def differential(facts: PatientFacts) -> list[Finding]:
    """L-01..L-07: pain behind the knee with no diagnosis on record that explains it."""
    if not facts.posterior_knee_pain or facts.has("explaining-diagnosis"):
        return []
    present = set(facts.subsites)
    matched = []
    for rule, where, causes, test in DIFFERENTIAL_GROUPS:
        hit = (rule == "L-06" and facts.has("back-pain")) or (rule == "L-01" and "medial" in present) or \
            (rule == "L-02" and "lateral" in present) or \
            (rule == "L-03" and ("central" in present or facts.posterior_swelling)) or \
            (rule == "L-04" and ("above" in present or "sprint" in present)) or (rule == "L-05" and "below" in present)
        if hit:
            matched.append((rule, where, causes, test))
    lines = list(_pain_lines(facts))
    if facts.has("back-pain"):
        lines += _lines("Back or buttock pain", facts.cond("back-pain"))
    if matched:
        extra = ["**Causes to consider for where the pain sits:**"] + [
            f"- *{where}* ({rule}): {causes}. Separating test: {test}." for rule, where, causes, test in matched]
        rules = tuple(m[0] for m in matched)
    else:
        extra = ["**Where exactly the pain sits is not recorded, so all groups apply (L-07):**",
                 "- *Joint:* osteoarthritis, meniscal tear (posterior horn or root), Baker's (popliteal) cyst.",
                 "- *Tendon and muscle:* hamstring or calf strain; semimembranosus, biceps femoris or popliteus "
                 "tendinopathy.",
                 "- *Nerve:* referred pain from the lumbar spine (sciatica), piriformis syndrome.",
                 "- *Vessels:* deep vein thrombosis; popliteal artery aneurysm (rare).",
                 "Recording the site (inner, outer, centre, above, below), swelling, mechanical symptoms and calf "
                 "signs makes this list specific."]
        rules = ("L-07",)
    return [Finding("differential", rules, tuple(lines), facts.painful_side, reads=frozenset({"Condition"}),
                    extra=("\n".join(extra),))]


def assessment(facts: PatientFacts) -> list[Finding]:
    """K-14: persistent posterior knee pain with no diagnosis that explains it."""
    if not _chronic(facts) or facts.has("explaining-diagnosis"):
        return []
    return [Finding("assessment", ("K-14",), _pain_lines(facts) + (_chronic_line(facts),
                    "- No diagnosis on record that explains it"), facts.painful_side)]


# --- order hooks ----------------------------------------------------------------------------------


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
    if not _chronic(facts) or (facts.age is not None and facts.age < ACR_MIN_AGE):
        return []
    if any(_within(facts, e.when, INJURY_LOOKBACK_DAYS) or e.when is None for e in facts.cond("knee-injury")):
        return []
    if facts.cond("mechanical-or-red-flag") or facts.finding("knee-locking") or red_flag:
        return []
    side = order.side if order.side != "unknown" else facts.painful_side
    if _xrays_of_knee(facts, side):
        return []
    pain = [e for e in facts.posterior_knee_pain if _same_knee(e.side, side)]
    if not pain:
        return []
    lines = (
        *_lines("Knee pain", pain),
        _chronic_line(facts),
        f"- No radiograph of this knee on record in the 12 months before {facts.today.isoformat()}",
        "- No knee injury in the last 6 weeks, and no locking, giving way or red flag on record",
    )
    return [Finding("mri-before-xray", ("K-07",), lines, side, order=order, reasons=_condition_refs(pain),
                    suggestions=(Suggest("xray-standing", "replace", replaces=order),))]


def xray_not_required(facts: PatientFacts, order: DraftOrder, red_flag: bool) -> list[Finding]:
    """K-03: knee X-ray ordered after an injury with both decision rules negative."""
    ott, _ = ottawa(facts)
    pitt, _ = pittsburgh(facts)
    if ott is not False or pitt is True:
        return []
    if facts.cond("knee-effusion") or facts.finding("unable-bear-weight-4-steps") or red_flag:
        return []
    injuries = _acute_injuries(facts)
    lines = _lines("Knee injury", injuries) + (
        f"- Ottawa knee rule negative: age {facts.age}, no isolated patellar or fibular-head tenderness, able to "
        "flex to 90° and to bear weight",
        "- Pittsburgh knee rule negative" + (f" (mechanism: {facts.injury_mechanism})" if facts.injury_mechanism
                                             else " (no fall or blunt trauma recorded)"),
        "- No effusion on record")
    return [Finding("xray-not-required", ("K-03",), lines, order.side, order=order,
                    suggestions=(Suggest("remove", "remove", replaces=order, recommended=False),))]


def duplex_check(facts: PatientFacts, order: DraftOrder, dvt_in_force: Finding | None) -> list[Finding]:
    """D-06 / D-07: a venous duplex order is never objected to when DVT is likely or urgent."""
    urgent_or_likely = dvt_in_force is not None and dvt_in_force.card_id in (
        "dvt-urgent", "dvt-likely", "dvt-pregnancy", "dvt-postpartum", "dvt-under-18", "dvt-unlikely-positive-d-dimer",
        "dvt-known", "dvt-likely-repeat-scan", "dvt-likely-after-negative-scan")
    if urgent_or_likely or facts.pregnant or facts.postpartum or (facts.age is not None and facts.age < ADULT_AGE):
        return []  # D-06: no objection
    if _recent_ddimer(facts) is not None or facts.recent_dvt:
        return []
    if facts.calf_warmth and facts.swelling_or_tenderness:
        return []
    wells = dvt_in_force.wells if dvt_in_force is not None and dvt_in_force.wells else best_wells(facts)
    if wells.likely:
        return []
    return [Finding("d-dimer-first", ("D-07",), (f"- Venous duplex ordered: {order.label} ({order.reference})",
                                                "- No D-dimer result in the last 24 hours"), wells.leg,
                    order=order, wells=wells, suggestions=(Suggest("d-dimer", "d-dimer"),))]


# --- selection (card-contract.md "which card wins") -----------------------------------------------

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
        also = ["**Also applies (shown here, not as separate cards):**"]
        for other in others:
            also.append(f"- {', '.join(other.rules)}: " + "; ".join(line.lstrip("- ") for line in other.evidence[:3]))
        chosen = replace(chosen, extra=chosen.extra + ("\n".join(also),))
    return chosen


def evaluate(facts: PatientFacts, hook: str, modality_of: dict[str, str]) -> list[Finding]:
    """All findings for a hook, after the contract's selection.

    ``modality_of`` maps each imaging card id to its modality (from cards.toml), so that only one
    imaging card per modality is kept.
    """
    dvt = _dvt_in_force(dvt_findings(facts))
    flags = red_flags(facts)
    if hook == "patient-view":
        findings: list[Finding] = []
        if dvt is not None:
            findings.append(dvt)
        findings += flags
        if gate_posterior(facts):
            imaging = trauma_imaging(facts) + cyst_and_vessel_imaging(facts) + mechanical_imaging(facts) + \
                chronic_imaging(facts) + strain_imaging(facts)
            seen_modalities: set[str] = set()
            for finding in imaging:
                modality = modality_of[finding.card_id]
                if modality not in seen_modalities:
                    seen_modalities.add(modality)
                    findings.append(finding)
            findings += referred_pain(facts) + differential(facts) + assessment(facts)
        return findings
    # Order hooks: appropriateness per draft order; the DVT card when a DVT test is being ordered or
    # the calf is hot and swollen (D-06); red flags are never suppressed.
    findings = order_findings(facts, dvt, red_flag=bool(flags))
    ordering_dvt_test = any(o.modality in ("venous-duplex", "d-dimer") for o in facts.draft_orders)
    if dvt is not None and (ordering_dvt_test or dvt.card_id == "dvt-urgent"):
        if ordering_dvt_test and dvt.card_id in ("dvt-urgent", "dvt-likely", "dvt-pregnancy", "dvt-postpartum",
                                                 "dvt-under-18", "dvt-unlikely-positive-d-dimer",
                                                 "dvt-likely-repeat-scan"):
            dvt = replace(dvt, extra=("**The venous duplex being ordered is the right test** (D-06): ask for the "
                                      "result within 4 hours.",) + dvt.extra)
        findings.insert(0, dvt)
    return findings + flags
