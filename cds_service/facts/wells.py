"""Wells criteria present in the record (rules.md §1, NICE NG158 Table 1), each with what proved it.

The points and the rule ids are the rules' (``rules.base.WELLS_CRITERIA``); here is only what the record shows.
Examination findings are leg-specific (G-06): the rules score them for the symptomatic leg only.
"""

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
    finding_code,
    label_of,
    observation_positive,
    quantity_in,
    to_date,
)
from .dvt import CALF_DIFFERENCE_CM, EXAM_DAYS, LEG_SIGN_DAYS
from .record import Record, med_label, modality_of
from .types import Evidence, WellsItem

WELLS_SURGERY_DAYS = 84  # W-03: 12 weeks (NICE)
IMMOBILISATION_DAYS = 84  # W-02: "recent" = 12 weeks (UNRESOLVED design choice)
BEDRIDDEN_DAYS = 28
CANCER_TREATMENT_DAYS = 183  # W-01: treatment within 6 months
_LOWER_LIMB = "61685007"
_SWELLING_OF_LIMB = "80068009"
_SURGICAL = "387713003"
_MINOR_WORDS = re.compile(r"\b(?:injections?|injected|aspirations?|aspirated|casts?|strapping|biops(?:y|ies))\b", re.I)
_SURGERY_WORDS = re.compile(r"\b(?:surgery|surgical|\w+ectomy|\w+otomy|\w+plasty|repair|fixation|arthroscop\w*)\b", re.I)
_EXAM_CRITERIA = (  # local finding code -> criterion (W-04, W-05, W-07, W-08)
    ("deep-vein-tenderness", "deep-vein-tenderness"),
    ("entire-leg-swollen", "entire-leg-swollen"),
    ("pitting-oedema-symptomatic-leg", "pitting-oedema"),
    ("collateral-superficial-veins", "collateral-superficial-veins"),
)
_DONE = ("completed", "in-progress")
_NOT_HELD = ("entered-in-error", "cancelled", "planned")


def wells_item_facts(rec: Record, current, history, findings) -> list[WellsItem]:
    return [
        *active_cancer(rec, current, history),
        *paralysis_or_immobilisation(rec, current, findings),
        *bedridden_or_major_surgery(rec, current, history),
        *examination_findings(rec, findings),
        *paired_calf_measurements(rec),
        *previous_dvt(history),
        *(WellsItem("alternative-diagnosis", e) for e in findings.get("wells-alternative-diagnosis", ())),
    ]


def active_cancer(rec: Record, current, history) -> list[WellsItem]:
    """W-01: active malignancy, anticancer treatment within 6 months, or palliative care."""
    evidence = list(current.get("malignancy", ()))
    evidence += [e for e in history.get("cancer-treatment", ()) + current.get("palliative", ())
                 if e.when is None or rec.within(e.when, CANCER_TREATMENT_DAYS)]
    evidence += [rec.ev(entry) for entry in rec.of("Procedure") if entry.resource.status in _DONE
                 and "cancer-treatment" in entry.concepts and rec.within(entry.recent, CANCER_TREATMENT_DAYS)]
    for entry in rec.of("Encounter"):
        if entry.resource.status not in _NOT_HELD and "cancer-treatment" in entry.concepts \
                and rec.within(entry.recent, CANCER_TREATMENT_DAYS):
            reasons = list(entry.resource.reasonCode or []) + list(entry.resource.type or [])
            label = next((concept_label(r) for r in reasons if concept_label(r)), None)
            evidence.append(Evidence(entry.reference, label or "Anticancer treatment encounter", entry.when))
    for entry in rec.of("MedicationRequest"):
        request = entry.resource
        if request.status in ("active", "completed") and "cancer-treatment" in entry.concepts \
                and rec.within(entry.when, CANCER_TREATMENT_DAYS, undated=request.status == "active"):
            evidence.append(Evidence(entry.reference, med_label(request), entry.when))
    return [WellsItem("active-cancer", e) for e in evidence]


def paralysis_or_immobilisation(rec: Record, current, findings) -> list[WellsItem]:
    """W-02: paralysis, paresis or recent plaster immobilisation of the lower extremity."""
    evidence = list(current.get("leg-paralysis", ()))
    evidence += [rec.ev(entry) for entry in rec.of("Procedure") if entry.resource.status in _DONE
                 and "immobilisation-procedure" in entry.concepts and rec.within(entry.recent, IMMOBILISATION_DAYS)]
    evidence += [e for e in findings.get("leg-immobilisation", ()) if rec.within(e.when, IMMOBILISATION_DAYS, undated=True)]
    return [WellsItem("paralysis-or-immobilisation", e) for e in evidence]


def bedridden_or_major_surgery(rec: Record, current, history) -> list[WellsItem]:
    """W-03: bedridden for 3 days or more, or major surgery within 12 weeks."""
    evidence = [rec.ev(entry, value=f"{(rec.today - entry.recent).days} days ago") for entry in rec.of("Procedure")
                if _major_surgery(rec, entry)]
    evidence += [e for e in history.get("recent-knee-arthroplasty", ()) if rec.within(e.when, WELLS_SURGERY_DAYS)]
    evidence += [e for e in current.get("bedridden", ()) if rec.within(e.when, BEDRIDDEN_DAYS, undated=True)]
    evidence += [Evidence(entry.reference, "Inpatient stay of 3 days or more", to_date(entry.resource.period.end))
                 for entry in rec.of("Encounter") if long_inpatient_stay(rec, entry.resource)]
    return [WellsItem("bedridden-or-major-surgery", e) for e in evidence]


