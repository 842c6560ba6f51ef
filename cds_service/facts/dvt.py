"""What the DVT rules read (rules.md §1, §2, G-09): leg signs, calf warmth, Wells items, D-dimers, anticoagulation."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from ..chart import ChartEntry
from ..fhir_read import (
    body_sites,
    codings,
    concept_label,
    condition_is_current,
    condition_is_suspected,
    ddimer_positive,
    finding_code,
    label_of,
    observation_positive,
    quantity_in,
    to_date,
    value_text,
)
from .record import Record, med_label, modality_of, once
from .types import DDimer, Evidence, WellsItem

_LOWER_LIMB = "61685007"
CALF_DIFFERENCE_CM = 3.0  # W-06 and the leg-sign gate: calf at least 3 cm larger (NICE NG158 Table 1)
LEG_SIGN_DAYS = 28  # rules.md G-09 (a): last 4 weeks (UNRESOLVED design choice)
EXAM_DAYS = 14  # rules.md G-09 (b): last 14 days
WELLS_SURGERY_DAYS = 84  # W-03: 12 weeks (NICE)
IMMOBILISATION_DAYS = 84  # W-02: "recent" = 12 weeks (UNRESOLVED design choice)
BEDRIDDEN_DAYS = 28
CANCER_TREATMENT_DAYS = 183  # W-01: treatment within 6 months
RECENT_DVT_DAYS = 90  # D-08
_SURGERY_WORDS = re.compile(r"\b(?:surgery|surgical|\w+ectomy|\w+otomy|\w+plasty|repair|fixation|arthroscop\w*)\b", re.I)


def leg_sign_facts(rec: Record, posterior, knee_pain, drafts, pregnant: bool):
    """G-09: leg signs / DVT suspected; also the warmth and swelling/tenderness D-01 needs."""
    painful = {e.side for e in posterior} | {k.evidence.side for k in knee_pain}
    painful -= {"unknown"}
    signs: list[Evidence] = []
    swelling: list[Evidence] = []
    warmth: list[Evidence] = []

    def on_painful_side(side: str) -> bool:
        # P-01: in pregnancy a sign of either leg counts (left-leg DVT predominates).
        return pregnant or side in ("unknown", "both") or not painful or side in painful or "both" in painful

    for entry in rec.conditions():
        condition = entry.resource
        if not condition_is_current(condition):
            continue
        evidence = rec.ev(entry, suspected=condition_is_suspected(condition))
        if "calf-leg-signs" in entry.concepts and rec.within(entry.recent, LEG_SIGN_DAYS, undated=True) \
                and on_painful_side(evidence.side):
            signs.append(evidence)
            swelling.append(evidence)
        if ("dvt" in entry.concepts and condition_is_suspected(condition)) or \
                "thrombophlebitis-unspecified" in entry.concepts:
            signs.append(evidence)  # (c) clinician suspicion
        if "ruptured-bakers-cyst" in entry.concepts and rec.within(entry.recent, LEG_SIGN_DAYS, True):
            signs.append(evidence)  # K-08: a ruptured cyst mimics DVT, so the DVT pathway runs
        if "calf-warmth" in entry.concepts and rec.within(entry.recent, EXAM_DAYS, undated=True):
            warmth.append(evidence)
    for entry in rec.live_observations():
        observation = entry.resource
        recent = entry.recent
        code = finding_code(observation)
        evidence = rec.ev(entry)
        if code in ("deep-vein-tenderness", "entire-leg-swollen", "pitting-oedema-symptomatic-leg",
                    "collateral-superficial-veins", "calf-warmth") and observation_positive(observation) \
                and rec.within(recent, EXAM_DAYS, undated=True):
            signs.append(evidence)
            if code == "calf-warmth":
                warmth.append(evidence)
            else:
                swelling.append(evidence)
        elif code == "calf-circumference-difference" and rec.within(recent, EXAM_DAYS, undated=True):
            cm = quantity_in(observation.valueQuantity, "cm")
            if cm is not None and cm >= CALF_DIFFERENCE_CM:
                signs.append(evidence)
                swelling.append(evidence)
        elif code == "wells-dvt-score" and rec.within(recent, EXAM_DAYS, undated=True):
            signs.append(evidence)  # (c) the clinician scored Wells: DVT is suspected
        elif code is None and "calf-leg-signs" in entry.concepts \
                and observation_positive(observation) and rec.within(recent, LEG_SIGN_DAYS, undated=True) \
                and on_painful_side(evidence.side):
            signs.append(evidence)
            swelling.append(evidence)
        if code is None and "calf-warmth" in entry.concepts \
                and observation_positive(observation) and rec.within(recent, EXAM_DAYS, undated=True):
            warmth.append(evidence)
            signs.append(evidence)
    for order in drafts:
        if order.modality in ("venous-duplex", "d-dimer"):
            signs.append(Evidence(order.reference, f"Draft order: {order.label}", rec.today, order.side))
    return once(signs), once(warmth), once(swelling)


def wells_item_facts(rec: Record, current, history, findings) -> list[WellsItem]:
    items: list[WellsItem] = []

    def add(criterion: str, evidence: Evidence, leg: bool = False) -> None:
        items.append(WellsItem(criterion, evidence, leg))

    # W-01 active cancer: active malignancy, treatment within 6 months, or palliative care.
    for evidence in current.get("malignancy", ()):
        add("active-cancer", evidence)
    for evidence in history.get("cancer-treatment", ()) + current.get("palliative", ()):
        if evidence.when is None or rec.within(evidence.when, CANCER_TREATMENT_DAYS):
            add("active-cancer", evidence)
    for entry in rec.of("Procedure"):
        if entry.resource.status in ("completed", "in-progress") and "cancer-treatment" in entry.concepts \
                and rec.within(entry.recent, CANCER_TREATMENT_DAYS):
            add("active-cancer", rec.ev(entry))
    for entry in rec.of("Encounter"):
        encounter = entry.resource
        if encounter.status not in ("entered-in-error", "cancelled", "planned") and \
                "cancer-treatment" in entry.concepts and rec.within(entry.recent, CANCER_TREATMENT_DAYS):
            reasons = list(encounter.reasonCode or []) + list(encounter.type or [])
            label = next((concept_label(r) for r in reasons if concept_label(r)), None)
            add("active-cancer",
                Evidence(entry.reference, label or "Anticancer treatment encounter", entry.when))
    for entry in rec.of("MedicationRequest"):
        request = entry.resource
        if request.status in ("active", "completed") and "cancer-treatment" in entry.concepts \
                and rec.within(entry.when, CANCER_TREATMENT_DAYS, undated=request.status == "active"):
            add("active-cancer", Evidence(entry.reference, med_label(request), entry.when))
    # W-02 paralysis, paresis or recent plaster immobilisation.
    for evidence in current.get("leg-paralysis", ()):
        add("paralysis-or-immobilisation", evidence)
    for entry in rec.of("Procedure"):
        if entry.resource.status in ("completed", "in-progress") and \
                "immobilisation-procedure" in entry.concepts and rec.within(entry.recent, IMMOBILISATION_DAYS):
            add("paralysis-or-immobilisation", rec.ev(entry))
    for evidence in findings.get("leg-immobilisation", ()):
        if rec.within(evidence.when, IMMOBILISATION_DAYS, undated=True):
            add("paralysis-or-immobilisation", evidence)
    # W-03 bedridden >= 3 days or major surgery within 12 weeks.
    for entry in rec.of("Procedure"):
        if entry.resource.status != "completed" or modality_of(entry.concepts) is not None:
            continue  # imaging is not surgery
        if "immobilisation-procedure" in entry.concepts and not _SURGERY_WORDS.search(label_of(entry.resource)):
            continue  # a cast is W-02, unless it was part of an operation
        if is_surgery(rec, entry) and entry.recent is not None and rec.within(entry.recent, WELLS_SURGERY_DAYS):
            add("bedridden-or-major-surgery",
                rec.ev(entry, value=f"{(rec.today - entry.recent).days} days ago"))
    for evidence in history.get("recent-knee-arthroplasty", ()):
        if rec.within(evidence.when, WELLS_SURGERY_DAYS):
            add("bedridden-or-major-surgery", evidence)
    for evidence in current.get("bedridden", ()):
        if rec.within(evidence.when, BEDRIDDEN_DAYS, undated=True):
            add("bedridden-or-major-surgery", evidence)
    for entry in rec.of("Encounter"):
        if long_inpatient_stay(rec, entry.resource):
            period = entry.resource.period
            add("bedridden-or-major-surgery",
                Evidence(entry.reference, "Inpatient stay of 3 days or more", to_date(period.end)))
    # W-04..W-08 examination findings (symptomatic leg only).
    for code, criterion in (
        ("deep-vein-tenderness", "deep-vein-tenderness"),
        ("entire-leg-swollen", "entire-leg-swollen"),
        ("pitting-oedema-symptomatic-leg", "pitting-oedema"),
        ("collateral-superficial-veins", "collateral-superficial-veins"),
    ):
        for evidence in findings.get(code, ()):
            if rec.within(evidence.when, EXAM_DAYS, undated=True):
                add(criterion, evidence, leg=True)
    for entry in rec.live_observations():
        observation = entry.resource
        if not rec.within(entry.recent, EXAM_DAYS, undated=True):
            continue
        if finding_code(observation) is None and "80068009" in {c.code for c in codings(observation.code)} \
                and any(_LOWER_LIMB in {c.code for c in codings(s)} for s in body_sites(observation)) \
                and observation_positive(observation):
            add("entire-leg-swollen", rec.ev(entry), leg=True)
        if finding_code(observation) == "calf-circumference-difference":
            cm = quantity_in(observation.valueQuantity, "cm")
            if cm is not None and cm >= CALF_DIFFERENCE_CM:
                add("calf-swelling-3cm", rec.ev(entry, value=f"{cm:.1f} cm"), leg=True)
    items += paired_calf_measurements(rec)
    for entry in rec.conditions():
        condition = entry.resource
        if condition_is_current(condition) and "80068009" in {c.code for c in codings(condition.code)} and any(
                _LOWER_LIMB in {c.code for c in codings(s)} for s in body_sites(condition)) \
                and rec.within(entry.recent, LEG_SIGN_DAYS, undated=True):
            add("entire-leg-swollen", rec.ev(entry), leg=True)
    # W-09 previously documented DVT (confirmed; any clinical status).
    for concept in ("dvt", "dvt-upper-limb", "history-of-dvt"):
        for evidence in history.get(concept, ()):
            if not evidence.suspected:
                add("previous-dvt", evidence)
    # W-10 alternative diagnosis at least as likely: only when the clinician recorded it.
    for evidence in findings.get("wells-alternative-diagnosis", ()):
        add("alternative-diagnosis", evidence)
    return items


def paired_calf_measurements(rec: Record) -> list[WellsItem]:
    by_day: dict[date, dict[str, tuple[float, ChartEntry]]] = {}
    for entry in rec.live_observations():
        if finding_code(entry.resource) or "calf-circumference" not in entry.concepts:
            continue
        when = entry.when
        cm = quantity_in(entry.resource.valueQuantity, "cm")
        if when is None or cm is None or entry.side not in ("left", "right") or not rec.within(when, EXAM_DAYS):
            continue
        by_day.setdefault(when, {})[entry.side] = (cm, entry)
    items = []
    for when, sides in by_day.items():
        if set(sides) == {"left", "right"}:
            (lcm, left), (rcm, right) = sides["left"], sides["right"]
            bigger, cm, entry = ("right", rcm - lcm, right) if rcm >= lcm else ("left", lcm - rcm, left)
            if cm >= CALF_DIFFERENCE_CM:
                evidence = Evidence(entry.reference, "Calf circumference difference (paired measurements)", when,
                                    bigger, f"{cm:.1f} cm")
                items.append(WellsItem("calf-swelling-3cm", evidence, leg_specific=True, paired=True))
    return items


def is_surgery(rec: Record, entry: ChartEntry) -> bool:
    if "major-surgery" in entry.concepts:
        return True
    category = getattr(entry.resource, "category", None)
    return category is not None and "387713003" in {c.code for c in codings(category)}


def long_inpatient_stay(rec: Record, encounter: Any) -> bool:
    if encounter.status in ("entered-in-error", "cancelled", "planned"):
        return False
    klass = getattr(encounter, "class_fhir", None)
    if klass is None or klass.code not in ("IMP", "ACUTE", "NONAC"):
        return False
    period = encounter.period
    if period is None or period.start is None or period.end is None:
        return False
    start, end = to_date(period.start), to_date(period.end)
    return (end - start).days >= 3 and rec.within(end, BEDRIDDEN_DAYS)


def anticoagulants(rec: Record, current) -> tuple[list[Evidence], list[Evidence]]:
    """Every anticoagulant on record, and those whose reason is a DVT (D-08 [2026-11-26])."""
    every = list(current.get("anticoagulant", ()))
    for_dvt: list[Evidence] = []
    for entry in rec.of("MedicationRequest"):
        if entry.resource.status == "active" and "anticoagulant" in entry.concepts:
            evidence = Evidence(entry.reference, med_label(entry.resource), entry.when)
            every.append(evidence)
            if entry.reason_concepts & {"dvt", "history-of-dvt"}:
                for_dvt.append(evidence)
    return every, for_dvt


def known_recent_dvt(rec: Record, history, anticoagulation, for_dvt, leg_signs) -> list[Evidence]:
    """D-08: a confirmed DVT of the symptomatic leg in the last 90 days, or an anticoagulant given for DVT.

    An anticoagulant for another reason (atrial fibrillation, a valve) is not D-08 on its own.
    """
    confirmed = [e for e in history.get("dvt", ()) if not e.suspected]
    symptomatic = {e.side for e in leg_signs} - {"unknown"}
    recent = [e for e in confirmed if e.when is not None and rec.within(e.when, RECENT_DVT_DAYS)
              and (not symptomatic or e.side in ("unknown", "both") or e.side in symptomatic or "both" in symptomatic)]
    return recent + (anticoagulation if recent else for_dvt)


def d_dimer_results(rec: Record) -> list[DDimer]:
    out = []
    for entry in rec.live_observations():
        if "d-dimer" not in entry.concepts:
            continue
        observation = entry.resource
        at = observation.effectiveDateTime or observation.issued
        out.append(DDimer(rec.ev(entry, value=value_text(observation)), at, ddimer_positive(observation)))
    return out
