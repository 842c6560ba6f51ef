"""Health and readiness (issue 11, item 2): /healthz says the process answers and touches nothing else; /readyz says
the card definitions are loaded and the database answers within a second, turns to a 503 OperationOutcome with
Retry-After while it does not, and back. Neither, nor /metrics, needs a client JWT."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from .conftest import example_request, within
from .ops_kit import ClientKeys, TcpProxy

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)  # what KNEE_CDS_NOW=2026-11-20 means
BASE = "https://cds.example.org"


def _not_ready(response) -> None:
    assert response.status_code == 503
    assert response.mimetype == "application/fhir+json"
    assert response.headers["Retry-After"] == "5"
    issue = response.get_json()["issue"][0]
    assert issue["code"] == "transient" and issue["diagnostics"] == "The database does not answer within 1 s"


def test_healthz_answers_without_touching_a_database_that_never_answers(silent_postgres, make_app):
    app = make_app(silent_postgres)
    started = time.monotonic()
    response = within(5, lambda: app.test_client().get("/healthz"))
    assert response.status_code == 200 and response.get_json() == {"status": "alive"}
    assert time.monotonic() - started < 0.5
    assert app.extensions["knee_cds"].store._engine is None  # no connection was even tried


def test_readyz_is_ready_with_the_cards_loaded_and_the_database_answering(tmp_path, make_app):
    response = make_app(f"sqlite:///{tmp_path / 'f.db'}").test_client().get("/readyz")
    assert response.status_code == 200 and response.get_json() == {"status": "ready"}


def test_readyz_is_a_503_after_one_second_when_the_database_never_answers(silent_postgres, make_app):
    client = make_app(silent_postgres).test_client()
    started = time.monotonic()
    _not_ready(within(5, lambda: client.get("/readyz")))
    assert 0.9 <= time.monotonic() - started < 1.5  # PostgreSQL's own connect timeout would be 2 s
    # The first probe's query still waits on the database: the next is answered at once, with no thread more.
    started = time.monotonic()
    _not_ready(within(5, lambda: client.get("/readyz")))
    assert time.monotonic() - started < 0.5


def test_readiness_flips_to_503_when_postgresql_goes_away_and_back_when_it_returns(postgres_url, make_app):
    proxy = TcpProxy(("127.0.0.1", 5432))
    proxy.start()
    try:
        client = make_app(proxy.url_for(postgres_url)).test_client()
        assert client.get("/readyz").status_code == 200
        proxy.stop()  # the database is gone: the pooled connection is cut, new ones are refused
        _not_ready(within(5, lambda: client.get("/readyz")))
        # Hook calls need no database (without client JWTs): they go on meanwhile.
        hook = client.post("/cds-services/posterior-knee-pain",
                           json=example_request("dvt-urgent-hot-calf.json", "patient-view"))
        assert hook.status_code == 200
        proxy.start()
        assert within(5, lambda: client.get("/readyz")).status_code == 200
    finally:
        proxy.stop()


def test_readiness_flips_back_when_a_sqlite_path_that_could_not_be_opened_can(tmp_path: Path, make_app):
    blocker = tmp_path / "data"
    blocker.write_text("a file where the database's folder should be")  # root reads any file: a folder cannot be made
    client = make_app(f"sqlite:///{blocker / 'feedback.sqlite3'}").test_client()
    _not_ready(client.get("/readyz"))
    blocker.unlink()
    assert client.get("/readyz").status_code == 200


def test_health_readiness_and_metrics_need_no_client_jwt_while_the_services_do(tmp_path, make_app):
    keys = ClientKeys(tmp_path)
    client = make_app(f"sqlite:///{tmp_path / 'f.db'}", auth="jwt", trusted_issuers=str(keys.issuers_file),
                      public_base_url=BASE).test_client()
    for path in ("/healthz", "/readyz", "/metrics"):
        assert client.get(path).status_code == 200, path
    assert client.get("/cds-services").status_code == 401


def test_with_metrics_off_there_is_no_metrics_endpoint_and_hook_calls_go_on(tmp_path, make_app):
    client = make_app(f"sqlite:///{tmp_path / 'f.db'}", metrics=False).test_client()
    response = client.get("/metrics")
    assert response.status_code == 404 and response.mimetype == "application/fhir+json"
    body = example_request("dvt-urgent-hot-calf.json", "patient-view")
    assert client.post("/cds-services/posterior-knee-pain", json=body).status_code == 200
