"""Facts step: a typed, immutable summary of the patient, each fact carrying what proved it.

Data rules of rules.md §0 apply here (G-01 status filtering, G-03 dates, G-05 posterior
localisation, G-06 laterality, G-08 prior imaging), so the rules never look at raw FHIR.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from .knowledge import Knowledge
from .parse import ParsedRecord
from .terminology import ICD10CM, SNOMED

_INACTIVE_VERIFICATION = {"entered-in-error", "refuted"}
_ACTIVE_CLINICAL = {"active", "recurrence", "relapse"}
_SUSPECTED_VERIFICATION = {"provisional", "differential", "unconfirmed"}

_POSTERIOR = re.compile(r"\b(popliteal|posterior|back of (the )?knee|behind (the )?knee)\b", re.I)
_ANTERIOR = re.compile(r"\b(anterior|patell\w*|front of (the )?knee|kneecap)\b", re.I)
_POSTERIOR_QUALIFIER = "255551008"
_SIDE_QUALIFIERS = {"24028007": "right", "7771000": "left", "51440002": "both"}
_SIDE_TEXT = (
    (re.compile(r"\b(bilateral|both)\b", re.I), "both"),
    (re.compile(r"\bright\b", re.I), "right"),
    (re.compile(r"\bleft\b", re.I), "left"),
)
# ICD-10-CM families whose last character carries the side (rules.md G-06: per family, not a fixed
# position). Each entry: code prefix (dots removed) -> {character: side}.
_ICD_SIDE_FAMILIES: dict[str, dict[str, str]] = {
    "M2556": {"1": "right", "2": "left"},
    "M7121": {"": "right"},
    "M7122": {"": "left"},
}


@dataclass(frozen=True)
class Evidence:
    """One piece of patient data behind a fact: what it is, where it is, and when."""

    reference: str
    label: str
    when: date | None
    side: str = "unknown"  # right | left | both | unknown

    def line(self) -> str:
        when = self.when.isoformat() if self.when else "date not recorded"
        side = f", {self.side}" if self.side in ("right", "left", "both") else ""
        return f"{self.label}{side} ({when}; {self.reference})"


@dataclass(frozen=True)
class ImagingOnRecord:
    modality: str
    evidence: Evidence


@dataclass(frozen=True)
class DraftOrder:
    reference: str
    modality: str | None
    label: str
    side: str


@dataclass(frozen=True)
class PatientFacts:
    today: date
    age: int | None
    posterior_knee_pain: tuple[Evidence, ...]
    pain_onset: date | None
    explaining_diagnoses: tuple[Evidence, ...]
    recent_knee_injuries: tuple[Evidence, ...]
    mechanical_or_red_flags: tuple[Evidence, ...]
    imaging: tuple[ImagingOnRecord, ...]
    draft_orders: tuple[DraftOrder, ...]
    left_out_types: frozenset[str]

    @property
    def painful_side(self) -> str:
        sides = {e.side for e in self.posterior_knee_pain} - {"unknown"}
        if not sides:
            return "unknown"
        return sides.pop() if len(sides) == 1 else "both"

    def weeks_of_pain(self) -> float | None:
        return None if self.pain_onset is None else (self.today - self.pain_onset).days / 7


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


def _code_of(status: Any) -> str | None:
    for coding in getattr(status, "coding", None) or []:
        if coding.code:
            return coding.code
    return None


def condition_counts(condition: Any) -> bool:
    """rules.md G-01: current conditions only (suspected ones count too)."""
    verification = _code_of(condition.verificationStatus)
    if verification in _INACTIVE_VERIFICATION:
        return False
    clinical = _code_of(condition.clinicalStatus)
    if clinical is None:
        return condition.abatementDateTime is None and condition.abatementString is None and (
            condition.abatementPeriod is None and condition.abatementAge is None
        )
    return clinical in _ACTIVE_CLINICAL


def condition_onset(condition: Any) -> date | None:
    if condition.onsetDateTime is not None:
        return to_date(condition.onsetDateTime)
    if condition.onsetPeriod is not None and condition.onsetPeriod.start is not None:
        return to_date(condition.onsetPeriod.start)
    return to_date(condition.recordedDate)


def side_of_codeable(concept: Any) -> str:
    for coding in getattr(concept, "coding", None) or []:
        if coding.system == ICD10CM and coding.code:
            key = coding.code.replace(".", "").upper()
            for prefix, sides in _ICD_SIDE_FAMILIES.items():
                if key.startswith(prefix):
                    side = sides.get(key[len(prefix):len(prefix) + 1]) or sides.get("")
                    if side:
                        return side
        if coding.system == SNOMED and coding.code in _SIDE_QUALIFIERS:
            return _SIDE_QUALIFIERS[coding.code]
    return side_of_text(getattr(concept, "text", None))


def side_of_text(text: str | None) -> str:
    if text:
        for pattern, side in _SIDE_TEXT:
            if pattern.search(text):
                return side
    return "unknown"


def _texts(resource: Any) -> list[str]:
    out = []
    code = getattr(resource, "code", None)
    if code is not None:
        out.append(code.text or "")
        out += [c.display or "" for c in code.coding or []]
    for site in getattr(resource, "bodySite", None) or []:
        out.append(site.text or "")
        out += [c.display or "" for c in site.coding or []]
    for note in getattr(resource, "note", None) or []:
        out.append(note.text or "")
    return [t for t in out if t]


def resource_side(resource: Any) -> str:
    """Side from the code first (ICD laterality), then bodySite qualifiers or text."""
    side = side_of_codeable(getattr(resource, "code", None))
    if side == "unknown":
        for site in getattr(resource, "bodySite", None) or []:
            side = side_of_codeable(site)
            if side != "unknown":
                break
    return side


def is_posterior(condition: Any) -> bool | None:
    """True: localised behind the knee; False: explicitly anterior; None: location not recorded."""
    for site in condition.bodySite or []:
        if any(c.system == SNOMED and c.code == _POSTERIOR_QUALIFIER for c in site.coding or []):
            return True
    text = " ".join(_texts(condition))
    if _POSTERIOR.search(text):
        return True
    if _ANTERIOR.search(text):
        return False
    return None


def _label(resource: Any) -> str:
    code = getattr(resource, "code", None)
    if code is not None:
        if code.text:
            return code.text
        for coding in code.coding or []:
            if coding.display:
                return coding.display
        for coding in code.coding or []:
            if coding.code:
                return coding.code
    return resource.__resource_type__


def _ref(resource: Any) -> str:
    return f"{resource.__resource_type__}/{resource.id}" if resource.id else resource.__resource_type__


def _evidence(resource: Any, when: date | None, side: str) -> Evidence:
    return Evidence(_ref(resource), _label(resource), when, side)


def _modality(knowledge: Knowledge, concept: Any) -> str | None:
    for modality, vs in (("xray", "knee-xray"), ("mri", "knee-mri"), ("us-knee", "knee-us"),
                         ("venous-duplex", "venous-duplex")):
        if knowledge.vs(vs).matches(concept):
            return modality
    return None


def _age(patient: Any, today: date) -> int | None:
    birth = to_date(getattr(patient, "birthDate", None)) if patient is not None else None
    if birth is None:
        return None
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def build_facts(
    record: ParsedRecord,
    knowledge: Knowledge,
    today: date,
    draft_orders: tuple[Any, ...] = (),
) -> PatientFacts:
    vs = knowledge.vs
    posterior: list[Evidence] = []
    onsets: list[date] = []
    explaining: list[Evidence] = []
    injuries: list[Evidence] = []
    flags: list[Evidence] = []

    for condition in record.of("Condition"):
        if not condition_counts(condition):
            continue
        onset = condition_onset(condition)
        side = resource_side(condition)
        if onset is not None and onset > today:
            continue  # a future-dated entry is not current data
        evidence = _evidence(condition, onset, side)
        is_knee_pain = vs("knee-pain").matches(condition.code)
        posterior_dx = vs("posterior-knee-diagnosis").matches(condition.code)
        if (is_knee_pain and is_posterior(condition)) or posterior_dx:
            posterior.append(evidence)
            if onset is not None:
                onsets.append(onset)
        if vs("explaining-diagnosis").matches(condition.code):
            explaining.append(evidence)
        if vs("knee-injury").matches(condition.code) and onset is not None and (today - onset).days <= 42:
            injuries.append(evidence)
        if vs("mechanical-or-red-flag").matches(condition.code):
            flags.append(evidence)

    for observation in record.of("Observation"):
        if observation.status in ("entered-in-error", "cancelled"):
            continue
        if vs("mechanical-or-red-flag").matches(observation.code) and observation.valueBoolean is not False:
            flags.append(_evidence(observation, to_date(observation.effectiveDateTime), "unknown"))

    imaging: list[ImagingOnRecord] = []
    for procedure in record.of("Procedure"):
        if procedure.status != "completed":
            continue
        modality = _modality(knowledge, procedure.code)
        if modality:
            when = to_date(procedure.performedDateTime) or (
                to_date(procedure.performedPeriod.start) if procedure.performedPeriod else None
            )
            imaging.append(ImagingOnRecord(modality, _evidence(procedure, when, resource_side(procedure))))
    for report in record.of("DiagnosticReport"):
        if report.status in ("entered-in-error", "cancelled"):
            continue
        modality = _modality(knowledge, report.code)
        if modality:
            when = to_date(report.effectiveDateTime) or to_date(report.issued)
            imaging.append(ImagingOnRecord(modality, _evidence(report, when, resource_side(report))))

    drafts = tuple(
        DraftOrder(_ref(order), _modality(knowledge, order.code), _label(order), resource_side(order))
        for order in draft_orders
    )
    return PatientFacts(
        today=today,
        age=_age(record.patient, today),
        posterior_knee_pain=tuple(posterior),
        pain_onset=min(onsets) if onsets else None,
        explaining_diagnoses=tuple(explaining),
        recent_knee_injuries=tuple(injuries),
        mechanical_or_red_flags=tuple(flags),
        imaging=tuple(imaging),
        draft_orders=drafts,
        left_out_types=frozenset(record.rejected_types()),
    )
