"""Synthea-shaped charts for the tests and the benchmark: real Synthea patients moved to today.

The patients are the Synthea sample in ``../shared/data/synthea-10`` (CC0; Patient, Condition,
Procedure, MedicationRequest and Encounter as ndjson, no Observations). ``synthea_chart`` shifts
every date, dateTime and instant of one patient by one whole number of days, so that the newest
encounter falls three days before ``today`` (the time of day and the time-zone form of each value
are kept), and adds generated Synthea-shaped vital signs and labs spread over the encounters.
``merge_scenario`` adds a knee scenario to such a chart; ``sized_chart`` builds the benchmark's
chart of exactly n resources.

Quiet patients (``QUIET_PATIENT_IDS``): charts that by themselves give no knee card and add nothing
to a merged knee scenario — an adult, alive, with no knee or leg condition, no posterior-knee
diagnosis, no sciatica or back pain, no VTE risk factor (obesity, cancer, pregnancy, oestrogen,
previous VTE, thrombophilia, anticoagulant), no surgery, cast or long inpatient stay, and generated
observations that stay normal (BMI below 30, temperature below 38 °C):

* ``cbc86e51-9eca-3855-76ec-c058f72c5761`` — man, about 25 once shifted; 76 resources besides the
  Patient (dermatitis, pharyngitis, rhinitis, a forearm laceration; fexofenadine, adrenaline pen).
* ``8e1a0a7c-e308-444b-075a-3c2b1f60f881`` — man, about 62 once shifted; 151 resources (anaemia,
  prediabetes, resolved COVID-19, fever and joint pain long resolved; vitamin B12).

Not quiet: ``6a4160eb…`` (active knee osteoarthritis, SNOMED 239873007: an explaining diagnosis and
K-05 material), ``7bc002fa…``, ``ca15b832…`` and ``fb7c882a…`` (active obesity 162864005, a VTE risk
factor; the last two also chronic low back pain, L-06), ``a4a401d1…`` and ``a5cb8ce9…`` (an active
"miscarriage in first trimester" and deliveries on record; ``a5cb8ce9…`` also active sepsis, age 95),
``63ee2253…`` and ``bb6a9034…`` (under 18: D-09 instead of Wells), and the three deceased patients
``129c6ac7…``, ``3af3708d…`` and ``79a66c97…``.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import uuid
from collections.abc import Callable
from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from cds_service.samples import shifted
from cds_service.terminology import ICD10CM, LOINC, SNOMED

ROOT = Path(__file__).resolve().parent.parent
SYNTHEA_DIR = Path(os.environ.get("KNEE_CDS_SYNTHEA_DIR") or ROOT.parent / "shared" / "data" / "synthea-10")

CHART_TYPES = ("Patient", "Condition", "Procedure", "MedicationRequest", "Encounter")
QUIET_PATIENT_IDS = ("cbc86e51-9eca-3855-76ec-c058f72c5761", "8e1a0a7c-e308-444b-075a-3c2b1f60f881")
DAYS_BEFORE_TODAY = 3  # the newest encounter of a shifted chart
SCENARIO_PREFIX = "scenario-"

UCUM = "http://unitsofmeasure.org"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
# An EHR's own flowsheet rows: a code system the service knows nothing about (Epic-style OID).
LOCAL_EXAM_SYSTEM = "urn:oid:1.2.840.114350.1.13.0.1.7.2.707679"

# FHIR element names whose type is date, dateTime or instant (Period.start/end included).
_TOKEN = re.compile(r"[A-Za-z0-9.\-]{1,27}")  # with a 36-character Synthea id, a resource id stays within FHIR's 64
_PLACEHOLDER = "TOKENPLACEHOLDERq7"


# --- the Synthea files ---------------------------------------------------------------------------


def _patient_of(resource: dict[str, Any]) -> str:
    reference = (resource.get("subject") or resource.get("patient") or {}).get("reference", "")
    return reference.rsplit("/", 1)[-1].removeprefix("urn:uuid:")


@lru_cache(maxsize=1)
def _synthea() -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every patient's resources by type, parsed once per process."""
    by_patient: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for resource_type in CHART_TYPES:
        with (SYNTHEA_DIR / f"{resource_type}.ndjson").open(encoding="utf-8") as lines:
            for line in lines:
                if line.strip():
                    resource = json.loads(line)
                    owner = resource["id"] if resource_type == "Patient" else _patient_of(resource)
                    by_patient.setdefault(owner, {t: [] for t in CHART_TYPES})[resource_type].append(resource)
    return {pid: records for pid, records in by_patient.items() if records["Patient"]}


def synthea_patient_ids() -> list[str]:
    """The Synthea patients, in the order of Patient.ndjson."""
    return list(_synthea())


# --- moving a chart in time ----------------------------------------------------------------------


