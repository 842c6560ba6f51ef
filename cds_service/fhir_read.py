"""Readers of FHIR R4 elements the facts step needs: statuses, labels, values, results.

Plain functions of ``fhir.resources`` models (dates, sides and text come from the chart index); no rule
logic lives here.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Any

from .terminology import PKP_FINDING, TEXT_CAP, Clauses

_INACTIVE_VERIFICATION = {"entered-in-error", "refuted"}
_ACTIVE_CLINICAL = {"active", "recurrence", "relapse"}
_SUSPECTED_VERIFICATION = {"provisional", "differential", "unconfirmed"}
_NORMAL_RESULT = re.compile(
    r"\b(?:normal|unremarkable|no (?:significant )?abnormalit\w*|no internal derangement|"
    r"no (?:acute )?(?:bony )?(?:injury|pathology))\b", re.I)
# K-10: findings that make a study abnormal when affirmed ("no joint effusion" is not one).
_RESULT_FINDING = re.compile(
    r"\b(?:effusions?|tears?|torn|cysts?|degenerat\w*|o?edema|oedematous|fractures?|ruptured?|osteoarthritis|"
    r"osteophytes?|chondral|chondromalacia|lesions?|mass|thrombus|thrombosis|non-?compressible|abnormal\w*|"
    r"narrowing|sprain|contusion|haematoma|hematoma)\b", re.I)
_NORMAL_CODES = {"17621005"}  # SNOMED Normal
_ABNORMAL_CODES = {"263654008"}  # SNOMED Abnormal

# Displays of the local finding code system (codes.md §9), for cards when a coding has no display.
FINDING_DISPLAY = {
    "calf-circumference-difference": "Calf circumference difference",
    "deep-vein-tenderness": "Tenderness along the deep veins",
    "entire-leg-swollen": "Entire leg swollen",
    "pitting-oedema-symptomatic-leg": "Pitting oedema of the symptomatic leg",
    "collateral-superficial-veins": "Collateral superficial veins (non-varicose)",
    "leg-immobilisation": "Leg paralysis, paresis or recent plaster immobilisation",
    "wells-alternative-diagnosis": "Alternative diagnosis at least as likely as DVT (clinician)",
    "calf-warmth": "Calf hot to touch",
    "long-haul-travel": "Long-haul travel",
    "knee-locking": "Knee locking",
    "unable-bear-weight-4-steps": "Unable to bear weight for 4 steps",
    "unable-flex-90": "Unable to flex the knee to 90°",
    "fibular-head-tenderness": "Tenderness at the head of the fibula",
    "isolated-patellar-tenderness": "Isolated tenderness of the patella",
    "injury-mechanism": "Mechanism of injury",
    "pulsatile-popliteal-mass": "Pulsatile mass behind the knee",
    "wells-dvt-score": "Wells DVT score recorded by the clinician",
}


def to_date(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            return None
    return None


def _status_code(status: Any) -> str | None:
    for coding in getattr(status, "coding", None) or []:
        if coding.code:
            return coding.code
    return None


def condition_is_current(condition: Any) -> bool:
    """G-01: not entered-in-error/refuted; active/recurrence/relapse, or no status and no abatement."""
    if _status_code(condition.verificationStatus) in _INACTIVE_VERIFICATION:
        return False
    clinical = _status_code(condition.clinicalStatus)
    if clinical is None:
        return all(getattr(condition, f"abatement{k}") is None for k in ("DateTime", "Age", "Period", "Range", "String"))
    return clinical in _ACTIVE_CLINICAL


def condition_is_history(condition: Any) -> bool:
    """G-02: any status counts as history, except entered-in-error/refuted."""
    return _status_code(condition.verificationStatus) not in _INACTIVE_VERIFICATION


def condition_is_suspected(condition: Any) -> bool:
    return _status_code(condition.verificationStatus) in _SUSPECTED_VERIFICATION


def codings(concept: Any) -> list[Any]:
    return list(getattr(concept, "coding", None) or [])


def body_sites(resource: Any) -> list[Any]:
    """bodySite as a list: a list on Condition and Procedure, a single concept on Observation."""
    sites = getattr(resource, "bodySite", None)
    if sites is None:
        return []
    return list(sites) if isinstance(sites, list | tuple) else [sites]


def concept_label(concept: Any) -> str | None:
    """What a person would call a CodeableConcept: its text, else a display, else a code."""
    if concept is None:
        return None
    if concept.text:
        return concept.text
    for coding in codings(concept):
        if coding.display:
            return coding.display
    for coding in codings(concept):
        if coding.system == PKP_FINDING and coding.code in FINDING_DISPLAY:
            return FINDING_DISPLAY[coding.code]
    return next((c.code for c in codings(concept) if c.code), None)


def label_of(resource: Any) -> str:
    return concept_label(getattr(resource, "code", None)) or resource.__resource_type__


def finding_code(observation: Any) -> str | None:
    for coding in codings(observation.code):
        if coding.system == PKP_FINDING:
            return coding.code
    return None


def observation_positive(observation: Any) -> bool:
    """A finding recorded as present: valueBoolean true, a 'yes'-like value, or no value at all."""
    if observation.valueBoolean is not None:
        return bool(observation.valueBoolean)
    if observation.valueCodeableConcept is not None:
        codes = {c.code for c in codings(observation.valueCodeableConcept)}
        text = (observation.valueCodeableConcept.text or "").lower()
        absent = codes & {"373067005", "N", "260385009", "2667000"} or text in ("no", "absent", "negative")
        return not absent
    if observation.valueString is not None:
        return observation.valueString.strip().lower() not in ("no", "false", "absent", "negative", "none")
    return True


def quantity_in(quantity: Any, unit: str) -> float | None:
    """A Quantity in the wanted unit (cm, kg or m), converting the common alternatives."""
    if quantity is None or quantity.value is None:
        return None
    value = float(quantity.value)
    given = (quantity.code or quantity.unit or "").strip()
    factors = {
        "cm": {"cm": 1.0, "mm": 0.1, "m": 100.0, "[in_i]": 2.54, "in": 2.54},
        "kg": {"kg": 1.0, "g": 0.001, "[lb_av]": 0.45359237, "lb": 0.45359237, "lbs": 0.45359237},
        "m": {"m": 1.0, "cm": 0.01, "mm": 0.001, "[in_i]": 0.0254, "in": 0.0254},
    }[unit]
    factor = factors.get(given)
    return None if factor is None else value * factor


def value_text(observation: Any) -> str | None:
    if observation.valueQuantity is not None and observation.valueQuantity.value is not None:
        q = observation.valueQuantity
        return f"{q.value:g} {q.unit or q.code or ''}".strip()
    if observation.valueString:
        return observation.valueString
    if observation.valueCodeableConcept is not None:
        return observation.valueCodeableConcept.text or next(
            (c.display or c.code for c in codings(observation.valueCodeableConcept)), None)
    return None


def ddimer_positive(observation: Any) -> bool | None:
    """Positive or negative from the Observation's own interpretation or reference range (codes.md §7)."""
    for interpretation in observation.interpretation or []:
        codes = {c.code for c in codings(interpretation)}
        if codes & {"H", "HH", "A", "AA", "POS", "DET"}:
            return True
        if codes & {"N", "NEG", "ND", "L"}:
            return False
    q = observation.valueQuantity
    if q is not None and q.value is not None:
        for reference in observation.referenceRange or []:
            if reference.high is not None and reference.high.value is not None:
                return float(q.value) > float(reference.high.value)
    if observation.valueCodeableConcept is not None:
        codes = {c.code for c in codings(observation.valueCodeableConcept)}
        if codes & {"10828004", "POS"}:
            return True
        if codes & {"260385009", "NEG"}:
            return False
    if observation.valueString:
        text = observation.valueString.lower()
        if "positive" in text or "raised" in text or "elevated" in text:
            return True
        if "negative" in text or "normal" in text:
            return False
    return None


