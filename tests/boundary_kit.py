"""Shared kit of the boundary tables (tests/test_boundaries*.py): hand-built patients and what a clinician sees.

Two ways in:

* ``patient(...)`` builds ``PatientFacts`` directly, for rule-level rows (rules.md thresholds the rules own);
* ``chart(...)`` runs small hand-built FHIR resources through ``build_index`` and ``build_facts``, for the
  windows and measurements the facts step owns.

Either way ``cards(facts)`` renders the cards exactly as the service answers them, and ``Seen`` keeps what a
clinician reads on them: the topic, the indicator, the rule ids, the Wells score and criteria, the orders offered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta
from typing import Any

from cds_service.cards import CardBuilder
from cds_service.chart import build_index
from cds_service.facts import Evidence, KneePain, PatientFacts, WellsItem, build_facts
from cds_service.knowledge import load_knowledge
from cds_service.rules import RuleBook, evaluate

KNOWLEDGE = load_knowledge()
BUILDER = CardBuilder(KNOWLEDGE, new_uuid=lambda: "uuid")
BOOK = RuleBook.from_cards(KNOWLEDGE.cards)  # imaging modalities, the red-flag table
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
TODAY = NOW.date()
PATIENT_ID = "p"

ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
PKP_FINDING = "http://example.org/fhir/CodeSystem/pkp-finding"
SIDE_CODES = {"right": ("24028007", "Right"), "left": ("7771000", "Left")}
POSTERIOR = ("255551008", "Posterior")


def ago(days: int) -> date:
    return TODAY - timedelta(days=days)


# --- what a clinician sees -------------------------------------------------------------------------

@dataclass(frozen=True)
class Seen:
    """One card as the clinician reads it."""

    topic: str
    indicator: str
    rules: tuple[str, ...]  # the card's own rules: those every item of its evidence extension names
    wells_score: int | None  # org.example.kneecds.wells, absent when Wells was not applied
    criteria: tuple[str, ...]
    orders: tuple[str, ...]  # the text of every order a suggestion would create
    summary: str

    @classmethod
    def of(cls, card: dict[str, Any]) -> Seen:
        wells = card.get("extension", {}).get("org.example.kneecds.wells")
        items = [item["rules"] for item in card["extension"]["org.example.kneecds.evidence"]]
        rules = tuple(rule for rule in items[0] if all(rule in other for other in items))
        orders = tuple(action["resource"]["code"]["text"] for suggestion in card.get("suggestions", [])
                       for action in suggestion["actions"] if action["type"] == "create")
        return cls(card["source"]["topic"]["code"], card["indicator"],
                   rules,
                   wells["score"] if wells else None, tuple(wells.get("criteria", ())) if wells else (), orders,
                   card["summary"])


DUPLEX = "Proximal leg vein ultrasound (venous duplex)"
D_DIMER = "D-dimer test (quantitative)"
WEIGHT_BEARING_XRAY = "Knee radiographs, weight-bearing (standing AP and lateral)"


def cards(facts: PatientFacts) -> list[Seen]:
    """The patient-view cards for these facts (the rules, then the card definitions of cards/cards.toml)."""
    findings = evaluate(facts, "patient-view", BOOK)
    return [Seen.of(BUILDER.build(f, PATIENT_ID, (), facts.today)) for f in findings]


def dvt_card(facts: PatientFacts) -> Seen | None:
    """The one DVT card (rules.md §2: one per response), or None."""
    found = [c for c in cards(facts) if c.topic.startswith("dvt-")]
    assert len(found) <= 1, found
    return found[0] if found else None


def shown(card: Seen | None, *what: str) -> tuple[Any, ...] | None:
    """What a card shows (the named fields), or None when there is no card: one readable assertion either way."""
    return None if card is None else tuple(getattr(card, name) for name in what)


def card_on(facts: PatientFacts, topic: str) -> Seen | None:
    found = [c for c in cards(facts) if c.topic == topic]
    return found[0] if found else None


# --- rule level: PatientFacts by hand ---------------------------------------------------------------

def ev(label: str, days: int = 1, side: str = "right", ref: str | None = None) -> Evidence:
    """Evidence recorded ``days`` ago (a Condition unless ``ref`` says otherwise)."""
    slug = re.sub(r"\W+", "-", label.lower()).strip("-")
    return Evidence(ref or f"Condition/{slug}", label, ago(days), side)


def item(criterion: str) -> WellsItem:
    """A Wells criterion of the record (a history item: not leg-specific), on the right."""
    return WellsItem(criterion, ev(criterion, ref=f"Observation/{criterion}"))


def pain_behind_knee(days: int = 10) -> dict[str, Any]:
    """The fields of pain behind the right knee that started ``days`` ago (rules.md G-05)."""
    pain = ev("Pain behind the right knee", days)
    return {"knee_pain": (KneePain(pain, "posterior", frozenset()),), "posterior_knee_pain": (pain,),
            "pain_onset": ago(days)}


CALF_PAIN = ev("Pain in right calf", 5)

_DEFAULTS: dict[str, Any] = {"today": TODAY, "now": NOW, "age": 52, "posterior_swelling": False, **pain_behind_knee()}


def patient(**changes: Any) -> PatientFacts:
    """A 52-year-old with pain behind the right knee for 10 days and nothing else on record, with ``changes``.

    Every other field is empty (no tuple, dict or value on record), read from the field's type so that the
    factory follows PatientFacts as it grows or loses fields.
    """
    values: dict[str, Any] = {}
    for f in fields(PatientFacts):
        kind = str(f.type)
        if f.name in changes:
            values[f.name] = changes.pop(f.name)
        elif f.name in _DEFAULTS:
            values[f.name] = _DEFAULTS[f.name]
        elif kind.startswith("tuple"):
            values[f.name] = ()
        elif kind.startswith("dict"):
            values[f.name] = {}
        elif kind.startswith("frozenset"):
            values[f.name] = frozenset()
        elif "None" in kind:
            values[f.name] = None
        else:
            raise TypeError(f"patient(): no default for PatientFacts.{f.name} ({kind}); give it a value")
    if changes:
        raise TypeError(f"patient(): PatientFacts has no field {', '.join(changes)}")
    return PatientFacts(**values)


# --- facts level: hand-built FHIR through build_index and build_facts -----------------------------

def chart(*resources: dict[str, Any]) -> PatientFacts:
    """Facts of a 52-year-old (born 1974-03-02) with these resources, as the service reads them today."""
    patient_resource = {"resourceType": "Patient", "id": PATIENT_ID, "birthDate": "1974-03-02"}
    index = build_index([patient_resource, *resources], [], KNOWLEDGE, TODAY, UTC)
    return build_facts(index, NOW)


def _site(side: str | None, *extra: tuple[str, str]) -> list[dict[str, Any]]:
    codes = [*extra, *([SIDE_CODES[side]] if side else [])]
    return [{"coding": [{"system": SNOMED, "code": c, "display": d} for c, d in codes]}] if codes else []


def condition(rid: str, system: str, code: str, display: str, days: int, side: str | None = None,
              posterior: bool = False) -> dict[str, Any]:
    """An active, confirmed Condition with onset ``days`` ago."""
    resource: dict[str, Any] = {
        "resourceType": "Condition", "id": rid, "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                       "code": "active"}]},
        "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                           "code": "confirmed"}]},
        "code": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
        "onsetDateTime": ago(days).isoformat(), "recordedDate": ago(days).isoformat()}
    site = _site(side, *([POSTERIOR] if posterior else []))
    if site:
        resource["bodySite"] = site
    return resource


def knee_pain_behind(days: int = 10) -> dict[str, Any]:
    """Pain behind the right knee since ``days`` ago (rules.md G-05)."""
    return condition("knee-pain", ICD, "M25.561", "Pain behind the right knee", days, "right", posterior=True)


def calf_pain(days: int = 5) -> dict[str, Any]:
    """A coded leg sign (rules.md G-09 (a)): pain in the right lower leg."""
    return condition("calf-pain", ICD, "M79.661", "Pain in right lower leg", days, "right")


def history_of_dvt() -> dict[str, Any]:
    """W-09 without D-08: a personal history of venous thrombosis, years ago."""
    return condition("dvt-history", ICD, "Z86.718", "Personal history of other venous thrombosis and embolism", 2000)


def observation(rid: str, code: dict[str, Any], days: int, side: str, **value: Any) -> dict[str, Any]:
    """A final Observation of one leg, taken ``days`` ago."""
    return {"resourceType": "Observation", "id": rid, "status": "final", "subject": {"reference": f"Patient/{PATIENT_ID}"},
            "code": code, "effectiveDateTime": ago(days).isoformat(), "bodySite": _site(side)[0], **value}


def centimetres(value: float) -> dict[str, Any]:
    return {"valueQuantity": {"value": value, "unit": "cm", "system": "http://unitsofmeasure.org", "code": "cm"}}


def exam_finding(code: str, days: int = 1, **value: Any) -> dict[str, Any]:
    """A coded examination finding of the right leg (codes.md §9, pkp-finding), true unless a value is given."""
    return observation(f"finding-{code}", {"coding": [{"system": PKP_FINDING, "code": code}]}, days, "right",
                       **(value or {"valueBoolean": True}))


def calf_difference(cm: float, days: int = 1) -> dict[str, Any]:
    """W-06 coded: the symptomatic (right) calf minus the other, in cm."""
    return exam_finding("calf-circumference-difference", days, **centimetres(cm))


def calf_circumference(side: str, cm: float, days: int = 1) -> dict[str, Any]:
    """One side's calf circumference (no verified code: recognised by its text and body site, rules.md W-06)."""
    return observation(f"calf-{side}", {"text": "Calf circumference"}, days, side, **centimetres(cm))
