"""Hook calls: POST /cds-services/{id}. request → schema → data → pipeline → response."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from . import prefetch
from .errors import NotFound
from .http import json_body
from .pipeline import decide
from .registry import ServiceDefinition, service_by_id
from .validation import check_hook_request

bp = Blueprint("hooks", __name__)


def known_service(services: tuple[ServiceDefinition, ...], service_id: str) -> ServiceDefinition:
    service = service_by_id(services, service_id)
    if service is None:
        raise NotFound(f"No CDS service '{service_id[:64]}'; GET /cds-services lists them", expression="id")
    return service


@bp.post("/cds-services/<service_id>")
def call_service(service_id: str):
    rt = current_app.extensions["knee_cds"]
    service = known_service(rt.services, service_id)
    body = json_body()
    check_hook_request(rt.validators, body, service.hook)
    now = rt.clock()
    data = prefetch.gather(service, body, rt.fhir_client, rt.settings.fhir_deadline_seconds, now.date(), rt.zone)
    decision = decide(
        service.hook,
        body["context"],
        data.resources,
        rt.knowledge,
        now,
        gaps=data.gaps,
        card_builder=rt.card_builder,
        zone=rt.zone,
        rule_book=rt.rule_book,
    )
    return jsonify(decision.response())