def text_result(text: str | None) -> str:
    """K-10 / G-08 on report text: an affirmed finding is abnormal ("effusion-only" when effusion is the only one);
    else an affirmed normal phrase is normal; negated findings ("no meniscal tear") do not count; else unknown."""
    if not text or not text.strip():
        return "unknown"
    text = text[:TEXT_CAP]
    clauses = Clauses(text)
    findings = {m.group().lower() for m in _RESULT_FINDING.finditer(text) if clauses.affirmed_at(m.start())}
    if findings:
        if all(f.startswith("effusion") for f in findings):
            return "effusion-only"
        return "abnormal"
    return "normal" if clauses.affirmed(_NORMAL_RESULT, text) else "unknown"


def _coded_result(concepts: list[Any]) -> str | None:
    codes = {c.code for concept in concepts for c in codings(concept)}
    if codes & _NORMAL_CODES:
        return "normal"
    if codes & _ABNORMAL_CODES:
        return "abnormal"
    return None


def report_result(report: Any) -> str:
    """K-10: a coded conclusion first (SNOMED normal / abnormal), then the conclusion text."""
    coded = _coded_result(list(report.conclusionCode or []))
    if coded:
        return coded
    texts = [report.conclusion or ""] + [c.text or "" for c in report.conclusionCode or []]
    return text_result("\n".join(t for t in texts if t))


def observation_result(observation: Any) -> str:
    """K-10: interpretation N / A (and SNOMED normal / abnormal values) first, then the text of the result."""
    for interpretation in observation.interpretation or []:
        codes = {c.code for c in codings(interpretation)}
        if "N" in codes:
            return "normal"
        if codes & {"A", "AA", "H", "L", "HH", "LL"}:
            return "abnormal"
    coded = _coded_result([observation.valueCodeableConcept] if observation.valueCodeableConcept else [])
    if coded:
        return coded
    texts = [observation.valueString or ""] + [n.text or "" for n in observation.note or []]
    texts += [i.text or "" for i in observation.interpretation or []]
    if observation.valueCodeableConcept is not None:
        texts.append(observation.valueCodeableConcept.text or "")
    return text_result("\n".join(t for t in texts if t))


def near(a: date | None, b: date | None) -> bool:
    return a is not None and b is not None and timedelta(0) <= (b - a) <= timedelta(days=7)


