"""Chart index step: one pass over the raw FHIR JSON of a hook call, before any model validation.

For every resource it reads its codings, its clinical date (rules.md G-11), its side (G-06) and its
human-readable text (G-10), and looks each code and text up once against every value set. Only a
resource that some rule reads (it matches a value set, or its structure is one a rule reads) is then
validated with ``fhir.resources`` R4B; for concepts where only the newest value matters (G-07) only
the newest valid one is. The facts step reads this index, never the raw JSON.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource
from pydantic import ValidationError

from .fhir_dates import clinical_dates, date_of, has_zoneless, with_zones
from .knowledge import Knowledge
from .terminology import ICD10CM, PKP_FINDING, SNOMED, TEXT_CAP, Terminology

log = logging.getLogger(__name__)

RULE_RESOURCE_TYPES = (
    "Patient", "Condition", "Observation", "Procedure", "MedicationRequest", "Encounter", "DiagnosticReport",
    "ServiceRequest",
)
_MODELS = {name: get_fhir_model_class(name) for name in RULE_RESOURCE_TYPES}
# Meta elements of the FHIR standard; servers add their own (Medplum: project, author, compartment…).
_STANDARD_META = {"id", "extension", "versionId", "lastUpdated", "source", "profile", "security", "tag"}
_INPATIENT_CLASSES = {"IMP", "ACUTE", "NONAC"}  # W-03: a stay of 3 days or more
_SURGICAL_CATEGORY = "387713003"
_SIDE_QUALIFIERS = {"24028007": "right", "7771000": "left", "51440002": "both"}
_BOTH_TEXT = re.compile(r"\b(?:bilateral|both)\b", re.I)
_RIGHT_TEXT = re.compile(r"\bright\b|\b(?:r|rt)\.? (?=(?:calf|leg|lower leg|knee|thigh|popliteal|foot|ankle)\b)", re.I)
_LEFT_TEXT = re.compile(r"\bleft\b|\b(?:l|lt)\.? (?=(?:calf|leg|lower leg|knee|thigh|popliteal|foot|ankle)\b)", re.I)


class Malformed(ValueError):
    """An element the index reads has the wrong JSON type: the resource is left out and named."""


@dataclass(frozen=True)
class Rejected:
    reference: str
    resource_type: str
    reason: str

    def as_json(self) -> dict[str, str]:
        return {"reference": self.reference, "reason": self.reason}


@dataclass(frozen=True)
class ChartEntry:
    """One resource a rule reads: its validated model and what the index read from it."""

    reference: str
    resource: Resource
    concepts: frozenset[str]  # value sets matched by its codes or affirmed by its text (G-04, G-10)
    reason_concepts: frozenset[str]  # value sets of its reasonCode (why a medicine was given)
    when: date | None  # clinical date (G-11): for display and for onset and duration
    recent: date | None  # date for recency windows: a period counts by its end, or today while open
    side: str  # right | left | both | unknown (G-06)
    text: str  # every human-readable element, one per line (G-10)

    @property
    def resource_type(self) -> str:
        return self.resource.__resource_type__


@dataclass(frozen=True)
class ChartIndex:
    patient: Resource | None
    entries: dict[str, tuple[ChartEntry, ...]]
    drafts: tuple[ChartEntry, ...]
    rejected: tuple[Rejected, ...]
    not_read: int  # resources no rule reads: neither validated nor listed
    birth_date: date | None = None

    def of(self, resource_type: str) -> tuple[ChartEntry, ...]:
        return self.entries.get(resource_type, ())

    def rejected_types(self) -> set[str]:
        return {r.resource_type for r in self.rejected}


@dataclass
class _Candidate:
    position: int
    reference: str
    resource_type: str
    raw: dict[str, Any]
    concepts: frozenset[str]
    reason_concepts: frozenset[str]
    when: date | None
    recent: date | None
    side: str
    text: str
    structural: bool = False
    at: datetime | None = None  # the clinical date's instant, when it has a time


# --- reading raw JSON safely ----------------------------------------------------------------------

def _obj(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Malformed(f"{where}: expected an object")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise Malformed(f"{where}: expected an array")
    return value


def _str(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise Malformed(f"{where}: expected a string")
    return value


def _concepts_of(raw: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """A CodeableConcept element, or a list of them, as a list of objects."""
    value = raw.get(key)
    if isinstance(value, list):
        return [_obj(v, f"{key}[{i}]") for i, v in enumerate(value)]
    return [_obj(value, key)] if value is not None else []


def _codings(concept: dict[str, Any], where: str) -> list[tuple[str, str, str | None]]:
    out = []
    for i, coding in enumerate(_list(concept.get("coding"), f"{where}.coding")):
        coding = _obj(coding, f"{where}.coding[{i}]")
        system, code = _str(coding.get("system"), f"{where}.coding[{i}].system"), coding.get("code")
        if code is not None and not isinstance(code, str):
            raise Malformed(f"{where}.coding[{i}].code: expected a string")
        out.append((system or "", code or "", _str(coding.get("display"), f"{where}.coding[{i}].display")))
    return out


# --- text (G-10) and side (G-06) ------------------------------------------------------------------

def side_of_text(text: str | None) -> str:
    if not text:
        return "unknown"
    if _BOTH_TEXT.search(text):
        return "both"
    right, left = bool(_RIGHT_TEXT.search(text)), bool(_LEFT_TEXT.search(text))
    if right and left:
        return "both"
    return "right" if right else "left" if left else "unknown"


class _Reader:
    """Reads one raw resource: codings, texts, side, dates; raises Malformed where its shape is wrong."""

    def __init__(self, knowledge: Knowledge, terminology: Terminology, zone: tzinfo, today: date):
        self.knowledge = knowledge
        self.terms = terminology
        self.zone = zone
        self.today = today

    def primary_concepts(self, rtype: str, raw: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        if rtype == "MedicationRequest":
            return [("medicationCodeableConcept", c) for c in _concepts_of(raw, "medicationCodeableConcept")]
        if rtype == "Encounter":
            return [(f"type[{i}]", c) for i, c in enumerate(_concepts_of(raw, "type"))] + \
                [(f"reasonCode[{i}]", c) for i, c in enumerate(_concepts_of(raw, "reasonCode"))]
        concepts = [("code", c) for c in _concepts_of(raw, "code")]
        if rtype == "Observation":
            concepts += [("valueCodeableConcept", c) for c in _concepts_of(raw, "valueCodeableConcept")]
        if rtype == "DiagnosticReport":
            concepts += [(f"conclusionCode[{i}]", c) for i, c in enumerate(_concepts_of(raw, "conclusionCode"))]
        return concepts

    def read(self, position: int, rtype: str, raw: dict[str, Any], birth: date | None) -> _Candidate:
        rid = raw.get("id")
        reference = f"{rtype}/{rid}" if isinstance(rid, str) else f"{rtype} #{position}"
        coded: set[str] = set()
        texts: list[str] = []
        icd_coded = False
        unrecognised_displays: list[str] = []
        for where, concept in self.primary_concepts(rtype, raw):
            text = _str(concept.get("text"), f"{where}.text")
            if text:
                texts.append(text)
            for system, code, display in _codings(concept, where):
                found = self.terms.code_concepts(system, code) if code else frozenset()
                coded |= found
                icd_coded = icd_coded or (system == ICD10CM and bool(code) and where == "code")
                if display and not found:
                    unrecognised_displays.append(display)
        texts += unrecognised_displays
        texts += self._other_texts(rtype, raw)
        reason_texts, reason_coded = self._reasons(rtype, raw)
        joined = "\n".join(t[:TEXT_CAP] for t in texts if t)
        from_text = self.terms.text_concepts(joined) if joined else frozenset()
        if icd_coded and rtype != "Observation":
            # G-04: a Condition's non-matching ICD-10-CM code is not overruled by its text.
            from_text -= self.terms.icd_value_sets
        reason_joined = "\n".join(t[:TEXT_CAP] for t in reason_texts if t)
        reasons = frozenset(reason_coded) | (self.terms.text_concepts(reason_joined) if reason_joined else frozenset())
        when, recent, at = clinical_dates(rtype, raw, self.zone, self.today, birth)
        return _Candidate(position, reference, rtype, raw, frozenset(coded) | from_text, reasons, when, recent,
                          self.side(rtype, raw), joined, self._structural(rtype, raw), at)

    def _other_texts(self, rtype: str, raw: dict[str, Any]) -> list[str]:
        out: list[str] = []
        for i, note in enumerate(_list(raw.get("note"), "note")):
            out.append(_str(_obj(note, f"note[{i}]").get("text"), f"note[{i}].text") or "")
        for i, site in enumerate(_concepts_of(raw, "bodySite")):
            out.append(_str(site.get("text"), f"bodySite[{i}].text") or "")
            out += [d for _, _, d in _codings(site, f"bodySite[{i}]") if d]
        for key in ("valueString", "conclusion"):
            out.append(_str(raw.get(key), key) or "")
        for i, interpretation in enumerate(_concepts_of(raw, "interpretation")):
            out.append(_str(interpretation.get("text"), f"interpretation[{i}].text") or "")
        for i, component in enumerate(_list(raw.get("component"), "component")):
            component = _obj(component, f"component[{i}]")
            code = _obj(component.get("code"), f"component[{i}].code")
            out.append(_str(code.get("text"), f"component[{i}].code.text") or "")
            out.append(_str(component.get("valueString"), f"component[{i}].valueString") or "")
            value = _obj(component.get("valueCodeableConcept"), f"component[{i}].valueCodeableConcept")
            out.append(_str(value.get("text"), f"component[{i}].valueCodeableConcept.text") or "")
        if rtype == "Procedure":
            out.append(_str(_obj(raw.get("outcome"), "outcome").get("text"), "outcome.text") or "")
        if rtype == "MedicationRequest":
            out.append(_str(_obj(raw.get("medicationReference"), "medicationReference").get("display"),
                            "medicationReference.display") or "")
        return [t for t in out if t]

    def _reasons(self, rtype: str, raw: dict[str, Any]) -> tuple[list[str], set[str]]:
        if rtype not in ("MedicationRequest", "Procedure", "ServiceRequest"):
            return [], set()
        texts: list[str] = []
        coded: set[str] = set()
        for i, reason in enumerate(_concepts_of(raw, "reasonCode")):
            texts.append(_str(reason.get("text"), f"reasonCode[{i}].text") or "")
            for system, code, display in _codings(reason, f"reasonCode[{i}]"):
                found = self.terms.code_concepts(system, code) if code else frozenset()
                coded |= found
                if display and not found:
                    texts.append(display)
        for i, reference in enumerate(_list(raw.get("reasonReference"), "reasonReference")):
            texts.append(_str(_obj(reference, f"reasonReference[{i}]").get("display"),
                              f"reasonReference[{i}].display") or "")
        return texts, coded

    def side(self, rtype: str, raw: dict[str, Any]) -> str:
        """G-06: the code's ICD-10-CM laterality, SNOMED side qualifiers or text of code and body site, then any text."""
        for concept in _concepts_of(raw, "code") + _concepts_of(raw, "bodySite"):
            for system, code, _ in _codings(concept, "code"):
                if system == ICD10CM and code:
                    side = self.knowledge.icd_side(code)
                    if side and side != "unknown":
                        return side
                if system == SNOMED and code in _SIDE_QUALIFIERS:
                    return _SIDE_QUALIFIERS[code]
            side = side_of_text(concept.get("text") if isinstance(concept.get("text"), str) else None)
            if side != "unknown":
                return side
            for _, _, display in _codings(concept, "code"):
                side = side_of_text(display)
                if side != "unknown":
                    return side
        return side_of_text("\n".join(self._other_texts(rtype, raw))[:TEXT_CAP]) if rtype == "Observation" else "unknown"

    def _structural(self, rtype: str, raw: dict[str, Any]) -> bool:
        """Resources a rule reads by their structure rather than a value set."""
        if rtype == "Encounter":
            klass = raw.get("class")
            return isinstance(klass, dict) and klass.get("code") in _INPATIENT_CLASSES
        if rtype == "Procedure":
            return any(code == _SURGICAL_CATEGORY for c in _concepts_of(raw, "category")
                       for _, code, _ in _codings(c, "category"))
        if rtype == "Observation":
            return any(system == PKP_FINDING for c in _concepts_of(raw, "code") for system, _, _ in _codings(c, "code"))
        return False


