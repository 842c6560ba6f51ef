"""What could not be read is said on the card it could change (card contract, amended 2026-11-26): the data-quality
extension is invisible in EHRs, so a card whose advice a missing key could change says so in one line."""

from __future__ import annotations

import pytest

from cds_service import Settings, create_app
from cds_service.knowledge import load_knowledge
from cds_service.registry import PATIENT_DATA

from .conftest import EXAMPLES, LOCAL_FHIR, example_request, load_json

IMAGING_GAP = "Imaging history could not be read from the EHR: check for a recent knee X-ray or MRI before ordering."
REPORTS_GAP = ("Imaging reports could not be read from the EHR: check for a recent knee X-ray, MRI or leg vein scan "
               "result before ordering.")


@pytest.fixture
def app(tmp_path):
    return create_app(Settings(database_url=f"sqlite:///{tmp_path / 'f.db'}", now="2026-11-20", **LOCAL_FHIR))


def _cards_with_imaging_history_failing(app, server, sample: str, hook: str) -> list[dict]:
    body = example_request(sample, hook, server.base)
    del body["prefetch"]
    body["fhirAuthorization"] = {"access_token": "t", "token_type": "Bearer", "expires_in": 300, "scope": "x",
                                 "subject": "cds"}
    server.load([entry["resource"] for entry in load_json(EXAMPLES / sample)["entry"]])
    server.fail("Procedure", 503)
    server.fail("DiagnosticReport", 503)
    service = {"patient-view": "posterior-knee-pain", "order-select": "knee-imaging-select"}[hook]
    response = app.test_client().post(f"/cds-services/{service}", json=body)
    assert response.status_code == 200, response.get_json()
    missing = {gap["key"] for gap in response.get_json()["extension"]["org.example.kneecds.data-quality"]["missing"]}
    assert {"procedures", "reports"} <= missing
    return response.get_json()["cards"]


def test_an_imaging_card_says_the_imaging_history_could_not_be_read(app, fresh_paging_fhir_server):
    cards = _cards_with_imaging_history_failing(app, fresh_paging_fhir_server, "chronic-posterior-knee-pain.json",
                                                "patient-view")
    imaging = [c for c in cards if c["source"]["topic"]["code"] == "imaging"]
    assert imaging and all(IMAGING_GAP in c["detail"] and REPORTS_GAP in c["detail"] for c in imaging)
    # ... and only there: the differential does not depend on imaging history
    others = [c for c in cards if c["source"]["topic"]["code"] == "differential"]
    assert others and all("could not be read from the EHR" not in c["detail"] for c in others)


def test_an_order_check_says_it_too(app, fresh_paging_fhir_server):
    cards = _cards_with_imaging_history_failing(app, fresh_paging_fhir_server, "chronic-posterior-knee-pain.json",
                                                "order-select")
    assert cards and all(IMAGING_GAP in c["detail"] for c in cards
                         if c["source"]["topic"]["code"] == "imaging-appropriateness")


def test_every_optional_prefetch_key_has_a_gap_line():
    # A required key that fails is a 412 (no cards at all); an optional one is a gap that cards must name.
    gaps = load_knowledge().cards["gaps"]
    optional = {spec.key for spec in PATIENT_DATA if not spec.required}
    assert optional <= set(gaps), optional - set(gaps)
    assert set(gaps) <= {spec.key for spec in PATIENT_DATA}
