"""Knee scenarios inside real-shaped charts: Synthea patients (moved to today, with generated vitals and labs)
answered through the HTTP service, one test per text source of rules.md G-10 and per date form of G-11.

Every expected card is written from the rule book (rules.md, card-contract.md): the quiet Synthea charts
(fhir_examples/synthea.py) add no knee or leg condition, no VTE risk factor and no Wells item, so the
scenario alone decides. Dates are relative to 2026-11-20, the `settings` fixture's "today".
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from cds_service.samples import build_request, shift_date
from cds_service.terminology import CPT, LOINC
from cds_service.terminology import ICD10CM as ICD
from cds_service.terminology import PKP_FINDING as PKP
from cds_service.terminology import SNOMED as SN
from fhir_examples.synthea import (
    QUIET_PATIENT_IDS,
    SYNTHEA_DIR,
    merge_scenario,
    sized_chart,
    synthea_chart,
    synthea_patient_ids,
)

from .conftest import unavailable

TODAY = date(2026, 11, 20)  # the `settings` fixture's now
QUIET = QUIET_PATIENT_IDS[0]
OBSERVATIONS = 200  # a chart of a few hundred resources

UCUM = "http://unitsofmeasure.org"
LOCAL = "urn:oid:1.2.840.114350.1.13.0.1.7.2.707679"  # an EHR's own flowsheet codes: matches no value set
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
RIGHT = {"coding": [{"system": SN, "code": "24028007", "display": "Right"}], "text": "right"}
HOT_CALF = "R calf hot, swollen and tender"

URGENT = ("dvt-urgent", "critical")
LIKELY = ("dvt-likely", "warning")
UNLIKELY = ("dvt-unlikely", "info")


@pytest.fixture(autouse=True)
def _synthea_files():
    if not (SYNTHEA_DIR / "Patient.ndjson").is_file():
        unavailable(f"the Synthea sample is not at {SYNTHEA_DIR} (set KNEE_CDS_SYNTHEA_DIR)")


# --- dates and resources -------------------------------------------------------------------------


def ago(days: int, time: str = "10:30:00", zone: str = "-05:00") -> str:
    return f"{(TODAY - timedelta(days=days)).isoformat()}T{time}{zone}"


def day(days: int) -> str:
    return (TODAY - timedelta(days=days)).isoformat()


def condition(rid: str, codings: list[tuple[str, str, str]], text: str, dates: dict[str, Any],
              site: dict[str, Any] | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Condition", "id": rid,
        "clinicalStatus": {"coding": [{"system": CLINICAL, "code": "active"}]},
        "verificationStatus": {"coding": [{"system": VERIFICATION, "code": "confirmed"}]},
        "code": {"coding": [{"system": s, "code": c, "display": d} for s, c, d in codings], "text": text},
        "subject": {"reference": "Patient/scenario"}, **dates}
    if site is not None:
        resource["bodySite"] = [site]
    return resource


def knee_pain(**dates: Any) -> dict[str, Any]:
    """Pain behind the right knee (G-05), by default 10 days old: not chronic."""
    return condition("knee-pain", [(ICD, "M25.561", "Pain in right knee"), (SN, "30989003", "Knee pain")],
                     "Pain behind the right knee",
                     dates or {"onsetDateTime": ago(10), "recordedDate": ago(1)},
                     {"coding": [{"system": SN, "code": "255551008", "display": "Posterior"},
                                 {"system": SN, "code": "24028007", "display": "Right"}],
                      "text": "back of the right knee"})


def calf_pain() -> dict[str, Any]:
    """A leg sign of G-09 (a), coded: the DVT pathway applies; it is not calf warmth or swelling."""
    return condition("calf-pain", [(ICD, "M79.661", "Pain in right lower leg"), (SN, "300954003", "Pain in calf")],
                     "Right calf pain", {"onsetDateTime": ago(5), "recordedDate": ago(1)})


def calf_swelling() -> dict[str, Any]:
    """A coded swelling sign of G-09 (a): with calf warmth it makes D-01."""
    return condition("calf-swelling", [(SN, "449707004", "Edema of lower leg")], "Swelling of the right calf",
                     {"onsetDateTime": ago(2), "recordedDate": ago(1)}, RIGHT)


def dvt_history() -> dict[str, Any]:
    """W-09 previously documented DVT: one Wells point, so a second item decides likely (2) or unlikely (1)."""
    return condition("dvt-history", [(ICD, "Z86.718", "Personal history of other venous thrombosis and embolism")],
                     "History of DVT", {"onsetDateTime": ago(800), "recordedDate": ago(800)})


def exam(rid: str = "calf-exam", **elements: Any) -> dict[str, Any]:
    """An exam Observation under a local flowsheet code that matches no value set (as Epic writes them)."""
    resource: dict[str, Any] = {
        "resourceType": "Observation", "id": rid, "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "exam"}]}],
        "code": {"coding": [{"system": LOCAL, "code": "LE-EXAM", "display": "Lower extremity exam"}],
                 "text": "Lower extremity exam"},
        "subject": {"reference": "Patient/scenario"}}
    if not any(k.startswith("effective") or k == "issued" for k in elements):
        resource["effectiveDateTime"] = ago(1)
    resource.update(elements)
    return resource


def calf_warmth(**dates: Any) -> dict[str, Any]:
    """pkp-finding#calf-warmth (codes.md §9), coded, so that only its date is under test."""
    return {"resourceType": "Observation", "id": "calf-warmth", "status": "final",
            "code": {"coding": [{"system": PKP, "code": "calf-warmth", "display": "Calf hot to touch"}]},
            "subject": {"reference": "Patient/scenario"}, "bodySite": RIGHT, "valueBoolean": True, **dates}