# --- validation -----------------------------------------------------------------------------------

def _without_vendor_meta(raw: dict[str, Any]) -> dict[str, Any]:
    meta = raw.get("meta")
    if isinstance(meta, dict) and not meta.keys() <= _STANDARD_META:
        raw = {**raw, "meta": {k: v for k, v in meta.items() if k in _STANDARD_META}}
    return raw


def rejection_reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors(include_input=False, include_url=False)[:3]:
            loc = ".".join(str(p) for p in err["loc"]) or "(resource)"
            parts.append(f"{loc}: {err['type']}")
        return "; ".join(parts)
    if isinstance(exc, Malformed):
        return str(exc)
    if isinstance(exc, KeyError):
        return "unknown resourceType inside the resource"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return f"invalid value ({type(exc).__name__})"


def validate(rtype: str, raw: dict[str, Any], zone: tzinfo) -> Resource:
    """The R4 model of a raw resource, its zone-less dateTimes read in the service's zone (G-11)."""
    raw = _without_vendor_meta(raw)
    if has_zoneless(raw):
        raw = with_zones(raw, zone)
    return _MODELS[rtype].model_validate(raw)


def _current_value(candidate: _Candidate, today: date) -> bool:
    """G-07 reads the newest observation that is not withdrawn, not future-dated, and has a value."""
    raw = candidate.raw
    if raw.get("status") in ("entered-in-error", "cancelled") or (candidate.when or today) > today:
        return False
    quantity = raw.get("valueQuantity")
    if isinstance(quantity, dict):
        return quantity.get("value") is not None
    return any(k.startswith("value") for k in raw)


