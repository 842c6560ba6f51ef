"""GET /openapi.json: a valid OpenAPI 3.1 document whose request schemas are the ones the service validates with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from .conftest import EXAMPLES, load_json

REQUESTS = sorted((EXAMPLES / "requests").glob("*.json"))
DOCUMENT_URI = "urn:knee-cds:openapi"


@pytest.fixture
def document(app) -> dict[str, Any]:
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def body_validator(document: dict[str, Any], path: str, media: str = "application/json") -> Draft202012Validator:
    """A validator for the request body of POST ``path``, resolving its $refs inside the served document."""
    assert "requestBody" in document["paths"][path]["post"], f"{path} documents no request body"
    pointer = "/".join(part.replace("~", "~0").replace("/", "~1")
                       for part in ("paths", path, "post", "requestBody", "content", media, "schema"))
    registry = Registry().with_resource(DOCUMENT_URI, Resource(contents=document, specification=DRAFT202012))
    return Draft202012Validator({"$ref": f"{DOCUMENT_URI}#/{pointer}"}, registry=registry,
                                format_checker=Draft202012Validator.FORMAT_CHECKER)


def test_the_document_is_valid_openapi_3_1(document):
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema
    assert document["openapi"].startswith("3.1")


def test_every_discovered_service_has_a_hook_and_a_feedback_operation(client, document):
    ids = [s["id"] for s in client.get("/cds-services").get_json()["services"]]
    assert ids == ["posterior-knee-pain", "knee-imaging-select", "knee-imaging-sign"]
    for service_id in ids:
        assert f"/cds-services/{service_id}" in document["paths"]
        assert f"/cds-services/{service_id}/feedback" in document["paths"]
    assert "get" in document["paths"]["/cds-services"]


def test_errors_are_documented_as_operation_outcomes(document):
    hook_call = document["paths"]["/cds-services/posterior-knee-pain"]["post"]["responses"]
    assert set(hook_call) == {"200", "400", "401", "412", "413", "415", "503"}
    assert set(document["paths"]["/cds-services/{id}"]["post"]["responses"]) == {"401", "404"}
    not_found = document["components"]["responses"]["Error404"]["content"]["application/fhir+json"]["schema"]
    assert not_found == {"$ref": "#/components/schemas/OperationOutcome"}


@pytest.mark.parametrize("sample", REQUESTS, ids=lambda p: p.name)
def test_every_sample_request_is_valid_under_its_operation(document, client, sample: Path):
    body = load_json(sample)
    service = {"patient-view": "posterior-knee-pain", "order-select": "knee-imaging-select",
               "order-sign": "knee-imaging-sign"}[sample.name.split(".")[-2]]
    errors = [e.message for e in body_validator(document, f"/cds-services/{service}").iter_errors(body)]
    assert errors == []
    assert client.post(f"/cds-services/{service}", json=body).status_code == 200


def test_a_request_for_another_hook_is_refused_by_the_document_and_the_service(document, client):
    body = load_json(EXAMPLES / "requests" / "dvt-urgent-hot-calf.patient-view.json")
    assert not body_validator(document, "/cds-services/knee-imaging-sign").is_valid(body)
    assert client.post("/cds-services/knee-imaging-sign", json=body).status_code == 400


def test_a_context_without_patient_is_refused_by_the_document_and_the_service(document, client):
    body = load_json(EXAMPLES / "requests" / "dvt-urgent-hot-calf.patient-view.json")
    del body["context"]["patientId"]
    assert not body_validator(document, "/cds-services/posterior-knee-pain").is_valid(body)
    assert client.post("/cds-services/posterior-knee-pain", json=body).status_code == 400


def test_feedback_is_checked_the_same_way(document, client):
    validator = body_validator(document, "/cds-services/posterior-knee-pain/feedback", "application/fhir+json")
    overridden = {"feedback": [{"card": "8d0a5c4e-2f5b-4c8e-9a57-1b8e6f5d2c11", "outcome": "overridden",
                                "outcomeTimestamp": "2026-11-20T10:15:00Z"}]}
    accepted_without_suggestion = {"feedback": [{**overridden["feedback"][0], "outcome": "accepted"}]}
    assert validator.is_valid(overridden)
    assert client.post("/cds-services/posterior-knee-pain/feedback", json=overridden).status_code == 200
    assert not validator.is_valid(accepted_without_suggestion)
    assert client.post("/cds-services/posterior-knee-pain/feedback", json=accepted_without_suggestion).status_code == 400
