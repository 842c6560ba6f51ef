"""knee-cds: a CDS Hooks 2.0 service for pain behind the knee."""

from __future__ import annotations

import atexit
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING

from .settings import Settings

if TYPE_CHECKING:  # imported by create_app: a CLI command imports only the modules it uses (knee-cds --help: ~0.1 s)
    import httpx
    from flask import Flask

    from .auth import JwtVerifier
    from .card_log import CardLog
    from .cards import CardBuilder
    from .fhir_client import FhirClient
    from .knowledge import Knowledge
    from .metrics import Metrics
    from .registry import ServiceDefinition
    from .rules import RuleBook
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
    rule_book: RuleBook
    verifier: JwtVerifier | None
    zone: tzinfo
    services: tuple[ServiceDefinition, ...]
    metrics: Metrics
    card_log: CardLog

    def close(self) -> None:
        """Close this process's pools: FHIR server, JWK Sets, database (at process exit, or a test's teardown),
        once the card log has written what it still holds."""
        self.fhir_client.close()
        if self.verifier is not None:
            self.verifier.close()
        self.card_log.close()
        self.store.dispose()


def create_app(
    settings: Settings | None = None,
    *,
    fhir_transport: httpx.BaseTransport | None = None,
    clock: Callable[[], datetime] | None = None,
) -> Flask:
    """The WSGI app. ``fhir_transport`` carries every outbound HTTP call (FHIR server and JWK Sets) and
    ``clock`` is the one clock (rules' "today", JWT times, feedback stamps); tests inject both."""
    from flask import Flask

    from . import fhir_models, logs
    from .auth import JwtVerifier, load_issuers, make_jwks_pool
    from .card_log import CardLog
    from .cards import CardBuilder, RandomUuids
    from .errors import ConfigurationError
    from .facts import REQUIRED_VALUE_SETS
    from .fhir_client import FhirClient
    from .knowledge import load_knowledge
    from .metrics import Metrics
    from .netguard import HostPolicy
    from .registry import resolve_services
    from .rules import RuleBook
    from .store import FeedbackStore
    from .validation import Validators

    settings = settings or Settings.from_env()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logs.keep_patient_data_out()
    app = Flask(__name__)
    app.json.sort_keys = False
    app.config["MAX_CONTENT_LENGTH"] = 10 * 1024 * 1024

    fixed = settings.fixed_now()
    if clock is None:
        clock = (lambda: fixed) if fixed else (lambda: datetime.now(UTC))
    knowledge = load_knowledge(settings.cards_dir, REQUIRED_VALUE_SETS)
    fhir_models.fast_validators()  # compiled here, before gunicorn forks the workers (preloaded), not on a first call
    if settings.retention_days < 1:
        raise ConfigurationError(f"KNEE_CDS_RETENTION_DAYS must be 1 or more, not {settings.retention_days}")
    retention = timedelta(days=settings.retention_days)
    store = FeedbackStore(settings.database_url)
    # Once, before workers serve (in gunicorn's master when preloaded): the tables, and rows past retention.
    store.create_tables(expire_before=clock() - retention)
    metrics = Metrics(settings.metrics, override_codes={
        reason["code"] for reasons in knowledge.cards["override_reason_sets"].values() for reason in reasons})
    verifier = None
    if settings.auth == "jwt":
        if not settings.trusted_issuers:
            raise ConfigurationError("KNEE_CDS_AUTH=jwt needs KNEE_CDS_TRUSTED_ISSUERS (the trusted-issuer file)")
        if not settings.public_base_url:
            # aud must name this service as its clients call it; Host and X-Forwarded-* are the client's to set.
            raise ConfigurationError("KNEE_CDS_AUTH=jwt needs KNEE_CDS_PUBLIC_BASE_URL (the URL clients call, for the JWT aud)")
        verifier = JwtVerifier(load_issuers(settings.trusted_issuers), clock=clock,
                               jwks_pool=make_jwks_pool(fhir_transport), claim=store.claim_jti,
                               on_refusal=metrics.jwt_refused)
    elif settings.auth != "off":
        raise ConfigurationError(f"KNEE_CDS_AUTH must be 'jwt' or 'off', not {settings.auth!r}")
    else:
        logging.getLogger(__name__).warning("client authentication is off (KNEE_CDS_AUTH=off): development only")
    runtime = app.extensions["knee_cds"] = Runtime(
        settings=settings,
        knowledge=knowledge,
        validators=Validators.load(),
        fhir_client=FhirClient(
            fhir_transport,
            max_pages=settings.fhir_max_pages,
            max_bytes=settings.fhir_max_bytes,
            policy=HostPolicy.from_settings(settings.fhir_allow_http, settings.fhir_allowed_hosts),
        ),
        store=store,
        clock=clock,
        card_builder=CardBuilder(knowledge, new_uuid=RandomUuids()),
        rule_book=RuleBook.from_cards(knowledge.cards),
        verifier=verifier,
        zone=settings.zone(),
        services=resolve_services(knowledge.terminology),
        metrics=metrics,
        card_log=CardLog(store, metrics, clock, retention),
    )
    _close_at_exit(runtime)

    from . import discovery, feedback, hooks, http, openapi, ops, rule_pages

    http.init_app(app)
    app.register_blueprint(discovery.bp)
    app.register_blueprint(hooks.bp)
    app.register_blueprint(feedback.bp)
    app.register_blueprint(rule_pages.bp)
    app.register_blueprint(openapi.bp)  # after the Runtime is in app.extensions: the document is built here
    app.register_blueprint(ops.health_bp)
    if settings.metrics:
        app.register_blueprint(ops.metrics_bp)
    if settings.analytics and (settings.auth != "jwt" or settings.analytics_reader_pairs()):
        app.register_blueprint(ops.analytics_bp)
    elif settings.analytics:
        logging.getLogger(__name__).warning(
            "KNEE_CDS_ANALYTICS is on but /analytics is not served: with KNEE_CDS_AUTH=jwt it needs "
            "KNEE_CDS_ANALYTICS_READERS")
    if settings.preview:  # a development tool: without the setting every /preview URL is a 404
        from . import preview

        app.register_blueprint(preview.bp)
    return app


def _close_at_exit(runtime: Runtime) -> None:
    # Each gunicorn worker inherits this hook through the fork and closes its own pools when it exits;
    # the weak reference lets an app that is dropped (tests make many) be collected.
    ref = weakref.ref(runtime)

    def close() -> None:
        alive = ref()
        if alive is not None:
            alive.close()

    atexit.register(close)
