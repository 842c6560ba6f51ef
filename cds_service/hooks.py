"""Hook calls: POST /cds-services/{id}. request → schema → data → pipeline → response."""

from __future__ import annotations

import time
from typing import Any

import orjson
from flask import Blueprint, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

from . import logs, prefetch
from .errors import NotFound, RequestRefused
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
    started = time.perf_counter()
    summary: dict[str, Any] = {"status": 500, "topics": [], "read": 0, "left_out": 0, "not_read": 0, "missing": []}
    body: Any = None
    cards: list[dict[str, Any]] = []
    try:
        body = json_body()
        _redact_for_this_request(body)
        check_hook_request(rt.validators, body, service.hook)
        now = rt.clock()
        data = prefetch.gather(service, body, rt.fhir_client, rt.settings.fhir_deadline_seconds, now.date(), rt.zone,
                               metrics=rt.metrics)
        summary.update(read=len(data.resources), missing=[gap.key for gap in data.gaps])
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
            # The rule pages the cards link to: the public base URL when set (behind a proxy), else this request's.
            rules_url=(rt.settings.public_base_url or request.host_url).rstrip("/") + "/rules/",
        )
        cards = decision.cards
        summary.update(status=200, topics=[card["source"]["topic"]["code"] for card in cards],
                       left_out=len(decision.rejected), not_read=decision.not_read)
        # The JSON jsonify writes (keys in order, one line), with UTF-8 for non-ASCII text, in a fifth of the time.
        answer = orjson.dumps(decision.response()) + b"\n"
        rt.card_log.record(service.id, cards, decision.card_rules, now)  # queued: written by the card log's thread
        return Response(answer, mimetype="application/json")
    except RequestRefused as exc:
        summary["status"] = exc.status
        raise
    except HTTPException as exc:  # Flask's own refusal: a Content-Length over the 10 MB limit
        summary["status"] = exc.code or 500
        raise
    finally:
        seconds = time.perf_counter() - started
        rt.metrics.hook_call(service.id, summary["status"], seconds, cards)
        logs.log_hook_call(
            service=service.id, hook=service.hook,
            hook_instance=body.get("hookInstance") if isinstance(body, dict) else None,
            latency_ms=seconds * 1000, **summary,
        )


def _redact_for_this_request(body: Any) -> None:
    # Until the request is torn down, so that the error handler's log line of a failed call is covered too.
    context = body.get("context") if isinstance(body, dict) else None
    authorization = body.get("fhirAuthorization") if isinstance(body, dict) else None
    g.knee_cds_redacted = logs.start_redacting(
        context.get("patientId") if isinstance(context, dict) else None,
        authorization.get("access_token") if isinstance(authorization, dict) else None,
    )


@bp.teardown_request
def _stop_redacting(_error: BaseException | None) -> None:
    secrets = g.pop("knee_cds_redacted", None)
    if secrets is not None:
        logs.stop_redacting(secrets)
