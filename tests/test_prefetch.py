"""Prefetch handling per CDS Hooks 2.0, with a recording transport standing in for the FHIR server.

(The same paths against a real FHIR server are in test_fhir_server.py.)
"""

from __future__ import annotations

import copy

import httpx
import pytest

from cds_service import create_app

from .conftest import example_request

FHIR = "https://ehr.example.org/fhir"
TOKEN = "opaque-token-123"


class RecordingFhir:
    """Answers searches from a sample bundle's data and records what was asked."""

    def __init__(self, body: dict):
        self.calls: list[httpx.Request] = []
        self.patient = body["prefetch"]["patient"]
        self.data: dict[str, dict] = {}  # by reference: the same resource may sit under several keys
        for value in body["prefetch"].values():
            for entry in (value or {}).get("entry", []) if (value or {}).get("resourceType") == "Bundle" else []:
                resource = entry["resource"]
                self.data[f"{resource['resourceType']}/{resource['id']}"] = resource

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        rtype = request.url.path.rsplit("/fhir/", 1)[1].split("/")[0]
        if "/" in request.url.path.rsplit("/fhir/", 1)[1]:
            return httpx.Response(200, json=self.patient)
        found = [r for r in self.data.values() if r["resourceType"] == rtype]
        return httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset",
                                         "entry": [{"resource": r} for r in found]})

    def fetched(self) -> set[str]:
        return {r.url.path.rsplit("/fhir/", 1)[1].split("/")[0] for r in self.calls}


def _call(settings, body, transport):
    app = create_app(settings, fhir_transport=httpx.MockTransport(transport))
    return app.test_client().post("/cds-services/knee-imaging-select", json=body)


@pytest.fixture
def full_body() -> dict:
    body = example_request("chronic-posterior-knee-pain.json", "order-select", FHIR)
    body["fhirAuthorization"] = {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
                                 "scope": "user/*.read", "subject": "knee-cds"}
    return body


def _topics(response) -> list[str]:
    return [c["source"]["topic"]["code"] for c in response.get_json()["cards"]]


def test_full_prefetch_makes_no_fhir_call(settings, full_body):
    fhir = RecordingFhir(full_body)
    response = _call(settings, full_body, fhir)
    assert response.status_code == 200
    assert fhir.calls == []
    assert _topics(response) == ["imaging-appropriateness"]


def test_absent_keys_are_fetched_with_the_bearer_token(settings, full_body):
    fhir = RecordingFhir(copy.deepcopy(full_body))
    full_body.pop("prefetch")
    response = _call(settings, full_body, fhir)
    assert response.status_code == 200
    assert fhir.fetched() == {"Patient", "Condition", "Observation", "Procedure", "MedicationRequest",
                              "Encounter", "DiagnosticReport"}
    assert {r.headers["Authorization"] for r in fhir.calls} == {f"Bearer {TOKEN}"}
    assert any(r.url.params.get("patient") == "pkp-chronic-01" for r in fhir.calls)
    # Same decision as with full prefetch: the fetched data were used.
    assert _topics(response) == ["imaging-appropriateness"]


def test_partial_prefetch_fetches_only_the_missing_keys(settings, full_body):
    fhir = RecordingFhir(copy.deepcopy(full_body))
    del full_body["prefetch"]["procedures"]
    del full_body["prefetch"]["observations"]
    response = _call(settings, full_body, fhir)
    assert response.status_code == 200
    assert fhir.fetched() == {"Procedure", "Observation"}


def test_a_null_prefetch_value_means_known_empty_and_is_not_fetched(settings, full_body):
    fhir = RecordingFhir(copy.deepcopy(full_body))
    full_body["prefetch"]["procedures"] = None
    full_body["prefetch"]["active-medications"] = None
    full_body["prefetch"]["recent-medications"] = None
    response = _call(settings, full_body, fhir)
    assert response.status_code == 200
    assert fhir.calls == []
    assert "extension" not in response.get_json()


