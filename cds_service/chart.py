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
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo
from typing import Any

from fhir.resources.R4B.resource import Resource
from pydantic import ValidationError

from . import fhir_models
from .errors import KneeCdsError
from .fhir_dates import clinical_dates, date_of, has_zoneless, with_zones
from .knowledge import Knowledge
from .terminology import ICD10CM, PKP_FINDING, SNOMED, TEXT_CAP, Terminology, TextBudget, TextNotRead

log = logging.getLogger(__name__)

_INPATIENT_CLASSES = {"IMP", "ACUTE", "NONAC"}  # W-03: a stay of 3 days or more
_SURGICAL_CATEGORY = "387713003"
_SIDE_QUALIFIERS = {"24028007": "right", "7771000": "left", "51440002": "both"}
_BOTH_TEXT = re.compile(r"\b(?:bilateral|both)\b", re.I)
_RIGHT_TEXT = re.compile(r"\bright\b|\b(?:r|rt)\.? (?=(?:calf|leg|lower leg|knee|thigh|popliteal|foot|ankle)\b)", re.I)
_LEFT_TEXT = re.compile(r"\bleft\b|\b(?:l|lt)\.? (?=(?:calf|leg|lower leg|knee|thigh|popliteal|foot|ankle)\b)", re.I)


class Malformed(KneeCdsError):
    """An element the index reads has the wrong JSON type: the resource is left out and named."""


@dataclass(frozen=True)
class Rejected:
    reference: str
    resource_type: str
    reason: str

    def as_json(self) -> dict[str, str]:
        return {"reference": self.reference, "reason": self.reason}


@dataclass(frozen=True, slots=True)
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


class ChartIndex:
    """What the rules may read of one chart: validated entries by type, the draft orders, and the G-07 concepts.

    Of a G-07 concept (the latest weight, BMI, pain score) only the newest resource with a value is read, and it is
    validated when a fact first asks for it: with a BMI on record, the latest weight and height are never validated.
    So ``rejected`` and ``not_read`` are final once the facts are built.
    """

    def __init__(self, patient: Resource | None, entries: dict[str, tuple[ChartEntry, ...]],
                 drafts: tuple[ChartEntry, ...], latest_only: _LatestOnly, not_read: int,
                 birth_date: date | None = None):
        self.patient = patient
        self.entries = entries
        self.drafts = drafts
        self.birth_date = birth_date
        self._latest_only = latest_only
        self._not_read = not_read

    def of(self, resource_type: str) -> tuple[ChartEntry, ...]:
        return self.entries.get(resource_type, ())

    def latest_only(self, concept: str) -> ChartEntry | None:
        """The newest resource of a G-07 concept that validates and carries a value (None if there is none)."""
        return self._latest_only.newest(concept)

    @property
    def rejected(self) -> tuple[Rejected, ...]:
        return tuple(self._latest_only.collector.rejected)

    @property
    def not_read(self) -> int:
        """Resources no rule reads: neither validated nor listed."""
        return self._not_read + self._latest_only.unread()


@dataclass(slots=True)
class _Candidate:
    position: int
    reference: str
    resource_type: str
    raw: dict[str, Any]
    concepts: frozenset[str]
    reason_concepts: frozenset[str]
    text: str
    structural: bool
    when: date | None = None
    recent: date | None = None
    at: datetime | None = None  # the clinical date's instant, when it has a time


# --- reading raw JSON safely: the message is built only when the shape is wrong --------------------

