"""Operations endpoints: GET /healthz, /readyz and /metrics for the monitoring network, GET /analytics for the
clinical safety officer.

/healthz, /readyz and /metrics need no client JWT (http.py checks it under /cds-services only) and carry no patient
data; the README says to expose them to the monitoring network only. /metrics is served unless KNEE_CDS_METRICS is
false. /analytics is served only with KNEE_CDS_ANALYTICS, and under KNEE_CDS_AUTH=jwt only when
KNEE_CDS_ANALYTICS_READERS names who may read it: then each request needs a verified client JWT (aud: the page's URL
under KNEE_CDS_PUBLIC_BASE_URL) from a named reader. Without a token it is a 401, as for /cds-services; a verified
token from anyone else gets the 404 of a URL the service does not have, so that a CDS client learns nothing of it.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, jsonify
from werkzeug.exceptions import NotFound as NoSuchPage

from . import analytics
from .errors import ServiceUnavailable
from .http import protect_page, verified_client

log = logging.getLogger(__name__)

# What "the database answers" means to a load balancer: within a second (PostgreSQL's own connect timeout is 2 s).
READINESS_SECONDS = 1.0
# The analytics page: no script, no style, no image, nothing loaded from anywhere (its charts are inline SVG).
ANALYTICS_CSP = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

health_bp = Blueprint("health", __name__)
metrics_bp = Blueprint("metrics", __name__)
analytics_bp = Blueprint("analytics", __name__)


@health_bp.get("/healthz")
def healthz() -> Response:
    """The process answers: nothing else is touched (a database outage must not make the orchestrator restart it)."""
    return jsonify({"status": "alive"})


@health_bp.get("/readyz")
def readyz() -> Response:
    """Ready for hook calls and feedback: card definitions loaded, and the database answers SELECT 1 within a second."""
    rt = current_app.extensions["knee_cds"]
    if not rt.knowledge.cards or not rt.services:
        raise ServiceUnavailable("The card definitions are not loaded")
    if not rt.store.ping(READINESS_SECONDS):
        raise ServiceUnavailable(f"The database does not answer within {READINESS_SECONDS:g} s")
    return jsonify({"status": "ready"})


@metrics_bp.get("/metrics")
def metrics() -> Response:
    body, content_type = current_app.extensions["knee_cds"].metrics.exposition()
    return Response(body, content_type=content_type)


@analytics_bp.get("/analytics")
def analytics_page() -> Response:
    rt = current_app.extensions["knee_cds"]
    if rt.verifier is not None:
        claims = verified_client(rt.verifier, rt.settings.public_base_url)
        readers = rt.settings.analytics_reader_pairs()
        if (claims["iss"], None) not in readers and (claims["iss"], claims.get("sub")) not in readers:
            log.warning("analytics refused to a verified client that is not a reader (issuer %s)", claims["iss"])
            raise NoSuchPage()  # the very answer to a URL the service does not have
    page = analytics.render_html(analytics.compute(rt.store, rt.clock()))
    response = protect_page(Response(page, mimetype="text/html"), ANALYTICS_CSP)
    response.headers["Cache-Control"] = "no-store"
    return response
