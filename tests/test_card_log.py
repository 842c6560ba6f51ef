"""The card log (issue 11, item 4): every card issued is recorded (uuid, service, topic, indicator, rules, time; no
patient data) off the request path: a database that fails or never answers, or a full queue, drops rows, counted,
and never delays or fails a hook call. Rows of the card log and of feedback past the retention period are deleted,
at start-up and by the worker's writer thread."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select

from cds_service import Settings, card_log, create_app, store
from cds_service.samples import as_of, build_request, sample_resources
from cds_service.store import card_log_table, feedback_table

from .conftest import EXAMPLES, example_request, gunicorn_server, load_json

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
HOOK = "/cds-services/posterior-knee-pain"
PATIENT = "pkp-zz-4be1d0c9-patient-id"


def _hot_calf(patient_id: str = "pkp-dvt-urgent-01", on: date | None = None) -> dict:
    """The hot-calf request (a critical dvt-urgent card, D-01 and RF-01, and a differential card), its dates moved so
    that the calf is hot ``on`` that day (default: as written, 2026-11-20)."""
    sample = load_json(EXAMPLES / "dvt-urgent-hot-calf.json")
    body = json.dumps(build_request(sample_resources(as_of(sample, on) if on else sample), "patient-view"))
    return json.loads(body.replace("pkp-dvt-urgent-01", patient_id))


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now





def _rows(url: str, table) -> list[dict[str, Any]]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(select(table))]
    finally:
        engine.dispose()


def _utc(stamp: datetime) -> datetime:
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)  # SQLite hands back UTC wall time


def test_every_issued_card_is_logged_with_its_rules_and_the_app_clock_and_no_patient_data(database, make_app):
    issued = datetime(2026, 11, 20, 9, 30, 15, tzinfo=UTC)
    app = make_app(database, clock=Clock(issued))
    client = app.test_client()
    urgent, differential = client.post(HOOK, json=_hot_calf(PATIENT)).get_json()["cards"]
    order = example_request("chronic-posterior-knee-pain.json", "order-select")
    (appropriateness,) = client.post("/cds-services/knee-imaging-select", json=order).get_json()["cards"]
    assert app.extensions["knee_cds"].card_log.flush(10)
    rows = {row["card_uuid"]: row for row in _rows(database, card_log_table)}
    assert set(rows) == {urgent["uuid"], differential["uuid"], appropriateness["uuid"]}
    assert {k: v for k, v in rows[urgent["uuid"]].items() if k != "issued_at"} == {
        "card_uuid": urgent["uuid"], "service_id": "posterior-knee-pain", "topic": "dvt-urgent",
        "indicator": "critical", "rule_ids": "D-01 RF-01", "suggestions": len(urgent["suggestions"])}
    assert rows[appropriateness["uuid"]]["service_id"] == "knee-imaging-select"
    assert rows[appropriateness["uuid"]]["topic"] == "imaging-appropriateness"
    assert rows[appropriateness["uuid"]]["rule_ids"] == "K-07"  # X-ray before MRI
    assert rows[differential["uuid"]]["suggestions"] == 0
    assert {_utc(row["issued_at"]) for row in rows.values()} == {issued}
    assert PATIENT not in json.dumps([list(map(str, row.values())) for row in rows.values()])


def test_with_a_database_that_never_answers_hook_calls_answer_at_their_normal_pace(silent_postgres, make_app, caplog):
    app = make_app(silent_postgres)
    client = app.test_client()
    caplog.set_level(logging.WARNING, logger="cds_service.card_log")
    for _ in range(10):
        started = time.monotonic()
        response = client.post(HOOK, json=_hot_calf())
        assert response.status_code == 200 and len(response.get_json()["cards"]) == 2
        assert time.monotonic() - started < 0.5  # milliseconds normally; each database attempt would take 2 s
    runtime = app.extensions["knee_cds"]
    assert runtime.card_log.flush(30)  # every row written or dropped: here dropped, the database never answered
    text = client.get("/metrics").get_data(as_text=True)
    assert 'knee_cds_card_log_dropped_rows_total{cause="database"} 20.0' in text
    dropping = [r for r in caplog.records if "rows are being dropped" in r.getMessage()]
    assert len(dropping) == 1  # once per burst, however many batches failed


def test_a_full_queue_drops_rows_counts_them_and_the_calls_go_on(silent_postgres, make_app, monkeypatch):
    monkeypatch.setattr(card_log, "QUEUE_ROWS", 3)
    app = make_app(silent_postgres)
    client = app.test_client()
    for _ in range(5):
        assert client.post(HOOK, json=_hot_calf()).status_code == 200
    assert app.extensions["knee_cds"].card_log.flush(30)
    text = client.get("/metrics").get_data(as_text=True)
    dropped = {cause: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("knee_cds_card_log_dropped_rows_total{")
               for cause in [line.split('"')[1]]}
    assert dropped["queue-full"] >= 2
    assert sum(dropped.values()) == 10  # every row is either written or counted as dropped: none could be written


def test_the_writer_thread_starts_in_the_process_that_serves_not_the_one_that_built_the_app(tmp_path):
    url = f"sqlite:///{tmp_path / 'f.sqlite3'}"
    before = set(threading.enumerate())
    app = create_app(Settings(database_url=url, now="2026-11-20"))  # as gunicorn's master builds it
    assert set(threading.enumerate()) - before == set()  # a thread started here would not survive the fork
    pid = os.fork()
    if pid == 0:  # a worker
        ok = app.test_client().post(HOOK, json=_hot_calf()).status_code == 200
        ok = ok and app.extensions["knee_cds"].card_log.flush(10)
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert status == 0
    assert len(_rows(url, card_log_table)) == 2
    app.extensions["knee_cds"].close()


def test_both_gunicorn_workers_log_their_cards(tmp_path):
    database = tmp_path / "f.sqlite3"
    with gunicorn_server(tmp_path, {"DATABASE_URL": f"sqlite:///{database}", "KNEE_CDS_NOW": "2026-11-20"}) as (
            base, _process):
        uuids: set[str] = set()

        def send() -> None:
            with httpx.Client(timeout=30) as http:
                for _ in range(5):
                    uuids.update(c["uuid"] for c in http.post(f"{base}{HOOK}", json=_hot_calf()).json()["cards"])

        senders = [threading.Thread(target=send) for _ in range(2)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(60)
        assert len(uuids) == 20
        deadline = time.monotonic() + 10  # each worker's writer commits within about a second
        logged: set[str] = set()
        while time.monotonic() < deadline and logged != uuids:
            time.sleep(0.2)
            with sqlite3.connect(database) as connection:
                logged = {row[0] for row in connection.execute("select card_uuid from cds_card_log")}
        assert logged == uuids


# --- retention ---------------------------------------------------------------------------------------------------------

WINDOW = timedelta(days=400)  # KNEE_CDS_RETENTION_DAYS' default


def _fill(app, clock: Clock, stamps: dict[str, datetime]) -> dict[str, str]:
    """At each stamp, a hook call and feedback on its dvt-urgent card; returns label -> that card's uuid."""
    client = app.test_client()
    cards = {}
    for label, stamp in stamps.items():
        clock.now = stamp
        card = client.post(HOOK, json=_hot_calf(on=stamp.date())).get_json()["cards"][0]
        cards[label] = card["uuid"]
        item = {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-20T10:00:00Z"}
        assert client.post(f"{HOOK}/feedback", json={"feedback": [item]}).status_code == 200
    assert app.extensions["knee_cds"].card_log.flush(10)
    return cards


def _kept(url: str) -> tuple[set[str], set[str]]:
    """The dvt-urgent card uuids left in the card log, and the card uuids left in the feedback."""
    return ({row["card_uuid"] for row in _rows(url, card_log_table) if row["topic"] == "dvt-urgent"},
            {row["card_uuid"] for row in _rows(url, feedback_table)})


def test_start_up_deletes_rows_past_retention_and_keeps_those_inside_it_to_the_second(database, make_app):
    clock = Clock(NOW)
    cards = _fill(make_app(database, clock=clock), clock, {
        "just outside": NOW - WINDOW - timedelta(seconds=1),
        "at the edge": NOW - WINDOW,
        "just inside": NOW - WINDOW + timedelta(seconds=1),
        "today": NOW,
    })
    assert _kept(database) == (set(cards.values()), set(cards.values()))
    make_app(database, clock=Clock(NOW))  # a restart on NOW: start-up enforces the retention
    inside = {cards["at the edge"], cards["just inside"], cards["today"]}
    assert _kept(database) == (inside, inside)


def test_the_writer_thread_enforces_retention_about_daily_on_the_app_clock(tmp_path, make_app, monkeypatch):
    monkeypatch.setattr(card_log, "PURGE_INTERVAL_SECONDS", 0.5)  # "daily", sped up
    url = f"sqlite:///{tmp_path / 'f.sqlite3'}"
    clock = Clock(NOW)
    app = make_app(url, clock=clock, retention_days=30)
    cards = _fill(app, clock, {"older": NOW - timedelta(days=20), "newer": NOW - timedelta(days=5)})
    clock.now = NOW + timedelta(days=15)  # the older rows are now 35 days old, the newer 20
    app.test_client().post(HOOK, json=_hot_calf(on=clock.now.date()))  # the writer runs while the process serves
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and cards["older"] in _kept(url)[0]:
        time.sleep(0.2)
    card_uuids, feedback_uuids = _kept(url)
    assert cards["older"] not in card_uuids and cards["older"] not in feedback_uuids
    assert cards["newer"] in card_uuids and cards["newer"] in feedback_uuids


def test_a_backlog_past_retention_is_deleted_in_batches_to_the_last_row(database, monkeypatch):
    monkeypatch.setattr(store, "EXPIRE_BATCH_ROWS", 2)
    feedback_store = store.FeedbackStore(database)
    assert feedback_store.create_tables()
    old, recent = NOW - WINDOW - timedelta(days=1), NOW - timedelta(days=1)
    feedback_store.log_cards([store.CardLogRow(f"card-{n}", "posterior-knee-pain", "dvt-urgent", "critical",
                                               ("D-01",), 1, old if n < 5 else recent) for n in range(6)])
    items = [{"card": f"card-{n}", "outcome": "overridden", "outcomeTimestamp": "2026-11-20T10:00:00Z"}
             for n in range(4)]
    feedback_store.save("posterior-knee-pain", items, old)
    assert feedback_store.delete_expired(NOW - WINDOW) == store.Expired(cards=5, feedback=4)
    assert [row["card_uuid"] for row in _rows(database, card_log_table)] == ["card-5"]
    feedback_store.dispose()


def test_a_retention_of_less_than_a_day_is_refused(tmp_path):
    from cds_service.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="KNEE_CDS_RETENTION_DAYS"):
        create_app(Settings(database_url=f"sqlite:///{tmp_path / 'f.db'}", retention_days=0))


def test_the_retention_setting_is_read_from_the_environment():
    assert Settings.from_env({"KNEE_CDS_RETENTION_DAYS": "90"}).retention_days == 90
    assert Settings.from_env({}).retention_days == 400