def _where(parts: tuple[Any, ...]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _obj(value: Any, *where: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if type(value) is not dict:
        raise Malformed(f"{_where(where)}: expected an object")
    return value


def _list(value: Any, *where: Any) -> list[Any]:
    if value is None:
        return []
    if type(value) is not list:
        raise Malformed(f"{_where(where)}: expected an array")
    return value


def _str(value: Any, *where: Any) -> str | None:
    if value is None or type(value) is str:
        return value
    raise Malformed(f"{_where(where)}: expected a string")


def _concepts_of(raw: dict[str, Any], key: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """A CodeableConcept element, or a list of them: (where it is, the object) for each."""
    value = raw.get(key)
    if value is None:
        return []
    if type(value) is list:
        return [((key, i), _obj(v, key, i)) for i, v in enumerate(value)]
    return [((key,), _obj(value, key))]


def _codings(concept: dict[str, Any], *where: Any) -> list[tuple[str, str, str | None]]:
    codings = concept.get("coding")
    if codings is None:
        return []
    if type(codings) is not list:
        raise Malformed(f"{_where((*where, 'coding'))}: expected an array")
    out = []
    for i, coding in enumerate(codings):
        if type(coding) is not dict:
            raise Malformed(f"{_where((*where, 'coding', i))}: expected an object")
        system, code, display = coding.get("system"), coding.get("code"), coding.get("display")
        if not (system is None or type(system) is str) or not (code is None or type(code) is str) or \
                not (display is None or type(display) is str):
            bad = next(k for k in ("system", "code", "display") if not isinstance(coding.get(k), str | None))
            raise Malformed(f"{_where((*where, 'coding', i, bad))}: expected a string")
        out.append((system or "", code or "", display))
    return out


def _concept_list(value: Any, key: str) -> list[dict[str, Any]]:
    """A repeated CodeableConcept element's objects (``_concepts_of`` without the places, for the common path)."""
    if type(value) is not list or not all(type(v) is dict for v in value):
        return [concept for _, concept in _concepts_of({key: value}, key)]  # raises, naming a wrong one; null is {}
    return value


def _where_in(value: Any, key: str, concept: dict[str, Any]) -> tuple[Any, ...]:
    """Where a concept of an element is, for the message when its shape is wrong."""
    if type(value) is dict:
        return (key,)
    return (key, next(i for i, v in enumerate(value) if v is concept))


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


_PRIMARY = {
    "MedicationRequest": ("medicationCodeableConcept",),
    "Encounter": ("type", "reasonCode"),
    "Observation": ("code", "valueCodeableConcept"),
    "DiagnosticReport": ("code", "conclusionCode"),
}
_CODE_ONLY = ("code",)
_STRUCTURAL = {"Encounter", "Procedure"}
_NOTHING: frozenset[str] = frozenset()
_REASONS_READ = {"MedicationRequest", "Procedure", "ServiceRequest"}
_TEXT_ELEMENTS = frozenset({"note", "valueString", "conclusion", "interpretation", "component", "outcome",
                            "medicationReference"})


class _Reader:
    """Reads one raw resource: codings, texts, side, dates; raises Malformed where its shape is wrong."""

    def __init__(self, knowledge: Knowledge, terminology: Terminology, zone: tzinfo, today: date):
        self.knowledge = knowledge
        self.terms = terminology
        self.zone = zone
        self.today = today
        self.text_budget = TextBudget()

    def read(self, position: int, rtype: str, raw: dict[str, Any]) -> _Candidate | None:
        """The resource's value sets, by code and by text (G-04, G-10); None when no rule reads it."""
        coded, texts, icd_coded, pkp_coded = self._primary(rtype, raw)
        if "bodySite" in raw:
            for where, site in _concepts_of(raw, "bodySite"):
                text = _str(site.get("text"), *where, "text")
                if text:
                    texts.append(text[:TEXT_CAP])
                texts += [d[:TEXT_CAP] for _, _, d in _codings(site, *where) if d]
        if not raw.keys().isdisjoint(_TEXT_ELEMENTS):
            texts += self._other_texts(rtype, raw)
        text = "\n".join(texts)
        from_text = self.terms.text_concepts(text, self.text_budget) if text else _NOTHING
        if from_text and icd_coded and rtype != "Observation":
            # G-04: a Condition's non-matching ICD-10-CM code is not overruled by its text.
            from_text -= self.terms.icd_value_sets
        structural = (pkp_coded and rtype == "Observation") or (rtype in _STRUCTURAL and self._structural(rtype, raw))
        if not coded and not from_text and not structural:
            return None
        rid = raw.get("id")
        reference = f"{rtype}/{rid}" if isinstance(rid, str) else f"{rtype} #{position}"
        reasons = self._reasons(raw) if rtype in _REASONS_READ else _NOTHING
        return _Candidate(position, reference, rtype, raw, frozenset(coded) | from_text, reasons, text, structural)

    def _primary(self, rtype: str, raw: dict[str, Any]) -> tuple[set[str], list[str], bool, bool]:
        """(value sets of its codes, its texts, an ICD-10-CM code?, a local finding code?) of the type's main concepts.

        This runs for every resource of every call, so the common shapes are read inline; ``_codings`` and ``_str``
        name the element when a shape is wrong. The displays of codings no value set knows are text (G-10).
        """
        code_concepts = self.terms.code_concepts
        coded: set[str] = set()
        texts: list[str] = []
        displays: list[str] = []
        icd_coded = pkp_coded = False
        for key in _PRIMARY.get(rtype, _CODE_ONLY):
            value = raw.get(key)
            if value is None:
                continue
            for concept in (value,) if type(value) is dict else _concept_list(value, key):
                text = concept.get("text")
                if text is not None:
                    if type(text) is not str:
                        _str(text, *_where_in(value, key, concept), "text")  # raises, naming the element
                    texts.append(text[:TEXT_CAP])
                codings = concept.get("coding")
                if not codings:
                    continue
                if type(codings) is not list:
                    _codings(concept, *_where_in(value, key, concept))  # raises
                for coding in codings:
                    if type(coding) is not dict:
                        _codings(concept, *_where_in(value, key, concept))  # raises
                    code = coding.get("code")
                    system = coding.get("system") or ""
                    if type(code) is not str or type(system) is not str:
                        _codings(concept, *_where_in(value, key, concept))  # raises unless the code is merely absent
                    found = code_concepts(system, code) if code else _NOTHING
                    if found:
                        coded |= found
                    else:
                        display = coding.get("display")
                        if display:
                            if type(display) is not str:
                                _codings(concept, *_where_in(value, key, concept))  # raises
                            displays.append(display[:TEXT_CAP])
                    if key == "code" and system:
                        icd_coded = icd_coded or (system == ICD10CM and bool(code))
                        pkp_coded = pkp_coded or system == PKP_FINDING
        return coded, texts + displays, icd_coded, pkp_coded

    def unread(self, position: int, rtype: str, raw: dict[str, Any]) -> _Candidate:
        """A resource read whatever its codes (a draft order: the order hooks answer about every one)."""
        rid = raw.get("id")
        reference = f"{rtype}/{rid}" if isinstance(rid, str) else f"{rtype} #{position}"
        return _Candidate(position, reference, rtype, raw, _NOTHING, _NOTHING, "", False)

    def date(self, candidate: _Candidate, birth: date | None) -> None:
        """Dates (G-11), read only for resources a rule may read."""
        candidate.when, candidate.recent, candidate.at = clinical_dates(
            candidate.resource_type, candidate.raw, self.zone, self.today, birth)

    def _other_texts(self, rtype: str, raw: dict[str, Any]) -> list[str]:
        out: list[str] = []
        for i, note in enumerate(_list(raw.get("note"), "note")):
            out.append(_str(_obj(note, "note", i).get("text"), "note", i, "text"))
        for key in ("valueString", "conclusion"):
            out.append(_str(raw.get(key), key))
        for where, interpretation in _concepts_of(raw, "interpretation"):
            out.append(_str(interpretation.get("text"), *where, "text"))
        for i, component in enumerate(_list(raw.get("component"), "component")):
            component = _obj(component, "component", i)
            out.append(_str(_obj(component.get("code"), "component", i, "code").get("text"),
                            "component", i, "code", "text"))
            out.append(_str(component.get("valueString"), "component", i, "valueString"))
            value = _obj(component.get("valueCodeableConcept"), "component", i, "valueCodeableConcept")
            out.append(_str(value.get("text"), "component", i, "valueCodeableConcept", "text"))
        if rtype == "Procedure":
            out.append(_str(_obj(raw.get("outcome"), "outcome").get("text"), "outcome", "text"))
        elif rtype == "MedicationRequest":
            out.append(_str(_obj(raw.get("medicationReference"), "medicationReference").get("display"),
                            "medicationReference", "display"))
        return [t[:TEXT_CAP] for t in out if t]

    def _reasons(self, raw: dict[str, Any]) -> frozenset[str]:
        """Value sets of why it was given or done (reasonCode, reasonReference.display): D-08's "started for DVT"."""
        texts: list[str] = []
        coded: set[str] = set()
        for where, reason in _concepts_of(raw, "reasonCode"):
            texts.append(_str(reason.get("text"), *where, "text") or "")
            for system, code, display in _codings(reason, *where):
                found = self.terms.code_concepts(system, code) if code else frozenset()
                coded |= found
                if display and not found:
                    texts.append(display)
        for i, reference in enumerate(_list(raw.get("reasonReference"), "reasonReference")):
            texts.append(_str(_obj(reference, "reasonReference", i).get("display"), "reasonReference", i, "display")
                         or "")
        joined = "\n".join(t[:TEXT_CAP] for t in texts if t)
        return frozenset(coded) | (self.terms.text_concepts(joined, self.text_budget) if joined else frozenset())

    def side(self, candidate: _Candidate) -> str:
        """G-06: ICD-10-CM laterality or SNOMED side qualifiers of code and body site, their text, then any text."""
        raw = candidate.raw
        side_codings: list[tuple[str, str, str | None]] = []
        side_texts: list[str] = []
        for where, concept in _concepts_of(raw, "code") + _concepts_of(raw, "bodySite"):
            side_codings += _codings(concept, *where)
            if concept.get("text"):
                side_texts.append(concept["text"])
        for system, code, _ in side_codings:
            if system == ICD10CM and code:
                side = self.knowledge.icd_side(code)
                if side and side != "unknown":
                    return side
            elif system == SNOMED and code in _SIDE_QUALIFIERS:
                return _SIDE_QUALIFIERS[code]
        for text in side_texts + [d for _, _, d in side_codings if d]:
            side = side_of_text(text)
            if side != "unknown":
                return side
        if candidate.resource_type == "Observation":  # an exam finding's side is often only in its note
            return side_of_text(candidate.text)
        return "unknown"

    def _structural(self, rtype: str, raw: dict[str, Any]) -> bool:
        """Resources a rule reads by their structure rather than a value set."""
        if rtype == "Encounter":
            klass = raw.get("class")
            return isinstance(klass, dict) and klass.get("code") in _INPATIENT_CLASSES
        if rtype == "Procedure" and "category" in raw:
            return any(code == _SURGICAL_CATEGORY for where, c in _concepts_of(raw, "category")
                       for _, code, _ in _codings(c, *where))
        return False


# --- validation -----------------------------------------------------------------------------------

def rejection_reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors(include_input=False, include_url=False)[:3]:
            loc = ".".join(str(p) for p in err["loc"]) or "(resource)"
            parts.append(f"{loc}: {err['type']}")
        return "; ".join(parts)
    if isinstance(exc, (Malformed, TextNotRead)):
        return str(exc)
    if isinstance(exc, KeyError):
        return "unknown resourceType inside the resource"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return f"invalid value ({type(exc).__name__})"


# The elements the facts and cards read, per type (with the choice types' prefixes), plus each type's
# required elements and modifierExtension: a decision is validated on what it rests on. Not resourceType: the
# type chose the model. The rest (narrative, identifiers, addresses, dosage, participants, extensions) is never
# read, and validating a Synthea Patient whole costs a millisecond.
_COMMON = ("id", "modifierExtension", "status", "code", "bodySite", "note")
_READ_ELEMENTS: dict[str, tuple[str, ...]] = {
    "Patient": ("birthDate", "gender", "deceased", "active"),
    # subject where R4 requires it (1..1); the patient is the hook's, checked on the Patient resource
    "Condition": ("subject", "clinicalStatus", "verificationStatus", "onset", "abatement", "recordedDate", "severity"),
    "Observation": ("effective", "issued", "value", "interpretation", "referenceRange", "component",
                    "dataAbsentReason", "method"),
    "Procedure": ("subject", "performed", "outcome", "reasonCode", "reasonReference", "category"),
    "MedicationRequest": ("subject", "intent", "medication", "authoredOn", "reasonCode", "reasonReference", "doNotPerform"),
    "Encounter": ("class", "period", "type", "reasonCode", "reasonReference"),
    "DiagnosticReport": ("effective", "issued", "conclusion", "conclusionCode"),
    "ServiceRequest": ("subject", "intent", "authoredOn", "reasonCode", "reasonReference", "occurrence", "priority",
                       "doNotPerform"),
}
_CHART_TYPES = frozenset(fhir_models.RULE_RESOURCE_TYPES) - {"ServiceRequest"}  # a ServiceRequest is read as a draft order
_CHOICES = ("onset", "abatement", "effective", "value", "performed", "deceased", "medication", "occurrence")
_KEPT = {rtype: frozenset(_COMMON + elements) for rtype, elements in _READ_ELEMENTS.items()}
_KEPT_CHOICES = {rtype: tuple(e for e in _COMMON + elements if e in _CHOICES) for rtype, elements in _READ_ELEMENTS.items()}
# Meta elements of the FHIR standard; servers add their own (Medplum: project, author, compartment…).
_STANDARD_META = {"id", "extension", "versionId", "lastUpdated", "source", "profile", "security", "tag"}


# Elements read only when another is absent (G-11: issued when there is no effective[x], recordedDate when there
# is no onset[x]).
_FALLBACKS = {"issued": "effective", "recordedDate": "onset"}


def _read_part(rtype: str, raw: dict[str, Any]) -> dict[str, Any]:
    """The elements a rule reads; a choice element by its prefix, so that a misspelt one still fails validation."""
    kept, choices = _KEPT[rtype], _KEPT_CHOICES[rtype]
    part = {k: v for k, v in raw.items() if k in kept or (choices and k.startswith(choices))}
    for element, preferred in _FALLBACKS.items():
        if element in part and any(k.startswith(preferred) for k in part):
            del part[element]
    return part


def _whole_part(raw: dict[str, Any]) -> dict[str, Any]:
    """The whole resource but its server's own meta elements (and resourceType: the type chose the model)."""
    part = {k: v for k, v in raw.items() if k != "resourceType"}
    meta = part.get("meta")
    if isinstance(meta, dict) and not meta.keys() <= _STANDARD_META:
        part["meta"] = {k: v for k, v in meta.items() if k in _STANDARD_META}
    return part


def validate(rtype: str, raw: dict[str, Any], zone: tzinfo, whole: bool = False) -> Resource:
    """The R4 model of what the rules read of a raw resource (of all of it when ``whole``: the CLI's check),
    zone-less dateTimes read in the service's zone (G-11)."""
    part = _whole_part(raw) if whole else _read_part(rtype, raw)
    try:
        return fhir_models.validate(rtype, part)
    except ValidationError:
        if not has_zoneless(part):  # rare: look for zone-less dateTimes only when validation fails
            raise
    return fhir_models.validate(rtype, with_zones(part, zone))


def _only_outside_windows(candidate: _Candidate, windows: dict[str, int], today: date) -> bool:
    """Every concept of the resource has a look-back (fever: 48 hours) and the resource is older than all of them."""
    if not candidate.concepts <= windows.keys() or candidate.recent is None:
        return False
    return all((today - candidate.recent).days > windows[c] for c in candidate.concepts)


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
    def __init__(self, reader: _Reader, zone: tzinfo):
        self.reader = reader
        self.zone = zone
        self.rejected: list[Rejected] = []

    def entry(self, candidate: _Candidate) -> ChartEntry | None:
        try:
            model = validate(candidate.resource_type, candidate.raw, self.zone)
        except (ValidationError, KeyError, ValueError, TypeError, RecursionError) as exc:
            self.reject(candidate.reference, candidate.resource_type, exc)
            return None
        return ChartEntry(candidate.reference, model, candidate.concepts, candidate.reason_concepts, candidate.when,
                          candidate.recent, self.reader.side(candidate), candidate.text)

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
    resources = list(raw_resources)
    patient_raw = next((r for r in resources if isinstance(r, dict) and r.get("resourceType") == "Patient"), None)
    birth = date_of(patient_raw.get("birthDate"), zone) if patient_raw else None
    reader = _Reader(knowledge, knowledge.terminology, zone, today)
    indexing = _Indexing(reader, _Collector(reader, zone), birth, today)
    # Draft orders first: the order hooks answer about every one, so their text comes before the chart's in the
    # call's text budget.
    drafts = [entry for position, raw in enumerate(draft_orders) if isinstance(raw, dict)
              and (entry := indexing.draft(position, raw)) is not None]
    for position, raw in enumerate(resources):
        indexing.add(position, raw)
    entries = indexing.validated()
    latest_only = _LatestOnly(indexing.latest, indexing.collector, today)
    return ChartIndex(indexing.patient, entries, tuple(drafts), latest_only, indexing.not_read, birth)


class _LatestOnly:
    """G-07: per concept, its resources newest first; the first that validates and has a value, on first use."""

    def __init__(self, groups: dict[str, list[_Candidate]], collector: _Collector, today: date):
        oldest = datetime.min.replace(tzinfo=collector.zone)
        self.groups = {concept: sorted(group, key=lambda c: (c.when or date.min, c.at or oldest), reverse=True)
                       for concept, group in groups.items()}
        self.collector = collector
        self.today = today
        self.validated: dict[int, ChartEntry | None] = {}  # by position: one resource may carry two concepts
        self.chosen: dict[str, ChartEntry | None] = {}
        self.read_positions: set[int] = set()

    def newest(self, concept: str) -> ChartEntry | None:
        if concept not in self.chosen:
            self.chosen[concept] = None
            for candidate in self.groups.get(concept, ()):
                if (entry := self._entry(candidate)) is not None:
                    self.chosen[concept] = entry
                    self.read_positions.add(candidate.position)
                    break
        return self.chosen[concept]

    def _entry(self, candidate: _Candidate) -> ChartEntry | None:
        if candidate.position not in self.validated:
            current = _current_value(candidate, self.today)
            self.validated[candidate.position] = self.collector.entry(candidate) if current else None
        return self.validated[candidate.position]

    def unread(self) -> int:
        positions = {c.position for group in self.groups.values() for c in group}
        return len(positions - self.read_positions)


@dataclass
class _Indexing:
    """The one pass: each resource read once, sorted into read, latest-only (G-07) or not read."""

    reader: _Reader
    collector: _Collector
    birth: date | None
    today: date
    patient: Resource | None = None
    not_read: int = 0
    read: list[_Candidate] = field(default_factory=list)
    latest: dict[str, list[_Candidate]] = field(default_factory=dict)
    seen: set[tuple[str, str]] = field(default_factory=set)

    def add(self, position: int, raw: Any) -> None:
        if not isinstance(raw, dict):
            self.collector.rejected.append(Rejected(f"#{position}", "unknown", "not a JSON object"))
            return
        rtype = raw.get("resourceType")
        if rtype not in _CHART_TYPES:
            self.not_read += 1
            return
        rid = raw.get("id")
        if isinstance(rid, str):
            key = (rtype, rid)
            if key in self.seen:
                return  # the same resource from two prefetch keys, a prefetch and a fetch, or overlapping pages
            self.seen.add(key)
        if rtype == "Patient":
            self._patient(rid, raw)
            return
        try:
            candidate = self.reader.read(position, rtype, raw)
        except (Malformed, TextNotRead, RecursionError) as exc:
            self.collector.reject(f"{rtype}/{rid}" if isinstance(rid, str) else f"{rtype} #{position}", rtype, exc)
            return
        if candidate is None:
            self.not_read += 1
            return
        self.reader.date(candidate, self.birth)
        terms = self.reader.terms
        if not candidate.structural and _only_outside_windows(candidate, terms.windows, self.today):
            self.not_read += 1
        elif candidate.concepts <= terms.latest_only and not candidate.structural:
            for concept in candidate.concepts:
                self.latest.setdefault(concept, []).append(candidate)
        else:
            self.read.append(candidate)

    def _patient(self, rid: Any, raw: dict[str, Any]) -> None:
        if self.patient is None:
            try:
                self.patient = validate("Patient", raw, self.collector.zone)
            except (ValidationError, KeyError, ValueError, TypeError, RecursionError) as exc:
                self.collector.reject(f"Patient/{rid}", "Patient", exc)

    def validated(self) -> dict[str, tuple[ChartEntry, ...]]:
        """The entries a rule reads, validated, by type in chart order (G-07 concepts apart: see ``_LatestOnly``)."""
        entries: dict[str, list[ChartEntry]] = {}
        for candidate in self.read:
            entry = self.collector.entry(candidate)
            if entry is not None:
                entries.setdefault(entry.resource_type, []).append(entry)
        return {k: tuple(v) for k, v in entries.items()}

    def draft(self, position: int, raw: dict[str, Any]) -> ChartEntry | None:
        """A draft order is always read and validated: the order hooks answer about every one."""
        try:
            candidate = self.reader.read(position, "ServiceRequest", raw) or \
                self.reader.unread(position, "ServiceRequest", raw)
        except (Malformed, TextNotRead, RecursionError) as exc:
            self.collector.reject(f"ServiceRequest #{position}", "ServiceRequest", exc)
            return None
        self.reader.date(candidate, self.birth)
        return self.collector.entry(candidate)