def knee_mri_report(conclusion: str | None, conclusion_code: tuple[str, str] | None) -> dict[str, Any]:
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport", "id": "knee-mri", "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD",
                                  "display": "Radiology"}]}],
        "code": {"coding": [{"system": LOINC, "code": "26258-4", "display": "MR Knee - right"}],
                 "text": "MRI right knee without contrast"},
        "subject": {"reference": "Patient/scenario"}, "effectiveDateTime": ago(60), "issued": ago(59)}
    if conclusion is not None:
        report["conclusion"] = conclusion
    if conclusion_code is not None:
        report["conclusionCode"] = [{"coding": [{"system": SN, "code": conclusion_code[0],
                                                 "display": conclusion_code[1]}]}]
    return report


# --- asking the service --------------------------------------------------------------------------


def chart_with(*scenario: dict[str, Any], patient_id: str = QUIET, birth_date: str | None = None) -> list[dict]:
    chart = synthea_chart(patient_id, today=TODAY, observations=OBSERVATIONS)
    if birth_date is not None:
        chart[0]["birthDate"] = birth_date
    return merge_scenario(chart, list(scenario))


def ask(client, chart: list[dict[str, Any]]) -> dict[str, Any]:
    response = client.post("/cds-services/posterior-knee-pain", json=build_request(chart, "patient-view"))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def cards_of(response: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["source"]["topic"]["code"], c["indicator"]) for c in response["cards"]]


def dvt_card(response: dict[str, Any]) -> tuple[str, str] | None:
    """The one DVT card in force (card-contract.md: at most one `dvt-*` card), as (topic, indicator)."""
    found = [c for c in cards_of(response) if c[0].startswith("dvt-")]
    assert len(found) <= 1, f"more than one DVT card: {found}"
    return found[0] if found else None


def wells_criteria(response: dict[str, Any]) -> set[str]:
    for card in response["cards"]:
        extension = card.get("extension", {})
        wells = extension.get("org.example.kneecds.wells") or extension.get("org.example.kneecds.wells")
        if wells is not None:
            return set(wells.get("criteria", []))
    raise AssertionError("no DVT card carries a Wells result")


def left_out(response: dict[str, Any]) -> list[dict[str, Any]]:
    extension = response.get("extension", {})
    quality = extension.get("org.example.kneecds.data-quality") or extension.get("org.example.kneecds.data-quality") or {}
    return quality.get("leftOut", [])


def knee_xray_suggested(response: dict[str, Any]) -> bool:
    """An `imaging` card suggesting knee radiographs (CPT 73560-73565): K-05 for chronic pain."""
    for card in response["cards"]:
        if card["source"]["topic"]["code"] != "imaging":
            continue
        for suggestion in card.get("suggestions", []):
            for action in suggestion["actions"]:
                codes = [c for c in action.get("resource", {}).get("code", {}).get("coding", []) if c["system"] == CPT]
                if any("73560" <= c["code"] <= "73565" for c in codes):
                    return True
    return False


