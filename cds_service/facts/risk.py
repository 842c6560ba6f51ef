"""Pregnancy and the postpartum weeks, VTE risk factors (R-01, R-04..R-08) and BMI (G-07)."""

from __future__ import annotations

from datetime import date

from ..chart import ChartEntry
from ..fhir_read import codings, condition_is_current, condition_is_history, quantity_in
from .record import Record, med_label
from .types import Evidence, RiskFactor

PREGNANCY_DAYS = 294  # 42 weeks
POSTPARTUM_DAYS = 42  # P-02: 6 weeks
POSTPARTUM_RISK_DAYS = 84  # risk stays raised to ~12 weeks (shown only)
TRAVEL_DAYS = 56  # 8 weeks


def pregnancy_facts(rec: Record) -> tuple[list[Evidence], list[Evidence], list[Evidence]]:
    """(pregnant, postpartum within 6 weeks, postpartum 6 to 12 weeks): P-01, P-02, R-05."""
    deliveries = [(entry.when, rec.ev(entry)) for entry in rec.conditions()
                  if condition_is_history(entry.resource) and "postpartum" in entry.concepts]
    deliveries += [(entry.recent, rec.ev(entry)) for entry in rec.of("Procedure")
                   if entry.resource.status == "completed" and "postpartum" in entry.concepts]
    postpartum: list[Evidence] = []
    late: list[Evidence] = []
    for when, evidence in deliveries:
        if when is None:
            # An undated postpartum state on the problem list: counted (conservative).
            if "86569001" in evidence.label or "postpartum" in evidence.label.lower():
                postpartum.append(evidence)
        elif rec.within(when, POSTPARTUM_DAYS):
            postpartum.append(evidence)
        elif rec.within(when, POSTPARTUM_RISK_DAYS):
            late.append(evidence)
    last_delivery = max((w for w, _ in deliveries if w is not None), default=None)
    return _pregnant(rec, last_delivery), postpartum, late


def _pregnant(rec: Record, last_delivery: date | None) -> list[Evidence]:
    """The latest pregnancy-status observation decides; else a current pregnancy of the last 42 weeks since delivery."""
    status = rec.observations_with("pregnancy-status")
    if status:
        latest = max(status, key=lambda o: o.when or date.min)
        value = latest.resource.valueCodeableConcept
        codes = {c.code for c in codings(value)} if value else set()
        if "60001007" in codes:  # latest says not pregnant: overrides the problem list
            return []
        if "77386006" in codes:
            return [rec.ev(latest, value="pregnant")]
    return [rec.ev(entry) for entry in rec.conditions()
            if condition_is_current(entry.resource) and "pregnancy" in entry.concepts
            and entry.when is not None and rec.within(entry.when, PREGNANCY_DAYS)  # else a stale problem-list entry
            and (last_delivery is None or last_delivery < entry.when)]


def risk_factor_facts(rec: Record, current, history, findings, pregnant, postpartum, late, age) -> list[RiskFactor]:
    """R-01, R-04..R-08 (R-02 and R-03 are the Wells items active cancer and surgery or immobility)."""
    risks: list[RiskFactor] = []
    bmi = latest_bmi(rec)
    if bmi is not None and bmi[0] >= 30.0 and (age is None or age >= 18):
        risks.append(RiskFactor("obesity", bmi[1]))
    risks += [RiskFactor("obesity", e) for e in current.get("obesity", ())]
    risks += [RiskFactor("long-haul-travel", e) for e in findings.get("long-haul-travel", ())
              if rec.within(e.when, TRAVEL_DAYS)]
    risks += [RiskFactor("pregnancy", e) for e in pregnant]
    risks += [RiskFactor("postpartum", e) for e in postpartum]
    risks += [RiskFactor("postpartum-late", e) for e in late]
    oestrogen = list(current.get("oestrogen", ()))
    for entry in rec.of("MedicationRequest"):
        if entry.resource.status == "active" and "oestrogen" in entry.concepts:
            oestrogen.append(Evidence(entry.reference, med_label(entry.resource), entry.when))
    risks += [RiskFactor("oestrogen", e) for e in oestrogen]
    for concept in ("dvt", "dvt-upper-limb", "history-of-dvt", "pe"):
        risks += [RiskFactor("previous-vte", e) for e in history.get(concept, ()) if not e.suspected]
    risks += [RiskFactor("thrombophilia", e) for e in current.get("thrombophilia", ())]
    return risks


def latest_bmi(rec: Record) -> tuple[float, Evidence] | None:
    """G-07: latest BMI; else computed from the latest weight and height; rounded to 1 decimal."""
    def latest(name: str) -> ChartEntry | None:
        found = [(o.when or date.min, o) for o in rec.observations_with(name)
                 if o.resource.valueQuantity is not None and o.resource.valueQuantity.value is not None]
        return max(found, key=lambda f: f[0])[1] if found else None

    recorded = latest("bmi")
    if recorded is not None:
        value = round(float(recorded.resource.valueQuantity.value), 1)
        return value, rec.ev(recorded, value=f"BMI {value:.1f} kg/m²")
    weight, height = latest("body-weight"), latest("body-height")
    if weight is None or height is None:
        return None
    kg = quantity_in(weight.resource.valueQuantity, "kg")
    metres = quantity_in(height.resource.valueQuantity, "m")
    if not kg or not metres:
        return None
    value = round(kg / (metres * metres), 1)
    return value, Evidence(weight.reference, "Body mass index (from weight and height)", weight.when,
                           value=f"BMI {value:.1f} kg/m²")
