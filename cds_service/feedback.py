"""Feedback: POST /cds-services/{id}/feedback, stored durably before it is acknowledged."""

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
    stored, duplicates = rt.store.save(service_id, body["feedback"], rt.clock())
    return jsonify({"stored": stored, "duplicates": duplicates})