# --- the charts themselves -----------------------------------------------------------------------


@pytest.mark.parametrize("patient_id", QUIET_PATIENT_IDS)
def test_a_quiet_synthea_chart_alone_gives_no_cards(client, patient_id):
    # G-05: no knee pain and no leg sign on record -> {"cards": []}; every resource is readable.
    response = ask(client, synthea_chart(patient_id, today=TODAY, observations=OBSERVATIONS))
    assert response["cards"] == []
    assert left_out(response) == []


# --- D-01: a hot, swollen, tender calf in any text element of an exam Observation (G-10) ----------

HOT_CALF_ELEMENTS = {
    "note": {"note": [{"text": HOT_CALF}]},
    "valueString": {"valueString": HOT_CALF},
    "component-valueString": {"component": [{"code": {"coding": [{"system": LOCAL, "code": "LE-CALF"}],
                                                      "text": "Lower leg"}, "valueString": HOT_CALF}]},
    "component-code-text": {"component": [{"code": {"coding": [{"system": LOCAL, "code": "LE-CALF-R"}],
                                                    "text": HOT_CALF}, "valueBoolean": True}]},
    "valueCodeableConcept-text": {"valueCodeableConcept": {"coding": [{"system": LOCAL, "code": "LE-ABN"}],
                                                           "text": HOT_CALF}},
}


@pytest.mark.parametrize("patient_id", QUIET_PATIENT_IDS)
@pytest.mark.parametrize("element", list(HOT_CALF_ELEMENTS))
def test_a_hot_swollen_tender_calf_written_in_one_text_element_is_urgent(client, patient_id, element):
    chart = chart_with(knee_pain(), exam(**HOT_CALF_ELEMENTS[element]), patient_id=patient_id)
    assert dvt_card(ask(client, chart)) == URGENT


def test_a_negated_list_of_calf_signs_is_not_urgent(client):
    # G-10: "No" negates swelling, warmth and tenderness alike; the coded calf pain keeps the DVT pathway (D-03).
    chart = chart_with(knee_pain(), calf_pain(), exam(note=[{"text": "No calf swelling, warmth or tenderness"}]))
    assert dvt_card(ask(client, chart)) == UNLIKELY


def test_a_warm_compress_is_a_treatment_not_calf_warmth(client):
    # G-10: a treatment is not a finding; the calf is swollen (coded) but not warm, so D-03, not D-01.
    chart = chart_with(knee_pain(), calf_swelling(),
                       exam(note=[{"text": "Advised warm compress to the leg twice daily"}]))
    assert dvt_card(ask(client, chart)) == UNLIKELY


def test_a_comma_before_an_affirmed_site_ends_the_negation(client):
    # G-10: "No fever, calf hot and swollen": fever negated, the hot swollen calf affirmed (D-01).
    chart = chart_with(knee_pain(), exam(note=[{"text": "No fever, calf hot and swollen"}]))
    assert dvt_card(ask(client, chart)) == URGENT


# --- K-10: a normal knee MRI, coded result first, then negation-aware text -----------------------


@pytest.mark.parametrize(("conclusion", "conclusion_code", "normal"), [
    pytest.param("Normal study. No joint effusion. No meniscal tear.", None, True, id="negated-findings-are-normal"),
    pytest.param("Normal study.", ("263654008", "Abnormal"), False, id="coded-abnormal-overrides-normal-text"),
    pytest.param("Small joint effusion. Degenerative change of the medial meniscus.", ("17621005", "Normal"), True,
                 id="coded-normal-overrides-findings"),
    pytest.param("Horizontal tear of the posterior horn of the medial meniscus.", None, False, id="a-finding"),
    pytest.param(None, None, False, id="no-result-is-unknown"),
])
def test_the_knee_mri_report_decides_the_normal_mri_advice(client, conclusion, conclusion_code, normal):
    # K-10 (topic referred-pain): persisting pain behind the right knee after a right knee MRI 60 days ago.
    chart = chart_with(knee_pain(onsetDateTime=ago(150), recordedDate=ago(150)),
                       knee_mri_report(conclusion, conclusion_code))
    assert (("referred-pain", "info") in cards_of(ask(client, chart))) is normal


