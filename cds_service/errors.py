"""The service's exceptions: one root, and one handler (http.py) that renders the refusals.

The tree (as httpx draws its own)::

    KneeCdsError                  anything the service raises on purpose
    ├── RequestRefused            reaches the client: an HTTP status and an OperationOutcome issue code
    │   ├── BadRequest              400 invalid        not JSON, or breaks the CDS Hooks request schema
    │   ├── Unauthorized            401 login          no client JWT, or one this service does not trust
    │   ├── NotFound                404 not-found      no such CDS service
    │   ├── PreconditionFailed      412 incomplete     required FHIR data cannot be had (CDS Hooks: 412)
    │   ├── PayloadTooLarge         413 too-long       the body is over the size limit (chunked bodies too)
    │   ├── UnsupportedMediaType    415 not-supported  the body is not application/json
    │   └── ServiceUnavailable      503 transient      the database is down or too slow: try again later
    ├── FhirFetchError            a FHIR server read failed; prefetch turns it into a 412 or a data gap
    ├── JsonTooDeep               (validation.py) a JSON text nests deeper than the limit; also a ValueError
    ├── Malformed                 (chart.py) a resource element has the wrong JSON type: the resource is left out
    ├── TextNotRead               (terminology.py) the call's text budget is spent: the resource is left out
    ├── UnexpectedSchema          (fhir_models.py) a model's schema is not the shape compiled: model_validate only
    └── ConfigurationError        settings, trusted issuers or the database are unusable: the service does not start
        └── KnowledgeError          (knowledge.py) card definitions or value sets are missing or break their schema

Only a ``RequestRefused`` is rendered as is. Any other exception that escapes a request, internal ones
included, is logged and answered with a bare 500, so no internal text (URLs, patient ids) reaches the client.
Every 4xx/5xx body has the one OperationOutcome shape, so EHR integrators parse the service's errors the
way they parse their FHIR server's.
"""

from __future__ import annotations

from typing import Any


class KneeCdsError(Exception):
    """Root of every exception the service defines."""


class RequestRefused(KneeCdsError):
    """The request is refused: rendered as an OperationOutcome with this status and issue code."""

    status = 500
    issue_code = "exception"

    def __init__(self, diagnostics: str, expression: str | None = None):
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        self.expression = expression

    def to_operation_outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issue_code, self.diagnostics, self.expression)


class BadRequest(RequestRefused):
    """The request body is not JSON, or breaks the CDS Hooks request schema."""

    status = 400
    issue_code = "invalid"


class Unauthorized(RequestRefused):
    """No client JWT, or one this service does not trust (CDS Hooks "Trusting CDS Clients")."""

    status = 401
    issue_code = "login"


class NotFound(RequestRefused):
    status = 404
    issue_code = "not-found"


class PreconditionFailed(RequestRefused):
    """Required FHIR data could not be had from prefetch or the FHIR server (CDS Hooks: 412)."""

    status = 412
    issue_code = "incomplete"


class PayloadTooLarge(RequestRefused):
    """The body is over the size limit, whether it came with a Content-Length or chunked."""

    status = 413
    issue_code = "too-long"


class UnsupportedMediaType(RequestRefused):
    status = 415
    issue_code = "not-supported"


class ServiceUnavailable(RequestRefused):
    """A dependency the call needs (the database) failed or timed out: the client may retry (sent with Retry-After)."""

    status = 503
    issue_code = "transient"


class FhirFetchError(KneeCdsError):
    """A FHIR server fetch failed (timeout, HTTP error, bad payload); never reaches the client as is."""


class JsonTooDeep(KneeCdsError, ValueError):
    """A JSON text nests deeper than the limit: refused before Python's recursive parser sees it. A ValueError,
    so that callers that already refuse text that is not JSON refuse this too."""


class ConfigurationError(KneeCdsError):
    """A setting, the trusted-issuer file or the database cannot be used: the service must not start."""


def operation_outcome(code: str, diagnostics: str, expression: str | None = None) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": "error", "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}