def test_operation_outcome_for_required_data_is_412_without_refetching(settings, full_body):
    fhir = RecordingFhir(copy.deepcopy(full_body))
    full_body["prefetch"]["conditions"] = {"resourceType": "OperationOutcome",
                                           "issue": [{"severity": "error", "code": "timeout"}]}
    response = _call(settings, full_body, fhir)
    assert response.status_code == 412
    assert response.get_json()["issue"][0]["expression"] == ["prefetch.conditions"]
    assert fhir.calls == []


def test_operation_outcome_for_optional_data_goes_on_and_says_so(settings, full_body):
    fhir = RecordingFhir(copy.deepcopy(full_body))
    full_body["prefetch"]["procedures"] = {"resourceType": "OperationOutcome",
                                           "issue": [{"severity": "error", "code": "forbidden"}]}
    response = _call(settings, full_body, fhir)
    assert response.status_code == 200
    assert fhir.calls == []
    missing = response.get_json()["extension"]["org.example.kneecds.data-quality"]["missing"]
    assert [m["key"] for m in missing] == ["procedures"]


def test_missing_required_data_without_a_fhir_server_is_412(client, full_body):
    full_body.pop("fhirServer")
    full_body.pop("fhirAuthorization")
    del full_body["prefetch"]["observations"]
    response = client.post("/cds-services/knee-imaging-select", json=full_body)
    assert response.status_code == 412
    assert "observations" in response.get_json()["issue"][0]["diagnostics"]


def test_missing_optional_data_without_a_fhir_server_goes_on(client, full_body):
    full_body.pop("fhirServer")
    full_body.pop("fhirAuthorization")
    del full_body["prefetch"]["recent-encounters"]
    response = client.post("/cds-services/knee-imaging-select", json=full_body)
    assert response.status_code == 200
    assert response.get_json()["extension"]["org.example.kneecds.data-quality"]["missing"][0]["key"] == "recent-encounters"


def test_a_fhir_server_error_on_required_data_is_412(settings, full_body):
    full_body["prefetch"].pop("conditions")
    response = _call(settings, full_body, lambda request: httpx.Response(503))
    assert response.status_code == 412
    assert "HTTP 503" in response.get_json()["issue"][0]["diagnostics"]


def test_a_fhir_timeout_on_required_data_is_412(settings, full_body):
    def timeout(request):
        raise httpx.ReadTimeout("slow", request=request)

    full_body["prefetch"].pop("observations")
    response = _call(settings, full_body, timeout)
    assert response.status_code == 412
    assert "did not answer within the deadline" in response.get_json()["issue"][0]["diagnostics"]


def test_a_prefetched_bundle_with_more_pages_is_completed_from_the_server(settings, full_body):
    conditions = full_body["prefetch"]["conditions"]
    second_page = {"resourceType": "Bundle", "type": "searchset", "entry": conditions["entry"]}
    conditions["entry"] = []
    conditions["link"] = [{"relation": "next", "url": f"{FHIR}/Condition?patient=pkp-chronic-01&_page=2"}]
    calls = []

    def pages(request):
        calls.append(str(request.url))
        return httpx.Response(200, json=second_page)

    response = _call(settings, full_body, pages)
    assert response.status_code == 200
    assert calls == [f"{FHIR}/Condition?patient=pkp-chronic-01&_page=2"]
    assert [c["source"]["topic"]["code"] for c in response.get_json()["cards"]] == ["imaging-appropriateness"]


def test_a_next_link_to_another_host_is_not_followed_with_the_token(settings, full_body):
    full_body["prefetch"]["conditions"]["link"] = [{"relation": "next", "url": "https://evil.example.com/Condition"}]
    calls = []
    response = _call(settings, full_body, lambda r: calls.append(r) or httpx.Response(200, json={}))
    assert calls == []
    assert response.status_code == 412


def test_prefetched_patient_of_another_patient_is_rejected(client, full_body):
    full_body["prefetch"]["patient"]["id"] = "someone-else"
    response = client.post("/cds-services/knee-imaging-select", json=full_body)
    assert response.status_code == 400
    assert response.get_json()["issue"][0]["expression"] == ["prefetch.patient.id"]