def _offset_days(encounters: list[dict[str, Any]], today: date) -> int:
    starts = [date.fromisoformat(e["period"]["start"][:10]) for e in encounters if (e.get("period") or {}).get("start")]
    if not starts:
        return 0
    return (today - timedelta(days=DAYS_BEFORE_TODAY) - max(starts)).days


# --- generated observations ----------------------------------------------------------------------

_VITAL_PROFILES = {
    "8302-2": "us-core-body-height", "29463-7": "us-core-body-weight", "39156-5": "us-core-bmi",
    "85354-9": "us-core-blood-pressure", "8867-4": "us-core-heart-rate", "9279-1": "us-core-respiratory-rate",
    "8310-5": "us-core-body-temperature", "72514-3": "us-core-vital-signs",
}
# (LOINC, display, UCUM unit, low, high, decimals): normal ranges, so that no lab says anything.
_LABS = (
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 12.5, 16.5, 1),
    ("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", 4.0, 10.5, 1),
    ("777-3", "Platelets [#/volume] in Blood by Automated count", "10*3/uL", 160.0, 390.0, 0),
    ("2339-0", "Glucose [Mass/volume] in Blood", "mg/dL", 72.0, 99.0, 0),
    ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 4.6, 5.9, 1),
    ("38483-4", "Creatinine [Mass/volume] in Blood", "mg/dL", 0.7, 1.2, 2),
    ("6299-2", "Urea nitrogen [Mass/volume] in Blood", "mg/dL", 8.0, 20.0, 0),
    ("2947-0", "Sodium [Moles/volume] in Blood", "mmol/L", 136.0, 144.0, 0),
    ("6298-4", "Potassium [Moles/volume] in Blood", "mmol/L", 3.6, 5.0, 1),
    ("2069-3", "Chloride [Moles/volume] in Blood", "mmol/L", 98.0, 106.0, 0),
    ("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", 150.0, 199.0, 0),
    ("2571-8", "Triglycerides", "mg/dL", 60.0, 149.0, 0),
)
_KINDS = ("8302-2", "29463-7", "39156-5", "85354-9", "8867-4", "9279-1", "8310-5", "72514-3") + tuple(
    lab[0] for lab in _LABS)