# --- G-11: every date form, just inside and just outside the window it decides --------------------

WARMTH_DATES = [  # calf warmth counts for D-01 within 14 days (G-09 (b)); a period by its end, no end = ongoing
    pytest.param({"effectiveDateTime": ago(13)}, True, id="effectiveDateTime-13d"),
    pytest.param({"effectiveDateTime": ago(15)}, False, id="effectiveDateTime-15d"),
    pytest.param({"effectivePeriod": {"start": ago(25), "end": ago(13)}}, True, id="effectivePeriod-ends-13d"),
    pytest.param({"effectivePeriod": {"start": ago(25), "end": ago(15)}}, False, id="effectivePeriod-ends-15d"),
    pytest.param({"effectivePeriod": {"end": ago(13)}}, True, id="effectivePeriod-end-only-13d"),
    pytest.param({"effectivePeriod": {"end": ago(15)}}, False, id="effectivePeriod-end-only-15d"),
    pytest.param({"effectivePeriod": {"start": ago(20)}}, True, id="effectivePeriod-start-only-is-ongoing"),
    pytest.param({"effectiveInstant": ago(13, "10:30:00.000")}, True, id="effectiveInstant-13d"),
    pytest.param({"effectiveInstant": ago(15, "10:30:00.000")}, False, id="effectiveInstant-15d"),
    pytest.param({"issued": ago(13, "10:30:00.000")}, True, id="issued-only-13d"),
    pytest.param({"issued": ago(15, "10:30:00.000")}, False, id="issued-only-15d"),
]


@pytest.mark.parametrize(("dates", "counts"), WARMTH_DATES)
def test_observation_date_forms_decide_the_14_day_window(client, dates, counts):
    # D-01 needs calf warmth of the last 14 days and a swelling sign; without the warmth, D-03 (Wells 0).
    chart = chart_with(knee_pain(), calf_swelling(), calf_warmth(**dates))
    assert dvt_card(ask(client, chart)) == (URGENT if counts else UNLIKELY)


def _thirtieth_birthday(days_ago: int) -> str:
    """A birthDate whose 30th birthday fell `days_ago` days before today (for onsetAge 30 years)."""
    birthday = TODAY - timedelta(days=days_ago)
    return birthday.replace(year=birthday.year - 30).isoformat()


ONSET_DATES = [  # chronic = onset >= 6 weeks (42 days) ago, by the start of a period; recorded yesterday
    pytest.param({"onsetDateTime": ago(45), "recordedDate": ago(1)}, None, True, id="onsetDateTime-45d"),
    pytest.param({"onsetDateTime": ago(39), "recordedDate": ago(1)}, None, False, id="onsetDateTime-39d"),
    pytest.param({"onsetPeriod": {"start": ago(45)}, "recordedDate": ago(1)}, None, True, id="onsetPeriod-45d"),
    pytest.param({"onsetPeriod": {"start": ago(39)}, "recordedDate": ago(1)}, None, False, id="onsetPeriod-39d"),
    pytest.param({"onsetAge": {"value": 30, "unit": "years", "system": UCUM, "code": "a"}, "recordedDate": ago(1)},
                 _thirtieth_birthday(45), True, id="onsetAge-45d"),
    pytest.param({"onsetAge": {"value": 30, "unit": "years", "system": UCUM, "code": "a"}, "recordedDate": ago(1)},
                 _thirtieth_birthday(39), False, id="onsetAge-39d"),
    pytest.param({"onsetString": day(45), "recordedDate": ago(1)}, None, True, id="onsetString-date-45d"),
    pytest.param({"onsetString": day(39), "recordedDate": ago(1)}, None, False, id="onsetString-date-39d"),
    pytest.param({"onsetString": "gradually, over the summer", "recordedDate": ago(45)}, None, True,
                 id="onsetString-not-a-date-uses-recordedDate-45d"),
    pytest.param({"onsetString": "gradually, over the summer", "recordedDate": ago(39)}, None, False,
                 id="onsetString-not-a-date-uses-recordedDate-39d"),
    pytest.param({"recordedDate": ago(45)}, None, True, id="recordedDate-only-45d"),
    pytest.param({"recordedDate": ago(39)}, None, False, id="recordedDate-only-39d"),
]


