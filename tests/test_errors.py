"""One exception root, and one handler: a refusal reaches the client as an OperationOutcome with its
status and issue code; anything else (internal errors included) is a bare 500 that tells nothing."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import cds_service
from cds_service import create_app
from cds_service.errors import (
    BadRequest,
    FhirFetchError,
    KneeCdsError,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    RequestRefused,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedMediaType,
)

# HTTP status and FHIR IssueType code each refusal must reach the client with (CDS Hooks 2.0; FHIR R4 IssueType).
REFUSALS = {
    BadRequest: (400, "invalid"),
    PayloadTooLarge: (413, "too-long"),
    ServiceUnavailable: (503, "transient"),
    Unauthorized: (401, "login"),
    NotFound: (404, "not-found"),
    PreconditionFailed: (412, "incomplete"),
    UnsupportedMediaType: (415, "not-supported"),
}


def test_every_exception_the_service_defines_has_the_one_root():
    outside = []
    for module_info in pkgutil.walk_packages(cds_service.__path__, "cds_service."):
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if (inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module.__name__
                    and not issubclass(value, KneeCdsError)):
                outside.append(f"{module.__name__}.{name}")
    assert outside == []


def test_every_refusal_has_its_row_here():
    assert set(RequestRefused.__subclasses__()) == set(REFUSALS)


def _app_raising(settings, exc: Exception):
    app = create_app(settings)

    @app.get("/raise")
    def raise_it():
        raise exc

    return app


@pytest.mark.parametrize("refusal", list(REFUSALS), ids=[r.__name__ for r in REFUSALS])
def test_a_refusal_is_an_operation_outcome_with_its_status_and_issue_code(settings, refusal):
    status, code = REFUSALS[refusal]
    app = _app_raising(settings, refusal("why it was refused", expression="context.patientId"))
    response = app.test_client().get("/raise")
    assert response.status_code == status
    assert response.mimetype == "application/fhir+json"
    assert response.get_json() == {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": code, "diagnostics": "why it was refused", "expression": ["context.patientId"]}]}
    assert ("WWW-Authenticate" in response.headers) == (status == 401)


def test_an_internal_error_that_escapes_is_a_500_that_tells_nothing(settings):
    leak = "HTTP 500 from GET https://ehr.example.org/fhir/Patient/secret-patient-id"
    response = _app_raising(settings, FhirFetchError(leak)).test_client().get("/raise")
    assert response.status_code == 500
    assert response.get_json()["issue"][0]["code"] == "exception"
    assert "secret-patient-id" not in response.get_data(as_text=True)


def test_a_wrong_method_is_an_operation_outcome_naming_the_allowed_method(client):
    response = client.get("/cds-services/posterior-knee-pain")
    assert response.status_code == 405
    assert response.get_json()["issue"][0]["code"] == "not-supported"
    assert "POST" in response.headers["Allow"]
