"""A small exception tree; one handler renders each into a FHIR OperationOutcome.

Every 4xx/5xx body of the service has this one shape, so EHR integrators can parse errors the
same way they parse FHIR server errors.
"""

from __future__ import annotations

from typing import Any


class CdsError(Exception):
    """Base class: carries the HTTP status and the OperationOutcome issue code."""

    status = 500
    issue_code = "exception"

    def __init__(self, diagnostics: str, expression: str | None = None):
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        self.expression = expression

    def to_operation_outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issue_code, self.diagnostics, self.expression)


class BadRequest(CdsError):
    """The request body is not JSON, or breaks the CDS Hooks request schema."""

    status = 400
    issue_code = "invalid"


class Unauthorized(CdsError):
    status = 401
    issue_code = "login"


class NotFound(CdsError):
    status = 404
    issue_code = "not-found"


class MethodNotAllowed(CdsError):
    status = 405
    issue_code = "not-supported"


class UnsupportedMediaType(CdsError):
    status = 415
    issue_code = "not-supported"


class PreconditionFailed(CdsError):
    """Required FHIR data could not be had from prefetch or the FHIR server (CDS Hooks: 412)."""

    status = 412
    issue_code = "incomplete"


class FhirFetchError(Exception):
    """A FHIR server fetch failed (timeout, HTTP error, bad payload); never reaches the client as is."""


def operation_outcome(code: str, diagnostics: str, expression: str | None = None) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": "error", "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}