class _Collector:
    def __init__(self, zone: tzinfo):
        self.zone = zone
        self.rejected: list[Rejected] = []

    def entry(self, candidate: _Candidate) -> ChartEntry | None:
        try:
            model = validate(candidate.resource_type, candidate.raw, self.zone)
        except (ValidationError, KeyError, ValueError, TypeError, RecursionError) as exc:
            self.reject(candidate.reference, candidate.resource_type, exc)
            return None
        return ChartEntry(candidate.reference, model, candidate.concepts, candidate.reason_concepts, candidate.when,
                          candidate.recent, candidate.side, candidate.text)

    def reject(self, reference: str, rtype: str, exc: Exception) -> None:
        reason = rejection_reason(exc)
        log.warning("left out %s: %s", reference, reason)
        self.rejected.append(Rejected(reference, rtype, reason))


def build_index(
    raw_resources: Iterable[Any],
    draft_orders: Iterable[Any],
    knowledge: Knowledge,
    today: date,
    zone: tzinfo,
) -> ChartIndex:
    terms = knowledge.terminology
    reader = _Reader(knowledge, terms, zone, today)
    collector = _Collector(zone)
    resources = list(raw_resources)
    seen: set[tuple[str, str]] = set()
    patient_raw = next((r for r in resources if isinstance(r, dict) and r.get("resourceType") == "Patient"), None)
    birth = date_of(patient_raw.get("birthDate"), zone) if patient_raw else None

    not_read = 0
    read: list[_Candidate] = []
    latest: dict[str, list[_Candidate]] = {}
    patient: Resource | None = None
    for position, raw in enumerate(resources):
        if not isinstance(raw, dict):
            collector.rejected.append(Rejected(f"#{position}", "unknown", "not a JSON object"))
            continue
        rtype = raw.get("resourceType")
        if rtype not in _MODELS or rtype == "ServiceRequest":
            not_read += 1
            continue
        rid = raw.get("id")
        if isinstance(rid, str):
            if (rtype, rid) in seen:
                continue  # the same resource from two prefetch keys, a prefetch and a fetch, or overlapping pages
            seen.add((rtype, rid))
        if rtype == "Patient":
            if patient is None:
                try:
                    patient = validate(rtype, raw, zone)
                except (ValidationError, KeyError, ValueError, TypeError, RecursionError) as exc:
                    collector.reject(f"Patient/{rid}", rtype, exc)
            continue
        try:
            candidate = reader.read(position, rtype, raw, birth)
        except (Malformed, RecursionError) as exc:
            collector.reject(f"{rtype}/{rid}" if isinstance(rid, str) else f"{rtype} #{position}", rtype, exc)
            continue
        if not candidate.concepts and not candidate.structural:
            not_read += 1
        elif candidate.concepts <= terms.latest_only and not candidate.structural:
            for concept in candidate.concepts:
                latest.setdefault(concept, []).append(candidate)
        else:
            read.append(candidate)

    # G-07: the newest of each latest-only concept that validates and carries a value; the rest are not read.
    chosen: dict[int, _Candidate] = {}
    entries_by_position: dict[int, ChartEntry] = {}
    for concept in sorted(latest):
        group = sorted(latest[concept], key=lambda c: (c.when or date.min, c.at or datetime.min.replace(tzinfo=zone)),
                       reverse=True)
        for candidate in group:
            if candidate.position in entries_by_position:
                break
            entry = collector.entry(candidate) if _current_value(candidate, today) else None
            if entry is not None:
                entries_by_position[candidate.position] = entry
                chosen[candidate.position] = candidate
                break
    in_latest = {c.position for group in latest.values() for c in group}
    not_read += len(in_latest - set(chosen))
    for candidate in read:
        entry = collector.entry(candidate)
        if entry is not None:
            entries_by_position[candidate.position] = entry

    entries: dict[str, list[ChartEntry]] = {}
    for position in sorted(entries_by_position):
        entry = entries_by_position[position]
        entries.setdefault(entry.resource_type, []).append(entry)

    drafts: list[ChartEntry] = []
    for position, raw in enumerate(draft_orders):
        if not isinstance(raw, dict):
            continue
        try:
            candidate = reader.read(position, "ServiceRequest", raw, birth)
        except (Malformed, RecursionError) as exc:
            collector.reject(f"ServiceRequest #{position}", "ServiceRequest", exc)
            continue
        entry = collector.entry(candidate)
        if entry is not None:
            drafts.append(entry)
    return ChartIndex(patient, {k: tuple(v) for k, v in entries.items()}, tuple(drafts), tuple(collector.rejected),
                      not_read, birth)