@pytest.mark.parametrize(("dates", "birth_date", "chronic"), ONSET_DATES)
def test_condition_onset_forms_decide_chronic_pain(client, dates, birth_date, chronic):
    # K-05: chronic pain behind the knee with no knee radiograph in 12 months -> weight-bearing X-ray card.
    response = ask(client, chart_with(knee_pain(**dates), birth_date=birth_date))
    assert knee_xray_suggested(response) is chronic
    if not chronic:
        assert "imaging" not in {topic for topic, _ in cards_of(response)}


def surgery(**dates: Any) -> dict[str, Any]:
    return {"resourceType": "Procedure", "id": "cholecystectomy", "status": "completed",
            "code": {"coding": [{"system": CPT, "code": "47562", "display": "Laparoscopy, surgical; cholecystectomy"}],
                     "text": "Laparoscopic cholecystectomy"},
            "subject": {"reference": "Patient/scenario"}, **dates}


SURGERY_DATES = [  # W-03: major surgery within 12 weeks (84 days)
    pytest.param({"performedDateTime": ago(80)}, True, id="performedDateTime-80d"),
    pytest.param({"performedDateTime": ago(90)}, False, id="performedDateTime-90d"),
    pytest.param({"performedPeriod": {"start": ago(80, "08:00:00"), "end": ago(80, "10:30:00")}}, True,
                 id="performedPeriod-80d"),
    pytest.param({"performedPeriod": {"start": ago(90, "08:00:00"), "end": ago(90, "10:30:00")}}, False,
                 id="performedPeriod-90d"),
]


@pytest.mark.parametrize(("dates", "counts"), SURGERY_DATES)
def test_procedure_date_forms_decide_the_12_week_surgery_window(client, dates, counts):
    # Leg signs; W-09 +1; W-03 +1 makes Wells 2 (D-02, likely), else Wells 1 (D-03, unlikely).
    response = ask(client, chart_with(knee_pain(), calf_pain(), dvt_history(), surgery(**dates)))
    assert dvt_card(response) == (LIKELY if counts else UNLIKELY)
    assert ("bedridden-or-major-surgery" in wells_criteria(response)) is counts


def chemotherapy_order(authored: str) -> dict[str, Any]:
    return {"resourceType": "MedicationRequest", "id": "chemo-order", "status": "completed", "intent": "order",
            "medicationCodeableConcept": {
                "text": "PACLitaxel (TAXOL) 175 mg/m2 in sodium chloride 0.9% 500 mL chemotherapy infusion"},
            "subject": {"reference": "Patient/scenario"}, "authoredOn": authored}


def chemotherapy_visit(days_ago: int) -> dict[str, Any]:
    return {"resourceType": "Encounter", "id": "chemo-visit", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": "Patient/scenario"},
            "period": {"start": ago(days_ago, "09:00:00"), "end": ago(days_ago, "13:00:00")},
            "reasonCode": [{"coding": [{"system": ICD, "code": "Z51.11",
                                        "display": "Encounter for antineoplastic chemotherapy"}],
                            "text": "Encounter for antineoplastic chemotherapy"}]}


TREATMENT_DATES = [  # W-01: anticancer treatment within 6 months (183 days)
    pytest.param(chemotherapy_order(ago(170)), True, id="authoredOn-170d"),
    pytest.param(chemotherapy_order(ago(200)), False, id="authoredOn-200d"),
    pytest.param(chemotherapy_visit(170), True, id="Encounter-period-170d"),
    pytest.param(chemotherapy_visit(200), False, id="Encounter-period-200d"),
]


@pytest.mark.parametrize(("treatment", "counts"), TREATMENT_DATES)
def test_order_and_encounter_dates_decide_the_6_month_cancer_window(client, treatment, counts):
    # Leg signs; W-09 +1; W-01 +1 makes Wells 2 (D-02), else Wells 1 (D-03).
    response = ask(client, chart_with(knee_pain(), calf_pain(), dvt_history(), treatment))
    assert dvt_card(response) == (LIKELY if counts else UNLIKELY)
    assert ("active-cancer" in wells_criteria(response)) is counts