def _major_surgery(rec: Record, entry: ChartEntry) -> bool:
    if entry.resource.status != "completed" or modality_of(entry.concepts) is not None:
        return False  # imaging is not surgery
    if "immobilisation-procedure" in entry.concepts and not _SURGERY_WORDS.search(label_of(entry.resource)):
        return False  # a cast is W-02, unless it was part of an operation
    if "anaesthesia" in entry.concepts:
        return False  # the anaesthesia record of an operation, not an operation of its own
    if _minor(entry) and not _anaesthesia_on(rec, entry.when):
        return False  # an injection, aspiration, biopsy or nerve block is not major surgery without anaesthesia
    return is_surgery(entry) and entry.recent is not None and rec.within(entry.recent, WELLS_SURGERY_DAYS)


def _minor(entry: ChartEntry) -> bool:
    """codes.md VS:major-surgery [2026-11-26]: the minor CPT ranges, or a procedure named (in its own code text or
    display, not its notes) as an injection, aspiration, cast, strapping or biopsy."""
    if "minor-procedure" in entry.concepts:
        return True
    code = entry.resource.code
    names = [code.text or ""] + [c.display or "" for c in codings(code)] if code is not None else []
    return any(_MINOR_WORDS.search(name) for name in names)


def _anaesthesia_on(rec: Record, day: date | None) -> bool:
    """General or regional anaesthesia recorded as a procedure of the same day (CPT 00100-01999)."""
    return day is not None and any("anaesthesia" in p.concepts and p.when == day for p in rec.of("Procedure"))


def examination_findings(rec: Record, findings) -> list[WellsItem]:
    """W-04..W-08 from the examination of the last 14 days (leg-specific)."""
    items = [WellsItem(criterion, e, leg_specific=True) for code, criterion in _EXAM_CRITERIA
             for e in findings.get(code, ()) if rec.within(e.when, EXAM_DAYS, undated=True)]
    for entry in rec.live_observations():
        observation = entry.resource
        if not rec.within(entry.recent, EXAM_DAYS, undated=True):
            continue
        code = finding_code(observation)
        if code is None and _swelling_of_lower_limb(observation) and observation_positive(observation):
            items.append(WellsItem("entire-leg-swollen", rec.ev(entry), leg_specific=True))
        if code == "calf-circumference-difference":
            cm = quantity_in(observation.valueQuantity, "cm")
            if cm is not None and cm >= CALF_DIFFERENCE_CM:
                items.append(WellsItem("calf-swelling-3cm", rec.ev(entry, value=f"{cm:.1f} cm"), leg_specific=True))
    items += [WellsItem("entire-leg-swollen", rec.ev(entry), leg_specific=True) for entry in rec.conditions()
              if condition_is_current(entry.resource) and _swelling_of_lower_limb(entry.resource)
              and rec.within(entry.recent, LEG_SIGN_DAYS, undated=True)]
    return items


def _swelling_of_lower_limb(resource: Any) -> bool:
    """W-05 coded: SNOMED swelling of limb with the lower limb as body site."""
    return _SWELLING_OF_LIMB in {c.code for c in codings(resource.code)} and any(
        _LOWER_LIMB in {c.code for c in codings(s)} for s in body_sites(resource))


def paired_calf_measurements(rec: Record) -> list[WellsItem]:
    """W-06 from right and left calf circumferences measured the same day (rounded to 1 decimal, as recorded)."""
    by_day: dict[date, dict[str, tuple[float, ChartEntry]]] = {}
    for entry in rec.live_observations():
        if finding_code(entry.resource) or "calf-circumference" not in entry.concepts:
            continue
        cm = quantity_in(entry.resource.valueQuantity, "cm")
        if entry.when is None or cm is None or entry.side not in ("left", "right") or not rec.within(entry.when, EXAM_DAYS):
            continue
        by_day.setdefault(entry.when, {})[entry.side] = (cm, entry)
    items = []
    for when, sides in by_day.items():
        if set(sides) == {"left", "right"}:
            (lcm, left), (rcm, right) = sides["left"], sides["right"]
            bigger, entry = ("right", right) if rcm >= lcm else ("left", left)
            cm = round(abs(rcm - lcm), 1)  # 33.8 - 30.8 is 2.9999999999999964 in floating point
            if cm >= CALF_DIFFERENCE_CM:
                evidence = Evidence(entry.reference, "Calf circumference difference (paired measurements)", when,
                                    bigger, f"{cm:.1f} cm")
                items.append(WellsItem("calf-swelling-3cm", evidence, leg_specific=True, paired=True))
    return items


def previous_dvt(history) -> list[WellsItem]:
    """W-09: a previously documented DVT, confirmed, of either leg and any clinical status (G-02, G-06)."""
    return [WellsItem("previous-dvt", e) for concept in ("dvt", "dvt-upper-limb", "history-of-dvt")
            for e in history.get(concept, ()) if not e.suspected]


def is_surgery(entry: ChartEntry) -> bool:
    if "major-surgery" in entry.concepts:
        return True
    category = getattr(entry.resource, "category", None)
    return category is not None and _SURGICAL in {c.code for c in codings(category)}


def long_inpatient_stay(rec: Record, encounter: Any) -> bool:
    if encounter.status in _NOT_HELD:
        return False
    klass = getattr(encounter, "class_fhir", None)
    if klass is None or klass.code not in ("IMP", "ACUTE", "NONAC"):
        return False
    period = encounter.period
    if period is None or period.start is None or period.end is None:
        return False
    start, end = to_date(period.start), to_date(period.end)
    return (end - start).days >= 3 and rec.within(end, BEDRIDDEN_DAYS)
