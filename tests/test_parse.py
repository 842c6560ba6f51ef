"""A resource a rule reads that fails FHIR validation is left out, reported by reference, and flagged on
the cards it could have changed; it never fails the call. A resource no rule reads is not validated."""

from __future__ import annotations

from cds_service.parse import parse_record

from .conftest import example_request


def test_an_invalid_resource_is_left_out_and_listed_without_its_content(client):
    body = example_request("chronic-posterior-knee-pain.json", "order-select")
    bad = {"resourceType": "Procedure", "id": "xray-bad", "status": "completed", "subject": {"reference": "Patient/x"},
           "performedDateTime": "2026-10-41T10:00:00Z",  # no such day
           "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "73562"}], "text": "secret note 42"}}
    body["prefetch"]["procedures"]["entry"].append({"resource": bad})
    response = client.post("/cds-services/knee-imaging-select", json=body)
    assert response.status_code == 200
    data = response.get_json()
    left_out = data["extension"]["org.example.kneecds.data-quality"]["leftOut"]
    assert left_out == [{"reference": "Procedure/xray-bad", "reason": left_out[0]["reason"]}]
    assert "performedDateTime" in left_out[0]["reason"]
    assert "secret note 42" not in response.get_data(as_text=True)
    # The unreadable procedure might have been the X-ray that makes the MRI fine: the card says so.
    card = data["cards"][0]
    assert "**Data left out:** 1 procedure could not be read and was not considered, though it could have changed " \
        "this advice." in card["detail"]  # in words: the reference is in leftOut, not in the prose


def test_an_unknown_element_or_resource_type_does_not_fail_the_call(client):
    body = example_request("chronic-posterior-knee-pain.json", "patient-view")
    conditions = body["prefetch"]["conditions"]["entry"]
    # A misspelt element the rules read (the onset) leaves the resource out; an element no rule reads does not.
    conditions.append({"resource": {"resourceType": "Condition", "id": "weird", "subject": {"reference": "Patient/x"},
                                    "code": {"text": "Right calf pain"}, "onsetDatetime": "2026-11-19"}})
    conditions.append({"resource": {"resourceType": "Condition", "id": "vendor", "subject": {"reference": "Patient/x"},
                                    "code": {"text": "Right calf pain"}, "onsetDateTime": "2026-11-19",
                                    "madeUpElement": 1}})
    conditions.append({"resource": {"resourceType": "Condition", "id": "unrelated", "subject": {"reference": "Patient/x"},
                                    "code": {"text": "Seasonal allergy"}, "madeUpElement": 1}})
    conditions.append({"resource": {"resourceType": "NotAResource", "id": "n"}})
    response = client.post("/cds-services/posterior-knee-pain", json=body)
    assert response.status_code == 200
    quality = response.get_json()["extension"]["org.example.kneecds.data-quality"]
    # The calf pain could change the DVT advice: named. The allergy and the unknown type no rule reads: counted.
    assert [r["reference"] for r in quality["leftOut"]] == ["Condition/weird"]
    assert quality["notRead"] == 2


def test_a_resource_whose_json_is_malformed_where_the_index_reads_is_left_out_and_named(client):
    body = example_request("chronic-posterior-knee-pain.json", "patient-view")
    body["prefetch"]["conditions"]["entry"].append({"resource": {
        "resourceType": "Condition", "id": "bent", "subject": {"reference": "Patient/x"}, "code": {"coding": "M25.561"}}})
    response = client.post("/cds-services/posterior-knee-pain", json=body)
    assert response.status_code == 200
    assert response.get_json()["extension"]["org.example.kneecds.data-quality"]["leftOut"] == [
        {"reference": "Condition/bent", "reason": "code.coding: expected an array"}]


def test_vendor_meta_elements_are_dropped_before_validation():
    record = parse_record([{"resourceType": "Patient", "id": "p", "meta": {"project": "x", "versionId": "1"}}])
    assert record.rejected == () and record.patient.meta.versionId == "1"


def test_the_same_resource_twice_is_read_once():
    patient = {"resourceType": "Patient", "id": "p"}
    assert len(parse_record([patient, patient]).of("Patient")) == 1