@pytest.mark.parametrize("hot_calf", [
    pytest.param([calf_swelling(), calf_warmth(effectiveDateTime="2026-11-18T10:00:00")], id="coded-finding"),
    pytest.param([exam(effectiveDateTime="2026-11-18T10:00:00", note=[{"text": HOT_CALF}])], id="exam-note"),
])
def test_a_zone_less_datetime_is_read_not_rejected(client, hot_calf):
    # G-11: a dateTime without a zone is read in the service's zone, never left out.
    response = ask(client, chart_with(knee_pain(), *hot_calf))
    assert dvt_card(response) == URGENT
    assert left_out(response) == []


# --- G-10: text elements of other resource types --------------------------------------------------


@pytest.mark.parametrize(("site_text", "expected"), [
    pytest.param("right popliteal fossa", [("differential", "info")], id="posterior"),
    pytest.param("right patella", [], id="anterior"),
])
def test_body_site_text_places_the_knee_pain(client, site_text, expected):
    # G-05: knee pain placed behind the knee only by bodySite.text -> the differential (no diagnosis, not
    # chronic, no leg sign); placed at the front -> not a trigger, no card at all.
    pain = condition("knee-pain", [(ICD, "M25.561", "Pain in right knee")], "Pain in right knee",
                     {"onsetDateTime": ago(10), "recordedDate": ago(1)}, {"text": site_text})
    assert cards_of(ask(client, chart_with(pain))) == expected


@pytest.mark.parametrize(("interpretation", "normal"), [
    pytest.param("Normal study", True, id="normal"),
    pytest.param("Abnormal: tear of the medial meniscus", False, id="abnormal"),
])
def test_interpretation_text_of_a_knee_mri_result(client, interpretation, normal):
    # K-10 from an Observation coded with the study's LOINC code whose result is only interpretation[].text.
    result = {"resourceType": "Observation", "id": "knee-mri-result", "status": "final",
              "code": {"coding": [{"system": LOINC, "code": "26258-4", "display": "MR Knee - right"}],
                       "text": "MRI right knee"},
              "subject": {"reference": "Patient/scenario"}, "effectiveDateTime": ago(60),
              "interpretation": [{"text": interpretation}]}
    chart = chart_with(knee_pain(onsetDateTime=ago(150), recordedDate=ago(150)), result)
    assert (("referred-pain", "info") in cards_of(ask(client, chart))) is normal


def ankle_fracture_care(**text: Any) -> dict[str, Any]:
    """A procedure whose code says nothing of a cast and is not surgery; only its note or outcome may."""
    return {"resourceType": "Procedure", "id": "ankle-care", "status": "completed",
            "code": {"coding": [{"system": LOCAL, "code": "ORTHO-ANKLE", "display": "Closed management of ankle "
                                 "fracture"}], "text": "Closed management of right ankle fracture"},
            "subject": {"reference": "Patient/scenario"}, "performedDateTime": ago(20), **text}


@pytest.mark.parametrize(("procedure", "immobilised"), [
    pytest.param(ankle_fracture_care(note=[{"text": "Below-knee plaster cast applied to the right leg."}]), True,
                 id="note-cast"),
    pytest.param(ankle_fracture_care(outcome={"text": "Right leg immobilised in a below-knee cast"}), True,
                 id="outcome-cast"),
    pytest.param(ankle_fracture_care(note=[{"text": "Managed without a cast; early weight bearing."}]), False,
                 id="note-without-cast"),
])
def test_procedure_note_and_outcome_show_plaster_immobilisation(client, procedure, immobilised):
    # W-02 (cast within 12 weeks, read from text) +1 with W-09 +1 -> Wells 2 (D-02), else Wells 1 (D-03).
    response = ask(client, chart_with(knee_pain(), calf_pain(), dvt_history(), procedure))
    assert dvt_card(response) == (LIKELY if immobilised else UNLIKELY)
    assert ("paralysis-or-immobilisation" in wells_criteria(response)) is immobilised


