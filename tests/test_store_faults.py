"""The database never costs more than seconds and never a 500 (issue 8, items 7, 9 and 10): workers starting
together on a fresh database create the tables once; a database that is down, silent or locked is a 503
OperationOutcome within its timeouts; hook calls go on without it, unless client JWTs are checked, whose
replay check needs it (then calls fail closed)."""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from sqlalchemy import create_engine, text

from cds_service import Settings, create_app, store
from cds_service.store import FeedbackStore

from .conftest import EXAMPLES, load_json, within

FEEDBACK = "/cds-services/posterior-knee-pain/feedback"
HOOK = "/cds-services/posterior-knee-pain"
# Pain behind the right knee for 14 weeks: the patient-view answer carries cards, no database needed.
PATIENT_VIEW = load_json(EXAMPLES / "requests" / "chronic-posterior-knee-pain.patient-view.json")
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)  # what KNEE_CDS_NOW=2026-11-20 means


def _item() -> dict[str, Any]:
    return {"card": str(uuid.uuid4()), "outcome": "overridden", "outcomeTimestamp": "2026-11-20T10:05:31Z"}


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_database(request, tmp_path) -> Iterator[str]:
    """A database with no tables yet: a new SQLite file, or a new PostgreSQL schema (via search_path)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
        return
    base = request.getfixturevalue("postgres_url")
    schema = f"knee_cds_fresh_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    yield f"{base}?options=-csearch_path%3D{schema}"
    with admin.begin() as connection:
        connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture
def silent_postgres() -> Iterator[str]:
    """A "PostgreSQL" that accepts connections and never answers: a listening socket nobody accepts on (the
    kernel completes the handshakes). Closing it resets the waiting connections."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    yield f"postgresql+psycopg://postgres@127.0.0.1:{listener.getsockname()[1]}/test"
    listener.close()


@pytest.fixture
def make_app():
    apps = []

    def make(url: str, **settings: Any):
        app = create_app(Settings(database_url=url, now="2026-11-20", **settings))
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["knee_cds"].close()


# --- item 7: a fresh database --------------------------------------------------------------------------


