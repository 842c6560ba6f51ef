"""A resource that fails FHIR validation is left out, reported by reference, and flagged on the cards
it could have changed; it never fails the call."""

from __future__ import annotations

from cds_service.parse import parse_record

from .conftest import example_request


def test_an_invalid_resource_is_left_out_and_listed_without_its_content(client):
    body = example_request("chronic-posterior-knee-pain.json", "order-select")
    bad = {"resourceType": "Procedure", "id": "xray-bad", "status": "completed", "subject": {"reference": "Patient/x"},
           "performedDateTime": "2026-10-01T10:00:00", "code": {"text": "secret note 42"}}  # dateTime without zone
    body["prefetch"]["procedures"]["entry"].append({"resource": bad})
    response = client.post("/cds-services/knee-imaging-select", json=body)
    assert response.status_code == 200
    data = response.get_json()
    left_out = data["extension"]["pkp-data-quality"]["leftOut"]
    assert left_out == [{"reference": "Procedure/xray-bad", "reason": left_out[0]["reason"]}]
    assert "performedDateTime" in left_out[0]["reason"]
    assert "secret note 42" not in response.get_data(as_text=True)
    # The unreadable procedure might have been the X-ray that makes the MRI fine: the card says so.
    card = data["cards"][0]
    assert "Procedure/xray-bad" in card["detail"] and "could have changed" in card["detail"]


def test_an_unknown_element_or_resource_type_does_not_fail_the_call(client):
    body = example_request("chronic-posterior-knee-pain.json", "patient-view")
    conditions = body["prefetch"]["conditions"]["entry"]
    conditions.append({"resource": {"resourceType": "Condition", "id": "weird", "subject": {"reference": "Patient/x"},
                                    "madeUpElement": 1}})
    conditions.append({"resource": {"resourceType": "NotAResource", "id": "n"}})
    response = client.post("/cds-services/posterior-knee-pain", json=body)
    assert response.status_code == 200
    assert [r["reference"] for r in response.get_json()["extension"]["pkp-data-quality"]["leftOut"]] == [
        "Condition/weird"]


def test_vendor_meta_elements_are_dropped_before_validation():
    record = parse_record([{"resourceType": "Patient", "id": "p", "meta": {"project": "x", "versionId": "1"}}])
    assert record.rejected == () and record.patient.meta.versionId == "1"


def test_the_same_resource_twice_is_read_once():
    patient = {"resourceType": "Patient", "id": "p"}
    assert len(parse_record([patient, patient]).of("Patient")) == 1