@pytest.mark.parametrize(("reason", "treated"), [
    pytest.param("Cycle 3 of adjuvant chemotherapy", True, id="chemotherapy"),
    pytest.param("Routine review", False, id="other-reason"),
])
def test_encounter_reason_text_shows_cancer_treatment(client, reason, treated):
    # W-01: anticancer treatment 40 days ago, named only in Encounter.reasonCode[].text.
    visit = {"resourceType": "Encounter", "id": "oncology-visit", "status": "finished",
             "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
             "type": [{"text": "Outpatient visit"}], "subject": {"reference": "Patient/scenario"},
             "period": {"start": ago(40, "09:00:00"), "end": ago(40, "13:00:00")}, "reasonCode": [{"text": reason}]}
    response = ask(client, chart_with(knee_pain(), calf_pain(), dvt_history(), visit))
    assert dvt_card(response) == (LIKELY if treated else UNLIKELY)
    assert ("active-cancer" in wells_criteria(response)) is treated


@pytest.mark.parametrize(("reason", "expected"), [
    pytest.param("Deep vein thrombosis of the right leg", ("dvt-risk-factors", "info"), id="for-dvt"),
    pytest.param("Atrial fibrillation", UNLIKELY, id="for-atrial-fibrillation"),
])
def test_medication_reason_text_tells_a_known_dvt(client, reason, expected):
    # D-08: an active anticoagulant started for DVT (reasonCode[].text) is a known DVT: no new diagnostic
    # pathway (dvt-risk-factors card); for another reason the pathway runs for the calf pain (D-03).
    anticoagulant = {"resourceType": "MedicationRequest", "id": "anticoagulant", "status": "active", "intent": "order",
                     "medicationCodeableConcept": {"text": "apixaban 5 MG Oral Tablet"},
                     "subject": {"reference": "Patient/scenario"}, "authoredOn": ago(30),
                     "reasonCode": [{"text": reason}]}
    response = ask(client, chart_with(knee_pain(), calf_pain(), anticoagulant))
    assert dvt_card(response) == expected
    # For another reason, the DVT card names it as a fact that changes management (a D-dimer is less reliable).
    detail = next(c["detail"] for c in response["cards"] if c["source"]["topic"]["code"].startswith("dvt-"))
    assert ("**On an anticoagulant (not for DVT):**\n- apixaban 5 MG Oral Tablet" in detail) is (expected == UNLIKELY)


# --- the generator (fhir_examples/synthea.py) ----------------------------------------------------


def _raw(resource_type: str, resource_id: str) -> dict[str, Any]:
    with (SYNTHEA_DIR / f"{resource_type}.ndjson").open(encoding="utf-8") as lines:
        return next(r for r in map(json.loads, lines) if r["id"] == resource_id)


@pytest.mark.parametrize(("value", "days", "moved"), [
    ("1989-10-04T02:25:16-04:00", 3, "1989-10-07T02:25:16-04:00"),
    ("2020-12-30T23:00:00Z", 3, "2021-01-02T23:00:00Z"),
    ("2020-12-30T23:00:00.123+01:00", 3, "2021-01-02T23:00:00.123+01:00"),
    ("2024-02-27", 3, "2024-03-01"),
    ("2020-12", 40, "2021-01"),  # partial dates keep their precision
    ("2020", 400, "2021"),
])
def test_a_date_moves_by_whole_days_keeping_its_form(value, days, moved):
    assert shift_date(value, days) == moved


def test_a_chart_moves_every_date_by_one_offset_to_just_before_today():
    chart = synthea_chart(QUIET, today=TODAY)
    encounters = [r for r in chart if r["resourceType"] == "Encounter"]
    newest = max(encounters, key=lambda e: e["period"]["start"][:10])
    assert newest["period"]["start"][:10] == day(3)
    offset = date.fromisoformat(newest["period"]["start"][:10]) - date.fromisoformat(
        _raw("Encounter", newest["id"])["period"]["start"][:10])
    patient = chart[0]
    assert date.fromisoformat(patient["birthDate"]) - date.fromisoformat(_raw("Patient", QUIET)["birthDate"]) == offset
    condition_ = next(r for r in chart if r["resourceType"] == "Condition")
    original = _raw("Condition", condition_["id"])
    assert condition_["onsetDateTime"] == shift_date(original["onsetDateTime"], offset.days)
    assert condition_["onsetDateTime"][10:] == original["onsetDateTime"][10:]  # time and zone as Synthea wrote them
    assert {r["resourceType"] for r in chart} == {"Patient", "Condition", "Procedure", "MedicationRequest", "Encounter"}


