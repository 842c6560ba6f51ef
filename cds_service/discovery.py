"""Discovery: GET /cds-services, generated from the service registry."""

from __future__ import annotations

from flask import Blueprint, jsonify

from .registry import SERVICES

bp = Blueprint("discovery", __name__)


@bp.get("/cds-services")
def discover():
    return jsonify({"services": [s.discovery_entry() for s in SERVICES]})