def test_a_patient_the_fhir_server_does_not_know_is_412_not_no_cards(settings, full_body):
    # A wrong server or tenant must not look like "nothing to say".
    full_body["prefetch"].pop("patient")
    response = _call(settings, full_body, lambda request: httpx.Response(404))
    assert response.status_code == 412
    assert response.get_json()["issue"][0]["expression"] == ["prefetch.patient"]


def _observation(oid: str, day: str) -> dict:
    return {"resourceType": "Observation", "id": oid, "status": "final", "subject": {"reference": "Patient/pkp-chronic-01"},
            "code": {"text": "Heart rate"}, "effectiveDateTime": day, "valueQuantity": {"value": 70, "unit": "/min"}}


def _paged_recent_observations(full_body: dict, last_day_on_first_page: str) -> None:
    """Prefetch `exam-findings` as a first page (newest first) with a next link."""
    full_body["prefetch"]["exam-findings"] = {
        "resourceType": "Bundle", "type": "searchset",
        "entry": [{"resource": _observation("o-1", "2026-11-19")}, {"resource": _observation("o-2", last_day_on_first_page)}],
        "link": [{"relation": "next", "url": f"{FHIR}/Observation?patient=pkp-chronic-01&_sort=-date&_page=2"}]}


@pytest.mark.parametrize(("last_day", "pages_read"), [
    ("2026-10-23", 1),  # 28 days before 2026-11-20: still inside the window, so the next page is read
    ("2026-10-22", 0),  # 29 days: the first page already reaches past the window
])
def test_a_windowed_key_is_read_until_its_window_is_covered(settings, full_body, last_day, pages_read):
    _paged_recent_observations(full_body, last_day)
    calls: list[str] = []

    def second_page(request):
        calls.append(str(request.url))
        return httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset",
                                         "entry": [{"resource": _observation("o-3", "2026-09-01")}]})

    response = _call(settings, full_body, second_page)
    assert response.status_code == 200
    assert len(calls) == pages_read


def test_a_windowed_key_whose_window_cannot_be_completed_is_412(settings, full_body):
    # The unread pages could hold an exam finding of the last 14 days: a partial list must not pass as complete.
    _paged_recent_observations(full_body, "2026-11-18")
    response = _call(settings, full_body, lambda request: httpx.Response(503))
    assert response.status_code == 412
    assert response.get_json()["issue"][0]["expression"] == ["prefetch.exam-findings"]


def test_a_newest_only_key_never_reads_a_second_page(settings, full_body):
    full_body["prefetch"]["latest-bmi"] = {
        "resourceType": "Bundle", "type": "searchset", "entry": [],
        "link": [{"relation": "next", "url": f"{FHIR}/Observation?patient=pkp-chronic-01&code=39156-5&_page=2"}]}
    calls: list[httpx.Request] = []
    response = _call(settings, full_body, lambda request: calls.append(request) or httpx.Response(503))
    assert response.status_code == 200
    assert calls == []


def test_the_fallback_bounds_windowed_searches_by_date(settings, full_body):
    fhir = RecordingFhir(copy.deepcopy(full_body))
    full_body.pop("prefetch")
    assert _call(settings, full_body, fhir).status_code == 200
    by_key = {(r.url.path.rsplit("/", 1)[1], r.url.params.get("_sort")): r.url.params for r in fhir.calls
              if "code" not in r.url.params}  # the latest-value keys are sorted too, by code
    # today 2026-11-20: exam findings of the last 28 days, surgery and chemotherapy of the last 183
    assert by_key[("Observation", "-date")].get_list("date") == ["ge2026-10-23"]
    assert by_key[("Procedure", "-date")].get_list("date") == ["ge2026-05-21"]
    assert by_key[("MedicationRequest", "-authoredon")].get_list("authoredon") == ["ge2026-05-21"]
    assert by_key[("Encounter", "-date")].get_list("date") == ["ge2026-05-21"]