def test_workers_starting_together_on_a_fresh_database_create_the_tables_once(fresh_database):
    start = threading.Barrier(8)
    created: list[bool | str] = []

    def start_worker() -> None:
        worker_store = FeedbackStore(fresh_database)
        start.wait()
        try:
            created.append(worker_store.create_tables())
        except Exception as exc:  # noqa: BLE001 - the test reports what a worker would have died of
            created.append(type(exc).__name__)
        finally:
            worker_store.dispose()

    workers = [threading.Thread(target=start_worker) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(20)
    assert created == [True] * 8
    check = FeedbackStore(fresh_database)
    assert check.save("posterior-knee-pain", [_item()], NOW) == (1, 0)
    check.dispose()


def test_eight_simultaneous_first_feedback_posts_on_a_fresh_database_are_all_stored(fresh_database, make_app):
    # Eight workers (each its own app and connections) answer their first feedback post at the same moment.
    clients = [make_app(fresh_database).test_client() for _ in range(8)]
    start = threading.Barrier(8)
    statuses: list[int] = []

    def post(client) -> None:
        start.wait()
        statuses.append(client.post(FEEDBACK, json={"feedback": [_item()]}).status_code)

    workers = [threading.Thread(target=post, args=(client,)) for client in clients]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(20)
    assert statuses == [200] * 8
    check = FeedbackStore(fresh_database)
    assert check.count("posterior-knee-pain") == 8
    check.dispose()


# --- item 9: timeouts and 503s -------------------------------------------------------------------------


def _assert_unavailable(response) -> None:
    assert response.status_code == 503
    assert response.mimetype == "application/fhir+json"
    assert response.headers["Retry-After"] == "5"
    assert response.get_json()["issue"] == [{"severity": "error", "code": "transient",
                                            "diagnostics": "The feedback store is unavailable; try again later"}]


def test_feedback_to_a_postgres_that_never_answers_is_a_503_within_seconds(silent_postgres, make_app):
    client = make_app(silent_postgres).test_client()
    started = time.monotonic()
    response = within(8, lambda: client.post(FEEDBACK, json={"feedback": [_item()]}))
    _assert_unavailable(response)
    assert time.monotonic() - started < 4  # the 2 s connect timeout, not gunicorn's 30 s worker timeout


def test_hook_calls_go_on_while_the_database_never_answers(silent_postgres, make_app):
    client = make_app(silent_postgres).test_client()
    response = within(8, lambda: client.post(HOOK, json=PATIENT_VIEW))
    assert response.status_code == 200
    assert response.get_json()["cards"]


def _signed_token(key: ec.EllipticCurvePrivateKey, audience: str) -> str:
    claims = {"iss": "https://ehr.example.org", "aud": audience, "iat": int(NOW.timestamp()),
              "exp": int((NOW + timedelta(minutes=5)).timestamp()), "jti": str(uuid.uuid4())}
    return jwt.encode(claims, key, algorithm="ES384", headers={"kid": "ehr-1", "typ": "JWT"})


def test_with_client_jwts_a_database_that_never_answers_refuses_hook_calls_with_503(silent_postgres, make_app,
                                                                                      tmp_path):
    # The replay check needs the database: without it a token could be replayed, so the call is refused.
    key = ec.generate_private_key(ec.SECP384R1())
    jwk = {**json.loads(ECAlgorithm.to_jwk(key.public_key())), "kid": "ehr-1", "use": "sig"}
    issuers = tmp_path / "issuers.json"
    issuers.write_text(json.dumps({"issuers": [{"iss": "https://ehr.example.org", "jwks": {"keys": [jwk]}}]}))
    base = "https://cds.example.org"
    client = make_app(silent_postgres, auth="jwt", trusted_issuers=str(issuers), public_base_url=base).test_client()
    response = within(8, lambda: client.post(
        HOOK, json=PATIENT_VIEW, headers={"Authorization": f"Bearer {_signed_token(key, base + HOOK)}"}))
    _assert_unavailable(response)


def test_feedback_stuck_behind_a_postgres_lock_is_a_503_after_the_statement_timeout(postgres_url, make_app):
    schema = f"knee_cds_locked_{uuid.uuid4().hex[:12]}"
    url = f"{postgres_url}?options=-csearch_path%3D{schema}"
    admin = create_engine(postgres_url)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        client = make_app(url).test_client()
        assert FeedbackStore(url).create_tables()
        locker = admin.connect()
        locker.begin()
        locker.execute(text(f"LOCK TABLE {schema}.cds_feedback IN ACCESS EXCLUSIVE MODE"))
        try:
            started = time.monotonic()
            _assert_unavailable(within(8, lambda: client.post(FEEDBACK, json={"feedback": [_item()]})))
            assert time.monotonic() - started < 4
        finally:
            locker.rollback()
            locker.close()
        # The lock is gone, and so is the fault.
        assert client.post(FEEDBACK, json={"feedback": [_item()]}).status_code == 200
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def test_feedback_to_a_sqlite_file_locked_past_the_busy_timeout_is_a_503(tmp_path, make_app, monkeypatch):
    monkeypatch.setattr(store, "SQLITE_BUSY_TIMEOUT_MS", 200)
    path = tmp_path / "locked.sqlite3"
    client = make_app(f"sqlite:///{path}").test_client()
    assert client.post(FEEDBACK, json={"feedback": [_item()]}).status_code == 200
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process holds SQLite's one write lock
    try:
        _assert_unavailable(within(8, lambda: client.post(FEEDBACK, json={"feedback": [_item()]})))
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert client.post(FEEDBACK, json={"feedback": [_item()]}).status_code == 200
