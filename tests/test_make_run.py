"""`make run` is the real server: it starts, serves discovery, and an acknowledged feedback item
survives the server being killed outright."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import uuid

import httpx
import pytest

from .conftest import ROOT, free_port, wait_for_http


@pytest.fixture
def served(tmp_path):
    port = free_port()
    database = tmp_path / "feedback.sqlite3"
    env = {**os.environ, "PORT": str(port), "DATABASE_URL": f"sqlite:///{database}"}
    with open(tmp_path / "server.log", "w") as log:
        process = subprocess.Popen(["make", "run"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            wait_for_http(f"http://127.0.0.1:{port}/cds-services", seconds=120)
            yield f"http://127.0.0.1:{port}", database, process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)


def test_make_run_serves_discovery(served):
    base, _, _ = served
    services = httpx.get(f"{base}/cds-services").json()["services"]
    assert {s["id"] for s in services} == {"posterior-knee-pain", "knee-imaging-select", "knee-imaging-sign"}


def test_acknowledged_feedback_survives_a_killed_server(served):
    base, database, process = served
    card = str(uuid.uuid4())
    item = {"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-11-20T10:00:00Z"}
    response = httpx.post(f"{base}/cds-services/posterior-knee-pain/feedback", json={"feedback": [item]})
    assert response.status_code == 200
    os.killpg(process.pid, signal.SIGKILL)  # no shutdown, no flush: as a crash would
    process.wait(timeout=30)
    with sqlite3.connect(database) as connection:
        rows = connection.execute("select outcome from cds_feedback where card_uuid = ?", (card,)).fetchall()
    assert rows == [("overridden",)]
