"""Units of the facts step: code matching, laterality per ICD family, text negation, BMI, D-dimer."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fhir.resources.R4B.observation import Observation

from cds_service.chart import build_index
from cds_service.facts import build_facts
from cds_service.fhir_read import ddimer_positive
from cds_service.knowledge import load_knowledge
from cds_service.terminology import ICD10CM, SNOMED

K = load_knowledge()
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


def concept(system: str | None = None, code: str | None = None, text: str | None = None) -> frozenset[str]:
    """The value sets the chart index finds for a Condition coded so: the path every hook call takes."""
    body: dict = {"resourceType": "Condition", "id": "c", "subject": {"reference": "Patient/p"}, "code": {}}
    if system:
        body["code"]["coding"] = [{"system": system, "code": code}]
    if text:
        body["code"]["text"] = text
    entries = build_index([body], [], K, NOW.date(), UTC).of("Condition")
    return entries[0].concepts if entries else frozenset()


@pytest.mark.parametrize(("code", "expected"), [
    ("C34.90", True), ("C4A.9", True), ("C7A.00", True), ("C7B.01", True), ("C96.9", True), ("D46.9", True),
    ("D47.1", True), ("D47.2", False), ("D05.10", False), ("Z85.3", False), ("C97", False), ("D36.9", False),
])
def test_malignancy_matches_the_icd_block_including_letter_categories(code, expected):
    assert ("malignancy" in concept(ICD10CM, code)) is expected


def test_exclusions_carve_out_of_an_included_prefix():
    assert ("obesity" in concept(ICD10CM, "E66.9"))
    assert "obesity" not in concept(ICD10CM, "E66.3")  # overweight


def test_cpt_ranges_are_numeric():
    assert "major-surgery" in concept("http://www.ama-assn.org/go/cpt", "27447")
    assert "major-surgery" not in concept("http://www.ama-assn.org/go/cpt", "73562")  # a radiograph


@pytest.mark.parametrize(("code", "side"), [
    ("M17.11", "right"), ("M17.12", "left"), ("M17.0", "both"), ("M25.561", "right"), ("M25.562", "left"),
    ("S83.241A", "right"), ("S83.242A", "left"), ("S83.209A", "unknown"), ("I82.4Y1", "right"),
    ("I82.432", "left"), ("I82.403", "both"), ("M67.863", "right"), ("M67.864", "left"), ("L03.116", "left"),
    ("M79.604", "right"),
])
def test_icd_laterality_is_read_per_code_family(code, side):
    assert K.icd_side(code) == side


@pytest.mark.parametrize(("text", "matched"), [
    ("Right calf pain", True), ("No calf swelling", False), ("denies calf pain, but leg swelling today", True),
    ("Patient denies calf pain", False),
])
def test_text_fallback_understands_negation(text, matched):
    assert ("calf-leg-signs" in concept(text=text)) is matched


def test_a_non_matching_icd_code_is_not_overruled_by_its_text():
    assert "compartment-syndrome" not in concept(ICD10CM, "T79.A11A", "Compartment syndrome, arm")
    # SNOMED lists have no subsumption here, so their text still counts
    assert ("compartment-syndrome" in concept(SNOMED, "999999", "Compartment syndrome, calf"))


def _facts(*resources: dict):
    patient = {"resourceType": "Patient", "id": "p", "birthDate": "1970-01-01"}
    return build_facts(build_index([patient, *resources], [], K, NOW.date(), UTC), NOW)


def _obs(code: str, value: float, unit: str, day: str = "2026-11-01") -> dict:
    return {"resourceType": "Observation", "id": f"o-{code}-{day}", "status": "final", "subject": {"reference": "Patient/p"},
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]}, "effectiveDateTime": day,
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}


def test_bmi_is_computed_from_metric_weight_and_height_and_rounded():
    facts = _facts(_obs("29463-7", 86.7, "kg"), _obs("8302-2", 170, "cm"))  # 30.0 after rounding
    assert [r.kind for r in facts.risk_factors] == ["obesity"]


def test_the_latest_bmi_wins():
    facts = _facts(_obs("39156-5", 31.0, "kg/m2", "2025-01-01"), _obs("39156-5", 28.0, "kg/m2", "2026-10-01"))
    assert facts.risk_factors == ()


@pytest.mark.parametrize(("extra", "positive"), [
    ({"interpretation": [{"coding": [{"code": "H"}]}]}, True),
    ({"interpretation": [{"coding": [{"code": "N"}]}]}, False),
    ({"referenceRange": [{"high": {"value": 500}}]}, True),
    ({}, None),
])
def test_d_dimer_positivity_comes_from_the_observation_itself(extra, positive):
    body = {**_obs("48065-7", 900, "ng/mL"), **extra}
    assert ddimer_positive(Observation.model_validate(body)) is positive


def _index_and_facts(*resources: dict):
    patient = {"resourceType": "Patient", "id": "p", "birthDate": "1970-01-01"}
    index = build_index([patient, *resources], [], K, NOW.date(), UTC)
    return index, build_facts(index, NOW)


def test_with_a_bmi_on_record_the_latest_weight_and_height_are_not_read():
    broken_weight = {**_obs("29463-7", 120, "kg", "2026-11-10"), "valueQuantity": {"value": "heavy"}}
    index, facts = _index_and_facts(_obs("39156-5", 31.0, "kg/m2"), broken_weight, _obs("8302-2", 170, "cm"))
    assert [r.kind for r in facts.risk_factors] == ["obesity"]  # from the BMI
    assert index.rejected == ()  # the weight was never validated, so it is not named
    assert index.not_read == 2  # weight and height, counted


def test_without_a_bmi_a_broken_latest_weight_is_named_and_the_one_before_it_is_read():
    broken_weight = {**_obs("29463-7", 120, "kg", "2026-11-10"), "valueQuantity": {"value": "heavy"}}
    index, facts = _index_and_facts(broken_weight, _obs("29463-7", 86.7, "kg", "2026-10-01"), _obs("8302-2", 170, "cm"))
    assert [r.kind for r in facts.risk_factors] == ["obesity"]  # 86.7 kg, 1.70 m: BMI 30.0
    assert [r.reference for r in index.rejected] == ["Observation/o-29463-7-2026-11-10"]


def _procedure(code: str, text: str, day: str = "2026-11-10") -> dict:
    return {"resourceType": "Procedure", "id": f"p-{code}", "status": "completed", "subject": {"reference": "Patient/p"},
            "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": code}], "text": text},
            "performedDateTime": day}


@pytest.mark.parametrize(("procedures", "major"), [
    ([_procedure("20610", "Injection, right knee")], False),  # codes.md §10: minor without anaesthesia
    ([_procedure("20610", "Injection, right knee"), _procedure("01382", "Anaesthesia for knee arthroscopy")], True),
    ([_procedure("20610", "Injection, right knee"),
      _procedure("01382", "Anaesthesia for knee arthroscopy", "2026-11-09")], False),  # anaesthesia another day
    ([_procedure("27447", "Total knee arthroplasty")], True),
    ([_procedure("11042", "Debridement, subcutaneous tissue")], True),  # deep debridement still counts
    ([{**_procedure("99999", "Knee procedure"), "code": {"text": "Ultrasound-guided aspiration of knee"}}], False),
])
def test_w03_minor_procedures_are_major_surgery_only_with_anaesthesia(procedures, major):
    _, facts = _index_and_facts(*procedures)
    assert any(i.criterion == "bedridden-or-major-surgery" for i in facts.wells_items) is major
