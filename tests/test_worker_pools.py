"""Connection pools belong to the process that uses them: never created in gunicorn's preloaded
master, a forked worker builds its own, and each is closed when its process exits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import httpx

from cds_service import Settings, create_app
from cds_service.fhir_client import Deadline, FhirClient

from .conftest import ROOT


def test_creating_the_app_opens_no_http_pool_and_no_database_connection(settings, tmp_path):
    issuers = tmp_path / "issuers.json"
    issuers.write_text(json.dumps({"issuers": [{"iss": "https://ehr.example.org",
                                                "jwks_url": "https://ehr.example.org/jwks.json"}]}))
    app = create_app(Settings(database_url=settings.database_url, auth="jwt", trusted_issuers=str(issuers),
                              public_base_url="https://cds.example.org"))
    runtime = app.extensions["knee_cds"]
    assert not runtime.fhir_client.pool.is_open
    assert not runtime.verifier.jwks_pool.is_open
    assert runtime.store._engine is None


def test_a_forked_worker_gets_its_own_pool():
    client = FhirClient(httpx.MockTransport(lambda r: httpx.Response(200, json={"resourceType": "Patient"})))
    client.get_json("https://ehr.example.org/fhir/Patient/1", None, Deadline(2))
    parent_pool = client.pool.client()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker
        ok = not client.pool.is_open
        client.get_json("https://ehr.example.org/fhir/Patient/1", None, Deadline(2))
        ok = ok and client.pool.is_open and client.pool.client() is not parent_pool
        os.write(write_end, b"1" if ok else b"0")
        os._exit(0)
    os.close(write_end)
    answer = os.read(read_end, 1)
    os.waitpid(pid, 0)
    assert answer == b"1"
    assert client.pool.client() is parent_pool  # the worker's pool did not replace the master's


def test_a_process_closes_its_pools_when_it_exits(tmp_path):
    # A fresh interpreter stands in for a gunicorn worker: it makes its FHIR pool, then exits normally.
    script = textwrap.dedent(f"""
        import httpx
        from cds_service import Settings, create_app

        class Transport(httpx.MockTransport):
            def close(self):
                print("transport closed", flush=True)

        transport = Transport(lambda request: httpx.Response(200, json={{"resourceType": "Patient"}}))
        app = create_app(Settings(database_url="sqlite:///{tmp_path / 'exit.db'}"), fhir_transport=transport)
        app.extensions["knee_cds"].fhir_client.pool.client()
        print("exiting", flush=True)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["exiting", "transport closed"]
