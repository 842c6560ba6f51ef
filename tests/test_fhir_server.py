"""The FHIR fallback over HTTP against a real FHIR R4 server (Medplum's router, tests/fhir_server)."""

from __future__ import annotations

import time

import pytest

from cds_service import Settings, create_app

from .conftest import example_request

TOKEN = "medplum-test-token"


@pytest.fixture
def loaded(fhir_server):
    """The chronic posterior knee pain sample, stored on the FHIR server; request with no prefetch."""
    body = example_request("chronic-posterior-knee-pain.json", "order-select", fhir_server.base)
    patient_data = [body["prefetch"]["patient"]]
    for key, value in body["prefetch"].items():
        if key != "patient":
            patient_data += [e["resource"] for e in value.get("entry", [])]
    fhir_server.load(patient_data)
    del body["prefetch"]
    body["fhirAuthorization"] = {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
                                 "scope": "user/*.read", "subject": "knee-cds"}
    return body


def _post(settings: Settings, body: dict):
    app = create_app(settings)
    try:
        return app.test_client().post("/cds-services/knee-imaging-select", json=body)
    finally:
        app.extensions["knee_cds"].fhir_client.close()


def _topics(response) -> list[str]:
    return [c["source"]["topic"]["code"] for c in response.get_json()["cards"]]


def test_the_server_answers_metadata(fhir_server):
    statement = fhir_server.http.get("/metadata").json()
    assert statement["resourceType"] == "CapabilityStatement" and statement["fhirVersion"].startswith("4.0")


def test_missing_data_is_fetched_from_the_fhir_server_with_the_token(settings, fhir_server, loaded):
    fhir_server.configure(requireToken=TOKEN)
    response = _post(settings, loaded)
    assert response.status_code == 200, response.get_json()
    assert _topics(response) == ["imaging-appropriateness"]
    seen = fhir_server.requests()
    assert {r["authorization"] for r in seen} == {f"Bearer {TOKEN}"}
    assert any(r["url"].startswith("/Condition?patient=pkp-chronic-01") for r in seen)


def test_vendor_meta_of_a_real_server_is_tolerated(settings, fhir_server, loaded):
    # The test server adds meta.project to every resource, as Medplum does.
    assert "project" in fhir_server.http.get("/Patient/pkp-chronic-01").json()["meta"]
    response = _post(settings, loaded)
    assert response.status_code == 200
    assert "extension" not in response.get_json()  # nothing was left out


def test_searchset_pages_are_followed(settings, fhir_server, loaded):
    # Three more conditions spread the search over several pages of one entry each; the knee pain
    # condition must be found wherever it lands.
    extra = [{"resourceType": "Condition", "id": f"other-{i}", "subject": {"reference": "Patient/pkp-chronic-01"},
              "code": {"text": f"unrelated {i}"}} for i in range(3)]
    fhir_server.load(extra)
    fhir_server.configure(pageSize=1)
    response = _post(settings, loaded)
    assert response.status_code == 200
    condition_pages = [r for r in fhir_server.requests() if r["url"].startswith("/Condition")]
    assert len(condition_pages) == 4
    assert _topics(response) == ["imaging-appropriateness"]


def test_the_deadline_covers_all_fetches_of_one_call(settings, fhir_server, loaded):
    # Four condition pages at 0.8 s each cannot finish within the 2 s budget: required data is
    # missing, so the answer is 412, and it comes at about the deadline rather than after 3.2 s.
    fhir_server.load([{"resourceType": "Condition", "id": f"c{i}", "subject": {"reference": "Patient/pkp-chronic-01"},
                       "code": {"text": "x"}} for i in range(3)])
    fhir_server.configure(pageSize=1, delayMs=800)
    started = time.monotonic()
    response = _post(settings, loaded)
    elapsed = time.monotonic() - started
    assert response.status_code == 412
    assert "conditions" in response.get_json()["issue"][0]["diagnostics"]
    assert elapsed < 3.0


def test_a_slow_server_within_the_deadline_still_answers(settings, fhir_server, loaded):
    fhir_server.configure(delayMs=300)
    response = _post(settings, loaded)
    assert response.status_code == 200
    assert _topics(response) == ["imaging-appropriateness"]


