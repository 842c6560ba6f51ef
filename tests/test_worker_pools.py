"""Connection pools belong to the process that uses them: never created in gunicorn's preloaded
master, and a forked worker builds its own."""

from __future__ import annotations

import os

import httpx

from cds_service import create_app
from cds_service.fhir_client import Deadline


def test_creating_the_app_opens_no_fhir_pool_and_no_database_connection(settings):
    app = create_app(settings)
    runtime = app.extensions["knee_cds"]
    assert not runtime.fhir_client.has_pool
    assert runtime.store._engine is None


def test_a_forked_worker_gets_its_own_pool():
    from cds_service.fhir_client import FhirClient

    client = FhirClient(httpx.MockTransport(lambda r: httpx.Response(200, json={"resourceType": "Patient"})))
    client.get_json("https://ehr.example.org/fhir/Patient/1", None, Deadline(2))
    parent_pool = client._client
    assert client.has_pool
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker
        ok = not client.has_pool
        client.get_json("https://ehr.example.org/fhir/Patient/1", None, Deadline(2))
        ok = ok and client.has_pool and client._client is not parent_pool
        os.write(write_end, b"1" if ok else b"0")
        os._exit(0)
    os.close(write_end)
    answer = os.read(read_end, 1)
    os.waitpid(pid, 0)
    assert answer == b"1"