def _quantity(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def _concept(code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display}


def _iso(moment: datetime, zulu: bool, timespec: str = "seconds") -> str:
    text = moment.isoformat(timespec=timespec)
    return text[:-6] + "Z" if zulu and text.endswith("+00:00") else text


class _Vitals:
    """One patient's body over time: an adult height, a BMI that drifts a little from visit to visit."""

    def __init__(self, patient: dict[str, Any], rng: random.Random):
        male = patient.get("gender") == "male"
        self.birth = date.fromisoformat(patient["birthDate"][:10])
        self.adult_height = rng.uniform(170.0, 185.0) if male else rng.uniform(157.0, 170.0)
        self.adult_bmi = rng.uniform(21.5, 25.5)  # +- 0.8 below: never the obesity of R-01

    def body(self, on: date, visit: int) -> tuple[float, float, float]:
        """(height cm, weight kg, BMI) at a visit."""
        age = (on - self.birth).days / 365.25
        if age >= 18:
            height, bmi = self.adult_height, self.adult_bmi
        else:
            height, bmi = min(self.adult_height, 50 + 25 * age if age < 2 else 75 + 6 * age), 17.0
        metres = round(height, 1) / 100
        weight = round((bmi + 0.8 * math.sin(visit)) * metres * metres, 1)
        return round(height, 1), weight, round(weight / (metres * metres), 1)


def _value(kind: str, rng: random.Random, body: tuple[float, float, float]) -> dict[str, Any]:
    height, weight, bmi = body
    if kind == "8302-2":
        return {"code": _concept(kind, "Body Height"), "valueQuantity": _quantity(height, "cm")}
    if kind == "29463-7":
        return {"code": _concept(kind, "Body Weight"), "valueQuantity": _quantity(weight, "kg")}
    if kind == "39156-5":
        return {"code": _concept(kind, "Body mass index (BMI) [Ratio]"), "valueQuantity": _quantity(bmi, "kg/m2")}
    if kind == "85354-9":
        return {"code": _concept(kind, "Blood pressure panel with all children optional"), "component": [
            {"code": _concept("8462-4", "Diastolic Blood Pressure"),
             "valueQuantity": _quantity(float(rng.randint(65, 85)), "mm[Hg]")},
            {"code": _concept("8480-6", "Systolic Blood Pressure"),
             "valueQuantity": _quantity(float(rng.randint(105, 135)), "mm[Hg]")}]}
    if kind == "8867-4":
        return {"code": _concept(kind, "Heart rate"), "valueQuantity": _quantity(float(rng.randint(60, 95)), "/min")}
    if kind == "9279-1":
        return {"code": _concept(kind, "Respiratory rate"),
                "valueQuantity": _quantity(float(rng.randint(12, 18)), "/min")}
    if kind == "8310-5":
        return {"code": _concept(kind, "Body temperature"),
                "valueQuantity": _quantity(round(rng.uniform(36.2, 37.3), 1), "Cel")}
    if kind == "72514-3":
        return {"code": _concept(kind, "Pain severity - 0-10 verbal numeric rating [Score] - Reported"),
                "valueQuantity": _quantity(float(rng.randint(0, 3)), "{score}")}
    code, display, unit, low, high, decimals = next(lab for lab in _LABS if lab[0] == kind)
    value = round(rng.uniform(low, high), decimals)
    return {"code": _concept(code, display), "valueQuantity": _quantity(float(value), unit)}


def _observations(patient: dict[str, Any], encounters: list[dict[str, Any]], count: int,
                  rng: random.Random) -> list[dict[str, Any]]:
    """``count`` Synthea-shaped vital signs and labs, spread over the encounters, newest first."""
    visits = sorted((e for e in encounters if (e.get("period") or {}).get("start")),
                    key=lambda e: e["period"]["start"][:10], reverse=True)
    if count and not visits:
        raise ValueError(f"Patient/{patient['id']} has no encounter to hang observations on")
    vitals = _Vitals(patient, rng)
    out = []
    for j in range(count):
        visit, round_ = j % len(visits), j // len(visits)
        encounter = visits[visit]
        kind = _KINDS[round_ % len(_KINDS)]
        start_text = encounter["period"]["start"]
        start = datetime.fromisoformat(start_text.replace("Z", "+00:00"))
        taken = start + timedelta(minutes=5 + round_)
        zulu = start_text.endswith("Z")
        laboratory = kind not in _VITAL_PROFILES
        category = "laboratory" if laboratory else "vital-signs"
        observation: dict[str, Any] = {
            "resourceType": "Observation",
            "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "meta": {"profile": [US_CORE + ("us-core-observation-lab" if laboratory else _VITAL_PROFILES[kind])]},
            "status": "final",
            "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": category,
                                      "display": "Laboratory" if laboratory else "Vital signs"}]}],
        }
        value = _value(kind, rng, vitals.body(taken.date(), visit))
        observation["code"] = value.pop("code")
        observation["subject"] = {"reference": f"Patient/{patient['id']}"}
        observation["encounter"] = {"reference": f"Encounter/{encounter['id']}"}
        observation["effectiveDateTime"] = _iso(taken, zulu)
        observation["issued"] = _iso(taken + timedelta(minutes=7, milliseconds=rng.randint(0, 999)), zulu,
                                     "milliseconds")
        observation.update(value)  # valueQuantity or component, last as Synthea writes them
        out.append(observation)
    return out


# --- the public API ------------------------------------------------------------------------------


def synthea_chart(patient_id: str, *, today: date, observations: int = 0, seed: int = 0) -> list[dict[str, Any]]:
    """That patient's Patient, Conditions, Procedures, MedicationRequests and Encounters, moved so that the
    newest encounter falls three days before ``today``, plus ``observations`` generated vital signs and labs.

    Every call returns new dicts; the same arguments give the same chart.
    """
    records = _synthea().get(patient_id)
    if records is None:
        raise KeyError(f"no Synthea patient {patient_id!r} in {SYNTHEA_DIR}")
    days = _offset_days(records["Encounter"], today)
    chart = [shifted(r, days) for t in CHART_TYPES for r in records[t]]
    patient = chart[0]
    encounters = [r for r in chart if r["resourceType"] == "Encounter"]
    return chart + _observations(patient, encounters, observations, random.Random(f"{patient_id}:{seed}"))


