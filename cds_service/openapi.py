"""GET /openapi.json: the service's API as an OpenAPI 3.1 document, built once at start-up from the JSON Schemas
the requests are validated with (cds_service/schemas) and from the resolved service registry, so the document and
the validation cannot disagree."""

from __future__ import annotations

import json
import re
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from flask import Blueprint, current_app, jsonify
from flask.blueprints import BlueprintSetupState

from .registry import ServiceDefinition
from .validation import HOOKS, load_schema

bp = Blueprint("openapi", __name__)

_EXTENSION_KEY = "knee_cds.openapi"
_LOCAL_REF = re.compile(r"^#/\$defs/(?P<name>[A-Za-z0-9_.\-]+)$")

# The statuses the one error handler (http.py) answers with an OperationOutcome, and when.
_ERRORS = {
    "400": "Not JSON, or the body breaks the request schema (the issue's expression names the path)",
    "401": "No client JWT, or one this service does not accept (only with KNEE_CDS_AUTH=jwt)",
    "404": "No CDS service with this id",
    "412": "Required FHIR data could be had neither from prefetch nor from fhirServer",
    "413": "The body is over the 10 MB limit",
    "415": "The body is not application/json (or application/fhir+json)",
    "503": "The database is down or too slow; retry after the Retry-After seconds",
}
_JSON_TYPES = ("application/json", "application/fhir+json")  # the two the service accepts (http.json_body)


def _component(name: str, schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, str]:
    """Put one schema file under components/schemas as ``name``, its ``$defs`` as ``name.def``; returns its $ref.

    The refs are rewritten to component refs (rather than relying on ``$id`` scoping) so every OpenAPI tool
    resolves them the same way; nothing else in the schema changes."""
    body = {k: v for k, v in schema.items() if k not in ("$schema", "$id", "$defs")}
    defs = schema.get("$defs", {})

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: rewrite(v) for k, v in node.items()}
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#"):
                match = _LOCAL_REF.match(ref)
                if match is None or match["name"] not in defs:
                    raise ValueError(f"{name}: unsupported $ref {ref!r}")
                out["$ref"] = f"#/components/schemas/{name}.{match['name']}"
            return out
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    for def_name, definition in defs.items():
        schemas[f"{name}.{def_name}"] = rewrite(definition)
    schemas[name] = rewrite(body)
    return {"$ref": f"#/components/schemas/{name}"}


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {media: {"schema": schema} for media in _JSON_TYPES}


def _responses(ok: dict[str, Any], *errors: str) -> dict[str, Any]:
    responses = {"200": ok}
    for status in errors:
        responses[status] = {"$ref": f"#/components/responses/Error{status}"}
    return responses


def _discovery_schema(services: tuple[ServiceDefinition, ...]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["services"],
        "properties": {"services": {"type": "array", "items": {
            "type": "object",
            "required": ["hook", "id", "title", "description", "prefetch"],
            "properties": {
                "hook": {"enum": sorted({s.hook for s in services})},
                "id": {"enum": [s.id for s in services]},
                "title": {"type": "string"},
                "description": {"type": "string"},
                "prefetch": {"type": "object", "additionalProperties": {"type": "string"}},
                "usageRequirements": {"type": "string"},
            },
        }}},
    }


def _service_version() -> str:
    try:
        return version("knee-cds")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0"


