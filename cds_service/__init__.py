"""knee-cds: a CDS Hooks 2.0 service for pain behind the knee."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

import httpx
from flask import Flask

from .auth import JwtVerifier, load_issuers
from .cards import CardBuilder
from .fhir_client import FhirClient
from .knowledge import Knowledge, load_knowledge
from .registry import ServiceDefinition, resolve_services
from .settings import Settings
from .store import FeedbackStore
from .validation import Validators

__all__ = ["create_app", "Settings"]


@dataclass
class Runtime:
    """Everything a request needs, built once per app (the Flask app's ``extensions['knee_cds']``)."""

    settings: Settings
    knowledge: Knowledge
    validators: Validators
    fhir_client: FhirClient
    store: FeedbackStore
    clock: Callable[[], datetime]
    card_builder: CardBuilder
    verifier: JwtVerifier | None
    zone: tzinfo
    services: tuple[ServiceDefinition, ...]


def runtime(app: Flask) -> Runtime:
    return app.extensions["knee_cds"]


def create_app(
    settings: Settings | None = None,
    *,
    fhir_transport: httpx.BaseTransport | None = None,
    clock: Callable[[], datetime] | None = None,
) -> Flask:
    settings = settings or Settings.from_env()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = Flask(__name__)
    app.json.sort_keys = False
    app.config["MAX_CONTENT_LENGTH"] = 10 * 1024 * 1024

    fixed = settings.fixed_now()
    if clock is None:
        clock = (lambda: fixed) if fixed else (lambda: datetime.now(UTC))
    knowledge = load_knowledge(settings.cards_dir)
    store = FeedbackStore(settings.database_url)
    verifier = None
    if settings.auth == "jwt":
        if not settings.trusted_issuers:
            raise RuntimeError("KNEE_CDS_AUTH=jwt needs KNEE_CDS_TRUSTED_ISSUERS (the trusted-issuer file)")
        verifier = JwtVerifier(load_issuers(settings.trusted_issuers), claim=store.claim_jti)
    elif settings.auth != "off":
        raise RuntimeError(f"KNEE_CDS_AUTH must be 'jwt' or 'off', not {settings.auth!r}")
    else:
        logging.getLogger(__name__).warning("client authentication is off (KNEE_CDS_AUTH=off): development only")
    app.extensions["knee_cds"] = Runtime(
        settings=settings,
        knowledge=knowledge,
        validators=Validators.load(),
        fhir_client=FhirClient(fhir_transport, max_pages=settings.fhir_max_pages),
        store=store,
        clock=clock,
        card_builder=CardBuilder(knowledge),
        verifier=verifier,
        zone=settings.zone(),
        services=resolve_services(knowledge.terminology),
    )

    from . import discovery, feedback, hooks, http

    http.init_app(app)
    app.register_blueprint(discovery.bp)
    app.register_blueprint(hooks.bp)
    app.register_blueprint(feedback.bp)
    return app