def merge_scenario(chart: list[dict[str, Any]], scenario: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chart plus copies of the scenario's resources, re-pointed to the chart's Patient.

    A Patient in the scenario is dropped (the chart's Patient stands); every other scenario resource
    gets its id prefixed with ``scenario-``, and references between scenario resources follow. The
    chart's own resources are not copied.
    """
    patient = next((r for r in chart if r.get("resourceType") == "Patient"), None)
    if patient is None:
        raise ValueError("the chart has no Patient")
    added = [json.loads(json.dumps(r)) for r in scenario if r.get("resourceType") != "Patient"]
    renamed: dict[str, str] = {}
    for index, resource in enumerate(added):
        old = resource.get("id") or str(index)
        resource["id"] = SCENARIO_PREFIX + old
        renamed[f"{resource['resourceType']}/{old}"] = f"{resource['resourceType']}/{resource['id']}"
    patient_reference = f"Patient/{patient['id']}"

    def repoint(reference: str) -> str:
        if reference.startswith("Patient/"):
            return patient_reference
        return renamed.get(reference, reference)

    return [*chart, *(_references_mapped(r, repoint) for r in added)]


def _references_mapped(node: Any, change: Callable[[str], str]) -> Any:
    if isinstance(node, dict):
        return {key: change(value) if key == "reference" and isinstance(value, str) else _references_mapped(value, change)
                for key, value in node.items()}
    if isinstance(node, list):
        return [_references_mapped(value, change) for value in node]
    return node


def _dvt_urgent_note(today: date) -> list[dict[str, Any]]:
    """Right posterior knee pain; a hot, swollen, tender right calf written only in an exam Observation's note."""
    def at(days: int, time: str) -> str:
        return f"{(today - timedelta(days=days)).isoformat()}T{time}-05:00"

    subject = {"reference": "Patient/scenario"}
    return [
        {"resourceType": "Condition", "id": "knee-pain",
         "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                        "code": "active"}]},
         "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                            "code": "confirmed"}]},
         "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                   "code": "problem-list-item", "display": "Problem List Item"}]}],
         "code": {"coding": [{"system": ICD10CM, "code": "M25.561", "display": "Pain in right knee"},
                             {"system": SNOMED, "code": "30989003", "display": "Knee pain"}],
                  "text": "Pain behind the right knee"},
         "bodySite": [{"coding": [{"system": SNOMED, "code": "255551008", "display": "Posterior"},
                                  {"system": SNOMED, "code": "24028007", "display": "Right"}],
                       "text": "back of the right knee"}],
         "subject": subject, "onsetDateTime": at(10, "09:00:00"), "recordedDate": at(1, "10:05:00")},
        {"resourceType": "Observation", "id": "calf-exam", "status": "final",
         "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "exam", "display": "Exam"}]}],
         "code": {"coding": [{"system": LOCAL_EXAM_SYSTEM, "code": "LE-EXAM", "display": "Lower extremity exam"}],
                  "text": "Lower extremity exam"},
         "subject": subject, "effectiveDateTime": at(1, "10:20:00"), "issued": at(1, "10:24:00"),
         "note": [{"text": "R calf hot, swollen and tender"}]},
    ]


SCENARIOS: dict[str, Callable[[date], list[dict[str, Any]]]] = {"dvt-urgent-note": _dvt_urgent_note}


def _clinical_when(resource: dict[str, Any]) -> str:
    for path in (("period", "start"), ("performedPeriod", "start"), ("onsetDateTime",), ("recordedDate",),
                 ("authoredOn",), ("effectiveDateTime",), ("performedDateTime",)):
        node: Any = resource
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, str):
            return node[:19]
    return ""


def _with_token(chart: list[dict[str, Any]], token: str) -> list[dict[str, Any]]:
    """Every id prefixed with the token, and every reference to a chart resource with it."""
    renamed = {f"{r['resourceType']}/{r['id']}": f"{r['resourceType']}/{token}-{r['id']}" for r in chart}
    out = [_references_mapped(r, lambda ref: renamed.get(ref, ref)) for r in chart]
    for resource in out:
        resource["id"] = f"{token}-{resource['id']}"
    return out


@lru_cache(maxsize=32)
def _sized_template(n: int, today: date, scenario: str) -> str:
    """The sized chart as JSON text with a placeholder where the token goes (built once, then only re-parsed)."""
    patient_id = QUIET_PATIENT_IDS[0]
    scenario_resources = SCENARIOS[scenario](today)
    records = _synthea()[patient_id]
    recorded = sum(len(records[t]) for t in CHART_TYPES if t != "Patient")
    room = n - 1 - len(scenario_resources)
    chart = synthea_chart(patient_id, today=today, observations=max(0, room - recorded))
    patient, others = chart[0], chart[1:]
    if len(others) > room:  # trimmed to the newest resources
        others = sorted(others, key=_clinical_when, reverse=True)[:room]
    merged = merge_scenario([patient, *others], scenario_resources)
    return json.dumps(_with_token(merged, _PLACEHOLDER), separators=(",", ":"))


def sized_chart(n: int, *, today: date, token: str = "t0", scenario: str = "dvt-urgent-note") -> list[dict[str, Any]]:
    """Exactly ``n`` resources (n >= 10): the first quiet patient's chart, trimmed to its newest resources or
    padded with generated observations, plus the knee scenario. ``token`` starts the Patient id and every
    resource id, so that each request body can be distinct."""
    if n < 10:
        raise ValueError(f"a sized chart has at least 10 resources, not {n}")
    if not _TOKEN.fullmatch(token):
        raise ValueError(f"token {token!r}: use 1-27 of A-Z a-z 0-9 . - (it goes into FHIR ids)")
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    return json.loads(_sized_template(n, today, scenario).replace(_PLACEHOLDER, token))
