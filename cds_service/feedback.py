"""Feedback: POST /cds-services/{id}/feedback, stored durably before it is acknowledged.

An item naming a card uuid the service never issued is stored all the same: analytics.py finds it by joining
the card log at report time, and counts it as feedback on an unknown card."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from .hooks import known_service
from .http import json_body
from .validation import check_feedback

bp = Blueprint("feedback", __name__)


@bp.post("/cds-services/<service_id>/feedback")
def post_feedback(service_id: str):
    rt = current_app.extensions["knee_cds"]
    known_service(rt.services, service_id)
    body = json_body()
    check_feedback(rt.validators, body)
    # The metrics count new items by their card's topic, looked up in the card log as they are stored.
    counted = rt.metrics.feedback_stored if rt.metrics.enabled else None
    stored, duplicates = rt.store.save(service_id, body["feedback"], rt.clock(), on_stored=counted)
    return jsonify({"stored": stored, "duplicates": duplicates})
