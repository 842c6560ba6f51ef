"""Discovery: GET /cds-services, generated from the service registry."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

bp = Blueprint("discovery", __name__)


@bp.get("/cds-services")
def discover():
    services = current_app.extensions["knee_cds"].services
    return jsonify({"services": [s.discovery_entry() for s in services]})
