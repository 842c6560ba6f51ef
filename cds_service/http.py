"""HTTP edges shared by the blueprints: JSON bodies, client JWTs, CORS, page headers, and the one error handler."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge

from .errors import BadRequest, JsonTooDeep, PayloadTooLarge, RequestRefused, UnsupportedMediaType, operation_outcome
from .validation import MAX_JSON_DEPTH, load_json

if TYPE_CHECKING:
    from .auth import JwtVerifier

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = "5"  # for a 503: the database is down or slow, so a resend soon may succeed
CORS_PATHS = ("/cds-services", "/openapi.json", "/rules/")
_ISSUE_CODES = {404: "not-found", 405: "not-supported", 413: "too-long", 415: "not-supported"}


def json_body() -> Any:
    mimetype = request.mimetype or ""
    if mimetype not in ("application/json", "application/fhir+json"):
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, not '{mimetype[:64] or 'none'}'"
        )
    limit = request.max_content_length
    length = request.content_length
    if length is not None:
        if limit is not None and length > limit:
            raise RequestEntityTooLarge()  # as Flask's own request stream would
        # Read straight from the server's stream: werkzeug's limiting stream would copy the body in 64 KB steps, ~5 %
        # of the CPU of a 100-resource call under gunicorn.
        raw = request.environ["wsgi.input"].read(length)
        if len(raw) < length:  # the client stopped sending: what arrived may be a JSON prefix, not the request
            raise BadRequest(f"Body ended after {len(raw)} of its {length} bytes (Content-Length)", expression="$")
    else:
        raw = request.get_data(cache=False)
        # A chunked body (no Content-Length) is cut at the limit without an error: one more byte means it was larger.
        if limit is not None and len(raw) >= limit and request.environ["wsgi.input"].read(1):
            raise PayloadTooLarge(f"Body is larger than the {limit // (1024 * 1024)} MB limit", expression="$")
    try:
        return load_json(raw)
    except JsonTooDeep:
        raise BadRequest(f"Body nests deeper than {MAX_JSON_DEPTH} levels", expression="$") from None
    except ValueError as exc:  # UnicodeDecodeError included
        raise BadRequest(f"Body is not valid JSON: {str(exc)[:120]}", expression="$") from None


def _error_response(status: int, outcome: dict[str, Any]) -> Response:
    response = jsonify(outcome)
    response.status_code = status
    response.mimetype = "application/fhir+json"
    return response


def render_error(exc: Exception) -> Response:
    """The one error handler: every 4xx/5xx body is an OperationOutcome (errors.py draws the tree)."""
    if isinstance(exc, RequestRefused):
        response = _error_response(exc.status, exc.to_operation_outcome())
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="cds-services"'
        elif exc.status == 503:
            response.headers["Retry-After"] = RETRY_AFTER_SECONDS
        return response
    if isinstance(exc, HTTPException):  # Flask's own: unknown route, wrong method, body too large
        status = exc.code or 500
        response = _error_response(status, operation_outcome(_ISSUE_CODES.get(status, "processing"), exc.name))
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response
    # Internal errors (a FHIR fetch failure that escaped, a bug): the trace for operators, no internals for the client.
    log.error("unhandled error", exc_info=exc)
    return _error_response(500, operation_outcome("exception", "Internal error; see the service log"))


def verified_client(verifier: JwtVerifier, public_base_url: str | None) -> dict[str, Any]:
    """The claims of this request's client JWT (KNEE_CDS_AUTH=jwt); its aud must be this URL as clients call it."""
    # Never the request's Host or X-Forwarded-*: create_app refuses KNEE_CDS_AUTH=jwt without the setting.
    base = (public_base_url or "").rstrip("/")
    return verifier.verify(request.headers.get("Authorization"), audience=base + request.path)


def protect_page(response: Response, content_security_policy: str) -> Response:
    """The headers of an HTML page of the service: its Content-Security-Policy, no type sniffing, no referrer."""
    response.headers["Content-Security-Policy"] = content_security_policy
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def init_app(app: Flask) -> None:
    runtime = app.extensions["knee_cds"]
    allow_origin = runtime.settings.cors_allow_origin

    @app.before_request
    def authenticate() -> None:
        # Preflights carry no credentials by design; everything under /cds-services needs the JWT.
        if runtime.verifier is None or request.method == "OPTIONS" or not request.path.startswith("/cds-services"):
            return
        verified_client(runtime.verifier, runtime.settings.public_base_url)

    app.register_error_handler(Exception, render_error)

    @app.after_request
    def add_cors(response: Response) -> Response:
        # For what a browser-based EHR or tool reads across origins (the CDS API, its OpenAPI, the rule pages); never
        # for /analytics, /metrics or the health checks, which a page of any site could otherwise read.
        if not request.path.startswith(CORS_PATHS):
            return response
        response.headers["Access-Control-Allow-Origin"] = allow_origin
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Access-Control-Max-Age"] = "86400"
        if allow_origin != "*":
            response.headers.add("Vary", "Origin")
        return response
