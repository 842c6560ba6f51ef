"""Readers of FHIR R4 elements the facts step needs: dates, statuses, sides, labels, values, results.

Plain functions of ``fhir.resources`` models (or of a Knowledge, for ICD-10-CM laterality); no rule
logic lives here.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Any

from .knowledge import Knowledge
from .terminology import ICD10CM, PKP_FINDING, SNOMED

_INACTIVE_VERIFICATION = {"entered-in-error", "refuted"}
_ACTIVE_CLINICAL = {"active", "recurrence", "relapse"}
_SUSPECTED_VERIFICATION = {"provisional", "differential", "unconfirmed"}
_SIDE_QUALIFIERS = {"24028007": "right", "7771000": "left", "51440002": "both"}
_SIDE_TEXT = (
    (re.compile(r"\b(bilateral|both)\b", re.I), "both"),
    (re.compile(r"\bright\b", re.I), "right"),
    (re.compile(r"\bleft\b", re.I), "left"),
)
_NORMAL_RESULT = re.compile(r"\b(normal|no abnormalit\w*|unremarkable|no (acute )?(bony )?(injury|pathology|fracture))\b",
                            re.I)
_EFFUSION_ONLY = re.compile(r"\beffusion\b", re.I)

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


def condition_onset(condition: Any) -> date | None:
    if condition.onsetDateTime is not None:
        return to_date(condition.onsetDateTime)
    if condition.onsetPeriod is not None and condition.onsetPeriod.start is not None:
        return to_date(condition.onsetPeriod.start)
    return to_date(condition.recordedDate)


def observation_when(observation: Any) -> date | None:
    if observation.effectiveDateTime is not None:
        return to_date(observation.effectiveDateTime)
    if observation.effectivePeriod is not None and observation.effectivePeriod.start is not None:
        return to_date(observation.effectivePeriod.start)
    return to_date(observation.issued)


def procedure_when(procedure: Any) -> date | None:
    if procedure.performedDateTime is not None:
        return to_date(procedure.performedDateTime)
    if procedure.performedPeriod is not None:
        return to_date(procedure.performedPeriod.end or procedure.performedPeriod.start)
    return None


def codings(concept: Any) -> list[Any]:
    return list(getattr(concept, "coding", None) or [])


def body_sites(resource: Any) -> list[Any]:
    """bodySite as a list: a list on Condition and Procedure, a single concept on Observation."""
    sites = getattr(resource, "bodySite", None)
    if sites is None:
        return []
    return list(sites) if isinstance(sites, list | tuple) else [sites]


def texts_of(resource: Any) -> list[str]:
    out: list[str] = []
    code = getattr(resource, "code", None)
    if code is not None:
        out.append(code.text or "")
        out += [c.display or "" for c in codings(code)]
    for site in body_sites(resource):
        out.append(site.text or "")
        out += [c.display or "" for c in codings(site)]
    for note in getattr(resource, "note", None) or []:
        out.append(note.text or "")
    value_string = getattr(resource, "valueString", None)
    if value_string:
        out.append(value_string)
    return [t for t in out if t]


class Reader:
    """Reads sides and labels with the knowledge's laterality table."""

    def __init__(self, knowledge: Knowledge):
        self.knowledge = knowledge

    def side_of_codeable(self, concept: Any) -> str:
        for coding in codings(concept):
            if coding.system == ICD10CM and coding.code:
                side = self.knowledge.icd_side(coding.code)
                if side and side != "unknown":
                    return side
            if coding.system == SNOMED and coding.code in _SIDE_QUALIFIERS:
                return _SIDE_QUALIFIERS[coding.code]
        return side_of_text(getattr(concept, "text", None))

    def side(self, resource: Any) -> str:
        """Side from the code first (ICD laterality), then bodySite qualifiers or text."""
        side = self.side_of_codeable(getattr(resource, "code", None))
        if side == "unknown":
            for site in body_sites(resource):
                side = self.side_of_codeable(site)
                if side != "unknown":
                    break
        return side


def side_of_text(text: str | None) -> str:
    if text:
        for pattern, side in _SIDE_TEXT:
            if pattern.search(text):
                return side
    return "unknown"


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


def ref_of(resource: Any) -> str:
    return f"{resource.__resource_type__}/{resource.id}" if resource.id else resource.__resource_type__


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


def text_result(text: str) -> str:
    if not text:
        return "unknown"
    if _NORMAL_RESULT.search(text):
        return "normal"
    return "unknown"


def report_result(report: Any) -> str:
    text = " ".join([report.conclusion or ""] + [c.text or "" for c in report.conclusionCode or []] +
                    [d.display or "" for c in report.conclusionCode or [] for d in codings(c)])
    if not text.strip():
        return "unknown"
    if _NORMAL_RESULT.search(text):
        return "effusion-only" if _EFFUSION_ONLY.search(text) and "no effusion" not in text.lower() else "normal"
    if _EFFUSION_ONLY.search(text) and re.search(r"\bonly\b|\bsmall\b|\bsole\b", text, re.I):
        return "effusion-only"
    return "abnormal"


def observation_result(observation: Any) -> str:
    for interpretation in observation.interpretation or []:
        codes = {c.code for c in codings(interpretation)}
        if "N" in codes:
            return "normal"
        if codes & {"A", "AA", "H", "L", "HH", "LL"}:
            return "abnormal"
    if observation.valueString:
        return text_result(observation.valueString) if _NORMAL_RESULT.search(observation.valueString) else "abnormal"
    return "unknown"


def near(a: date | None, b: date | None) -> bool:
    return a is not None and b is not None and timedelta(0) <= (b - a) <= timedelta(days=7)