def test_a_wrong_token_is_a_412(settings, fhir_server, loaded):
    fhir_server.configure(requireToken="another-token")
    response = _post(settings, loaded)
    assert response.status_code == 412
    assert "HTTP 401" in response.get_json()["issue"][0]["diagnostics"]


def test_a_server_error_on_required_data_is_a_412(settings, fhir_server, loaded):
    fhir_server.configure(failStatus=500, failTypes=["Observation"])
    response = _post(settings, loaded)
    assert response.status_code == 412
    assert response.get_json()["issue"][0]["expression"] == ["prefetch.observations"]


def test_a_server_error_on_optional_data_goes_on_and_says_so(settings, fhir_server, loaded):
    fhir_server.configure(failStatus=500, failTypes=["Encounter"])
    response = _post(settings, loaded)
    assert response.status_code == 200
    missing = response.get_json()["extension"]["org.example.kneecds.data-quality"]["missing"]
    assert [m["key"] for m in missing] == ["recent-encounters"]  # the query plan's key (query-plan.md)
    assert _topics(response) == ["imaging-appropriateness"]


def test_an_unreachable_server_is_a_412(settings, loaded):
    loaded["fhirServer"] = "http://127.0.0.1:9"  # discard port: nothing listens
    response = _post(settings, loaded)
    assert response.status_code == 412


SANDBOX_FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _observation(ident: str, system: str, code: str, when: str, patient: str = "pkp-chronic-01") -> dict:
    return {"resourceType": "Observation", "id": ident, "status": "final", "subject": {"reference": f"Patient/{patient}"},
            "code": {"coding": [{"system": system, "code": code}]}, "effectiveDateTime": when}


def test_a_sandbox_form_post_search_answers_as_the_get_search(fhir_server):
    # The CDS Hooks Sandbox fills a prefetch template with a form-encoded POST _search; it used to crash the server.
    fhir_server.load([
        _observation("swelling", "http://snomed.info/sct", "24028007", "2026-11-18T10:00:00Z"),
        _observation("dimer", "http://loinc.org", "39156-5", "2026-11-19T09:00:00Z"),
        _observation("older-dimer", "http://loinc.org", "39156-5", "2026-10-02T09:00:00Z"),
        _observation("heart-rate", "http://loinc.org", "8867-4", "2026-11-19T09:05:00Z"),
        _observation("someone-else", "http://loinc.org", "39156-5", "2026-11-19T09:00:00Z", patient="other"),
    ])
    fhir_server.configure(pageSize=2)
    query = "patient=pkp-chronic-01&code=39156-5,24028007&_sort=-date"
    got = fhir_server.http.get(f"/Observation?{query}")
    posted = fhir_server.http.post("/Observation/_search", content=query, headers=SANDBOX_FORM)
    assert posted.status_code == 200, posted.text
    assert posted.json() == got.json()
    assert [e["resource"]["id"] for e in posted.json()["entry"]] == ["dimer", "swelling"]
    assert posted.json()["total"] == 3
    rest = fhir_server.http.get(next(link["url"] for link in posted.json()["link"] if link["relation"] == "next"))
    assert [e["resource"]["id"] for e in rest.json()["entry"]] == ["older-dimer"]
    assert {"method": "POST", "url": "/Observation/_search", "authorization": None, "body": query} in fhir_server.requests()


def test_a_browser_preflight_is_answered_and_every_answer_allows_any_origin(fhir_server):
    fhir_server.configure(requireToken=TOKEN)  # a preflight carries no token and must not need one
    preflight = fhir_server.http.options("/Observation/_search", headers={
        "Origin": "https://sandbox.cds-hooks.org", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert preflight.headers["Access-Control-Allow-Methods"] == "GET, POST, OPTIONS"
    assert preflight.headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type"
    refused = fhir_server.http.get("/Patient/pkp-chronic-01")
    assert refused.status_code == 401 and refused.headers["Access-Control-Allow-Origin"] == "*"
