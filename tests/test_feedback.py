"""Feedback is validated, stored once, and durable, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, text

from cds_service import Settings, create_app

from .conftest import ARTIFACTS

TS = "2026-11-20T10:05:31Z"
# The app's injected clock: a wall time in Central European Time, neither KNEE_CDS_NOW nor the machine's.
RECEIVED = datetime(2026, 11, 20, 10, 30, 15, tzinfo=timezone(timedelta(hours=1)))


@pytest.fixture(params=["sqlite", "postgresql"])
def feedback_app(request, tmp_path):
    sqlite = f"sqlite:///{tmp_path / 'fb.sqlite3'}"
    url = sqlite if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    app = create_app(Settings(database_url=url, now="2026-11-20"), clock=lambda: RECEIVED)
    yield app
    app.extensions["knee_cds"].close()


def _accepted(card: str | None = None, suggestion: str | None = None) -> dict:
    return {"card": card or str(uuid.uuid4()), "outcome": "accepted",
            "acceptedSuggestions": [{"id": suggestion or str(uuid.uuid4())}], "outcomeTimestamp": TS}


def test_accepted_feedback_is_stored(feedback_app):
    item = _accepted()
    response = feedback_app.test_client().post("/cds-services/knee-imaging-sign/feedback", json={"feedback": [item]})
    assert response.status_code == 200
    assert response.get_json() == {"stored": 1, "duplicates": 0}
    rows = feedback_app.extensions["knee_cds"].store.rows(item["card"])
    assert len(rows) == 1
    assert rows[0]["service_id"] == "knee-imaging-sign"
    assert rows[0]["outcome"] == "accepted"
    assert item["acceptedSuggestions"][0]["id"] in rows[0]["accepted_suggestions"]


def test_feedback_is_stamped_with_the_app_clock_in_utc(feedback_app):
    item = _accepted()
    feedback_app.test_client().post("/cds-services/knee-imaging-sign/feedback", json={"feedback": [item]})
    stamp = feedback_app.extensions["knee_cds"].store.rows(item["card"])[0]["received_at"]
    stamp = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)  # SQLite hands back the UTC wall time, no offset
    assert stamp == datetime(2026, 11, 20, 9, 30, 15, tzinfo=UTC)


def test_the_chosen_override_reason_code_is_stored(feedback_app):
    card = str(uuid.uuid4())
    item = {"card": card, "outcome": "overridden", "outcomeTimestamp": TS,
            "overrideReason": {"reason": {"system": "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes",
                                          "code": "does-not-align-preferences"},
                               "userComment": "Patient prefers to wait"}}
    client = feedback_app.test_client()
    assert client.post("/cds-services/posterior-knee-pain/feedback", json={"feedback": [item]}).status_code == 200
    row = feedback_app.extensions["knee_cds"].store.rows(card)[0]
    assert row["override_code"] == "does-not-align-preferences"
    assert row["user_comment"] == "Patient prefers to wait"


def test_duplicate_feedback_is_stored_once(feedback_app):
    item = _accepted()
    client = feedback_app.test_client()
    first = client.post("/cds-services/knee-imaging-select/feedback", json={"feedback": [item, item]})
    again = client.post("/cds-services/knee-imaging-select/feedback", json={"feedback": [item]})
    assert first.get_json() == {"stored": 1, "duplicates": 1}
    assert again.get_json() == {"stored": 0, "duplicates": 1}
    assert len(feedback_app.extensions["knee_cds"].store.rows(item["card"])) == 1


def test_a_later_different_outcome_for_the_same_card_is_kept(feedback_app):
    card = str(uuid.uuid4())
    client = feedback_app.test_client()
    client.post("/cds-services/posterior-knee-pain/feedback", json={"feedback": [_accepted(card)]})
    overridden = {"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-11-20T11:00:00Z"}
    client.post("/cds-services/posterior-knee-pain/feedback", json={"feedback": [overridden]})
    assert {r["outcome"] for r in feedback_app.extensions["knee_cds"].store.rows(card)} == {"accepted", "overridden"}


BAD_FEEDBACK = [
    ("no feedback array", {}, "feedback"),
    ("empty array", {"feedback": []}, "feedback"),
    ("accepted without suggestions", {"feedback": [{"card": "c", "outcome": "accepted", "outcomeTimestamp": TS}]},
     "feedback[0].acceptedSuggestions"),
    ("unknown outcome", {"feedback": [{"card": "c", "outcome": "ignored", "outcomeTimestamp": TS}]},
     "feedback[0].outcome"),
    ("timestamp not RFC 3339", {"feedback": [{"card": "c", "outcome": "overridden",
                                              "outcomeTimestamp": "yesterday"}]}, "feedback[0].outcomeTimestamp"),
    ("missing card", {"feedback": [{"outcome": "overridden", "outcomeTimestamp": TS}]}, "feedback[0].card"),
]


@pytest.mark.parametrize(("label", "body", "path"), BAD_FEEDBACK, ids=[b[0] for b in BAD_FEEDBACK])
def test_invalid_feedback_is_a_400_naming_the_field_and_stores_nothing(client, app, label, body, path):
    response = client.post("/cds-services/posterior-knee-pain/feedback", json=body)
    assert response.status_code == 400
    assert response.get_json()["issue"][0]["expression"] == [path]
    assert app.extensions["knee_cds"].store.count() == 0


def test_feedback_for_an_unknown_service_is_a_404(client):
    response = client.post("/cds-services/nope/feedback", json={"feedback": [_accepted()]})
    assert response.status_code == 404


def test_the_spec_feedback_examples_are_accepted(client):
    spec = (ARTIFACTS / "spec-text" / "cds-hooks-2.0.1-index.md").read_text(encoding="utf-8")
    examples = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", spec, re.S) if '"feedback"' in b]
    assert len(examples) == 3
    for body in examples:
        response = client.post("/cds-services/posterior-knee-pain/feedback", json=body)
        assert response.status_code == 200, response.get_json()


def test_sqlite_runs_in_wal_mode_with_full_sync(app, client):
    client.post("/cds-services/posterior-knee-pain/feedback", json={"feedback": [_accepted()]})
    engine = app.extensions["knee_cds"].store.engine
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL


def test_postgres_rows_are_visible_to_a_separate_connection(postgres_url):
    app = create_app(Settings(database_url=postgres_url))
    item = _accepted()
    app.test_client().post("/cds-services/posterior-knee-pain/feedback", json={"feedback": [item]})
    app.extensions["knee_cds"].store.dispose()
    engine = create_engine(postgres_url)
    with engine.connect() as connection:
        count = connection.execute(text("select count(*) from cds_feedback where card_uuid = :c"),
                                   {"c": item["card"]}).scalar()
    engine.dispose()
    assert count == 1


def test_a_client_jwt_id_can_be_used_once_and_expired_ids_are_forgotten(feedback_app):
    store = feedback_app.extensions["knee_cds"].store
    jti = str(uuid.uuid4())
    assert store.claim_jti("https://ehr.example.org", jti, expires_at=1000.0, now=900.0) is True
    assert store.claim_jti("https://ehr.example.org", jti, expires_at=1000.0, now=950.0) is False
    assert store.claim_jti("https://other.example.org", jti, expires_at=1000.0, now=950.0) is True
    # Long after expiry the row is cleaned up (the token itself is refused by its exp by then).
    assert store.claim_jti("https://ehr.example.org", jti, expires_at=5000.0, now=4000.0) is True


# --- text no database can store, and timestamps that are not FHIR instants (issue 8, item 6) --------------

def _overridden(**changes) -> dict:
    item = {"card": str(uuid.uuid4()), "outcome": "overridden", "outcomeTimestamp": TS,
            "overrideReason": {"reason": {"system": "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes",
                                          "code": "does-not-align-preferences", "display": "Patient preference"},
                               "userComment": "Patient prefers to wait"}}
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        target = item
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return item


UNSTORABLE = [
    ("lone surrogate in the comment", {"overrideReason__userComment": "wait \ud800 please"},
     "feedback[0].overrideReason.userComment"),
    ("lone low surrogate in the reason display", {"overrideReason__reason__display": "pref\udfffer"},
     "feedback[0].overrideReason.reason.display"),
    ("NUL in the comment", {"overrideReason__userComment": "wait\x00please"}, "feedback[0].overrideReason.userComment"),
    ("NUL in the card", {"card": "card\x001"}, "feedback[0].card"),
    ("RFC 3339 but 73 characters", {"outcomeTimestamp": "2026-11-20T10:05:31." + "0" * 51 + "1Z"},
     "feedback[0].outcomeTimestamp"),
    ("a fraction finer than nanoseconds", {"outcomeTimestamp": "2026-11-20T10:05:31.1234567891Z"},
     "feedback[0].outcomeTimestamp"),
    ("30 February", {"outcomeTimestamp": "2026-02-30T10:05:31Z"}, "feedback[0].outcomeTimestamp"),
    ("no time zone", {"outcomeTimestamp": "2026-11-20T10:05:31"}, "feedback[0].outcomeTimestamp"),
]


@pytest.mark.parametrize(("label", "changes", "path"), UNSTORABLE, ids=[u[0] for u in UNSTORABLE])
def test_feedback_a_database_cannot_store_is_a_400_naming_the_field(feedback_app, label, changes, path):
    item = _overridden(**changes)
    store = feedback_app.extensions["knee_cds"].store
    before = store.count()  # the PostgreSQL database is shared with the other tests
    # json= would refuse to encode a lone surrogate; a client sends it as a \u escape.
    response = feedback_app.test_client().post("/cds-services/posterior-knee-pain/feedback",
                                               data=json.dumps({"feedback": [item]}), content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["issue"][0]["expression"] == [path]
    assert store.count() == before


def test_an_instant_with_nanoseconds_and_an_offset_is_stored_as_sent(feedback_app):
    item = _overridden(outcomeTimestamp="2026-11-20T11:05:31.123456789+01:00",
                       overrideReason__userComment="Patient prefers to wait 😊 (ünd später)")
    response = feedback_app.test_client().post("/cds-services/posterior-knee-pain/feedback",
                                               data=json.dumps({"feedback": [item]}), content_type="application/json")
    assert response.status_code == 200
    row = feedback_app.extensions["knee_cds"].store.rows(item["card"])[0]
    assert row["outcome_timestamp"] == "2026-11-20T11:05:31.123456789+01:00"
    assert row["user_comment"] == "Patient prefers to wait 😊 (ünd später)"