def build_document(services: tuple[ServiceDefinition, ...], *, jwt: bool) -> dict[str, Any]:
    """The OpenAPI 3.1 document for these (resolved) services; ``jwt``: whether client JWTs are required."""
    schemas: dict[str, Any] = {}
    request = _component("HookRequest", load_schema("request.schema.json"), schemas)
    contexts = {hook: _component(f"Context-{hook}", load_schema(f"context-{hook}.schema.json"), schemas) for hook in HOOKS}
    feedback = _component("Feedback", load_schema("feedback.schema.json"), schemas)
    cards = _component("HookResponse", load_schema("response.schema.json"), schemas)
    schemas["OperationOutcome"] = {
        "type": "object",
        "required": ["resourceType", "issue"],
        "properties": {
            "resourceType": {"const": "OperationOutcome"},
            "issue": {"type": "array", "minItems": 1, "items": {
                "type": "object",
                "required": ["severity", "code", "diagnostics"],
                "properties": {
                    "severity": {"const": "error"},
                    "code": {"type": "string"},
                    "diagnostics": {"type": "string"},
                    "expression": {"type": "array", "items": {"type": "string"}},
                },
            }},
        },
    }
    feedback_stored = {
        "type": "object",
        "required": ["stored", "duplicates"],
        "properties": {"stored": {"type": "integer", "minimum": 0}, "duplicates": {"type": "integer", "minimum": 0}},
    }

    paths: dict[str, Any] = {
        "/cds-services": {"get": {
            "operationId": "discovery",
            "summary": "CDS Hooks discovery: the services, their hooks and prefetch templates",
            "responses": _responses(
                {"description": "The services", "content": {"application/json": {"schema": _discovery_schema(services)}}},
                "401", "503"),
        }},
    }
    for service in services:
        # The request schema, with this service's hook and that hook's context (check_hook_request checks both).
        paths[f"/cds-services/{service.id}"] = {"post": {
            "operationId": f"call-{service.id}",
            "summary": f"{service.title} ({service.hook})",
            "description": f"{service.description}\n\n{service.usage_requirements}",
            "requestBody": {"required": True, "content": _json_content({"allOf": [
                request,
                {"properties": {"hook": {"const": service.hook}, "context": contexts[service.hook]}},
            ]})},
            "responses": _responses(
                {"description": "Cards", "content": {"application/json": {"schema": cards}}},
                "400", "401", "412", "413", "415", "503"),
        }}
        paths[f"/cds-services/{service.id}/feedback"] = {"post": {
            "operationId": f"feedback-{service.id}",
            "summary": f"Feedback on the cards of {service.id}: stored before it is acknowledged",
            "requestBody": {"required": True, "content": _json_content(feedback)},
            "responses": _responses(
                {"description": "Feedback items stored, and resent ones already on record",
                 "content": {"application/json": {"schema": feedback_stored}}},
                "400", "401", "413", "415", "503"),
        }}
    # Any other id: the service is checked before the body is read (hooks.known_service).
    unknown_id = {"name": "id", "in": "path", "required": True,
                  "schema": {"type": "string", "minLength": 1, "not": {"enum": [s.id for s in services]}}}
    for suffix, operation_id in (("", "call-unknown-service"), ("/feedback", "feedback-unknown-service")):
        paths[f"/cds-services/{{id}}{suffix}"] = {"post": {
            "operationId": operation_id,
            "summary": "A service id the registry does not know",
            "parameters": [unknown_id],
            "requestBody": {"content": _json_content({"type": "object"})},
            "responses": {status: {"$ref": f"#/components/responses/Error{status}"} for status in ("401", "404")},
        }}

    # Public rule explanations (rule_pages.py): no client JWT, no patient data; HTML unless JSON is asked for.
    rule_page = {"type": "object", "required": ["id", "checks"], "properties": {
        "id": {"type": "string"}, "checks": {"type": "array", "items": {"type": "string"}},
        "thresholds": {"type": "array", "items": {"type": "object", "properties": {
            "what": {"type": "string"}, "value": {"type": "string"}}}},
        "advice": {"type": "array", "items": {"type": "string"}},
        "sources": {"type": "array", "items": {"type": "object", "properties": {
            "label": {"type": "string"}, "url": {"type": "string"}}}}}}
    paths["/rules/{ruleId}"] = {"get": {
        "operationId": "rule-page",
        "summary": "What a rule checks, its thresholds and its sources (cards link here)",
        "security": [],
        "parameters": [{"name": "ruleId", "in": "path", "required": True, "schema": {"type": "string"},
                        "example": "D-01"}],
        "responses": {
            "200": {"description": "The rule page", "content": {"text/html": {"schema": {"type": "string"}},
                                                                  "application/json": {"schema": rule_page}}},
            "404": {"$ref": "#/components/responses/Error404"}},
    }}

    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "knee-cds",
            "version": _service_version(),
            "summary": "CDS Hooks 2.0 service for pain behind the knee",
            "description": "Every 4xx/5xx body from the service is a FHIR OperationOutcome.",
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {
                f"Error{status}": {"description": text, "content": {
                    "application/fhir+json": {"schema": {"$ref": "#/components/schemas/OperationOutcome"}}}}
                for status, text in _ERRORS.items()
            },
            "securitySchemes": {"cdsHooksJwt": {
                "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "CDS Hooks 2.0 'Trusting CDS Clients': a JWT signed by a trusted issuer, aud = the called URL",
            }},
        },
    }
    if jwt:
        document["security"] = [{"cdsHooksJwt": []}]
    # A JSON round trip: the document is served as built, and nothing in it is shared with the validators.
    return json.loads(json.dumps(document))


@bp.record_once
def _build_at_start_up(state: BlueprintSetupState) -> None:
    runtime = state.app.extensions["knee_cds"]
    state.app.extensions[_EXTENSION_KEY] = build_document(runtime.services, jwt=runtime.verifier is not None)


@bp.get("/openapi.json")
def openapi_document():
    return jsonify(current_app.extensions[_EXTENSION_KEY])