def test_generated_observations_are_synthea_shaped_and_spread_over_the_encounters():
    chart = synthea_chart(QUIET, today=TODAY, observations=300, seed=7)
    observations = [r for r in chart if r["resourceType"] == "Observation"]
    encounters = {f"Encounter/{r['id']}" for r in chart if r["resourceType"] == "Encounter"}
    assert len(observations) == 300
    assert {o["encounter"]["reference"] for o in observations} == encounters
    codes = {o["code"]["coding"][0]["code"] for o in observations}
    assert {"8302-2", "29463-7", "39156-5", "85354-9", "8867-4", "9279-1", "8310-5", "72514-3"} <= codes
    for o in observations:
        category = o["category"][0]["coding"][0]["code"]
        assert category in ("vital-signs", "laboratory") and o["meta"]["profile"]
        assert o["subject"]["reference"] == f"Patient/{QUIET}"
        assert o["effectiveDateTime"][19:] in ("-04:00", "-05:00") and o["issued"] > o["effectiveDateTime"][:19]
        quantities = [o["valueQuantity"]] if "valueQuantity" in o else [c["valueQuantity"] for c in o["component"]]
        assert quantities and all(q["system"] == UCUM and q["code"] for q in quantities)
        if o["code"]["coding"][0]["code"] == "39156-5":
            assert o["valueQuantity"]["value"] < 30.0  # quiet: no obesity
        if o["code"]["coding"][0]["code"] == "8310-5":
            assert o["valueQuantity"]["value"] < 38.0  # quiet: no fever (RF-06)
    assert synthea_chart(QUIET, today=TODAY, observations=300, seed=7) == chart
    assert synthea_chart(QUIET, today=TODAY, observations=300, seed=8) != chart


def test_every_generated_resource_is_valid_fhir_r4():
    for patient_id in QUIET_PATIENT_IDS:
        for resource in synthea_chart(patient_id, today=TODAY, observations=60) + sized_chart(40, today=TODAY):
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def test_a_merged_scenario_points_at_the_chart_patient_with_ids_of_its_own():
    chart = synthea_chart(QUIET, today=TODAY)
    visit = chemotherapy_visit(40)
    finding = exam(encounter={"reference": "Encounter/chemo-visit"}, note=[{"text": HOT_CALF}])
    merged = merge_scenario(chart, [{"resourceType": "Patient", "id": "scenario"}, visit, finding])
    assert merged[:len(chart)] == chart and len(merged) == len(chart) + 2
    added = merged[len(chart):]
    assert [r["id"] for r in added] == ["scenario-chemo-visit", "scenario-calf-exam"]
    assert all(r["subject"]["reference"] == f"Patient/{QUIET}" for r in added)
    assert added[1]["encounter"]["reference"] == "Encounter/scenario-chemo-visit"
    assert visit["id"] == "chemo-visit"  # the caller's scenario is left as it was


@pytest.mark.parametrize("n", [10, 100, 1000])
def test_a_sized_chart_has_exactly_n_resources_and_the_token_in_every_id(n):
    chart = sized_chart(n, today=TODAY, token="req-42")
    assert len(chart) == n
    assert chart[0]["resourceType"] == "Patient" and chart[0]["id"].startswith("req-42-")
    assert all(r["id"].startswith("req-42-") for r in chart)
    assert len({(r["resourceType"], r["id"]) for r in chart}) == n
    ids = {f"{r['resourceType']}/{r['id']}" for r in chart}
    subjects = {r["subject"]["reference"] for r in chart if "subject" in r}
    assert subjects == {f"Patient/{chart[0]['id']}"} and subjects <= ids
    other = json.dumps(sized_chart(n, today=TODAY, token="req-43"))
    assert other == json.dumps(chart).replace("req-42-", "req-43-")


def test_the_benchmark_chart_gives_the_urgent_card(client):
    # The benchmark's scenario: pain behind the right knee and a hot swollen tender calf in an exam note (D-01).
    response = ask(client, sized_chart(100, today=TODAY, token="bench-1"))
    assert dvt_card(response) == URGENT


def test_every_synthea_patient_is_listed():
    ids = synthea_patient_ids()
    assert len(ids) == len(set(ids)) and set(QUIET_PATIENT_IDS) <= set(ids)
