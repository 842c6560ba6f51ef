"""FHIR reads are bounded in time and size (issue 8, item 8): the deadline covers the whole call, slow bodies
included, and past the size cap (KNEE_CDS_FHIR_MAX_BYTES) the key being read counts as unavailable."""

from __future__ import annotations

import gzip
import json
import socket
import time
from typing import Any

from cds_service import Settings, create_app

from .conftest import LOCAL_FHIR, RawServer, example_request

CHRONIC = example_request("chronic-posterior-knee-pain.json", "order-select")
PATIENT = json.dumps(CHRONIC["prefetch"]["patient"]).encode()
HEADERS = b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nConnection: close\r\n"
MB = 1_000_000


def _app(tmp_path, **overrides: Any):
    return create_app(Settings(database_url=f"sqlite:///{tmp_path / 'f.db'}", now="2026-11-20", **LOCAL_FHIR,
                               **overrides))


def _call(tmp_path, fhir_server: str, key: str = "patient", **overrides: Any):
    """The chronic knee pain request with one key left for the service to read from ``fhir_server``; the answer
    and how long it took."""
    body = example_request("chronic-posterior-knee-pain.json", "order-select", fhir_server)
    body["prefetch"].pop(key)
    app = _app(tmp_path, **overrides)
    started = time.monotonic()
    try:
        response = app.test_client().post("/cds-services/knee-imaging-select", json=body)
    finally:
        app.extensions["knee_cds"].close()
    return response, time.monotonic() - started


def trickle(server: RawServer, conn: socket.socket) -> None:
    """The Patient, one byte every 0.5 s (~150 s in all): each read is quick, the body is not."""
    server.read_request(conn)
    server.send(conn, HEADERS + b"\r\n")
    for byte in PATIENT:
        if not server.send(conn, bytes([byte])):
            return
        time.sleep(0.5)


def test_a_body_trickling_one_byte_every_half_second_ends_at_the_deadline(tmp_path):
    with RawServer(trickle) as server:
        response, elapsed = _call(tmp_path, server.base)
    assert response.status_code == 412
    assert elapsed < 3.0  # the 2 s deadline, and at most one more byte's wait


def late_then_silent(server: RawServer, conn: socket.socket) -> None:
    """Headers after 1.2 s, a few bytes of the body, then nothing."""
    server.read_request(conn)
    time.sleep(1.2)
    server.send(conn, HEADERS + b"Content-Length: %d\r\n\r\n" % len(PATIENT) + PATIENT[:10])
    time.sleep(5)


def test_a_body_that_stops_after_late_headers_ends_at_the_deadline(tmp_path):
    # The read timeout of the body must shrink with the budget, not restart when the headers arrive.
    with RawServer(late_then_silent) as server:
        response, elapsed = _call(tmp_path, server.base)
    assert response.status_code == 412
    assert elapsed < 2.7


def endless(declare_length: bool):
    """A Patient whose narrative never ends (300 MB), with or without announcing its length."""

    def handler(server: RawServer, conn: socket.socket) -> None:
        server.read_request(conn)
        head = b'{"resourceType":"Patient","id":"pkp-chronic-01","text":{"status":"generated","div":"'
        length = b"Content-Length: %d\r\n" % (300 * MB) if declare_length else b""
        if not server.send(conn, HEADERS + length + b"\r\n" + head):
            return
        padding = b"x" * MB
        for _ in range(300):
            if not server.send(conn, padding):
                return
    return handler


def test_a_huge_body_is_given_up_at_the_size_cap(tmp_path):
    for declare_length in (False, True):
        with RawServer(endless(declare_length)) as server:
            response, elapsed = _call(tmp_path, server.base, fhir_max_bytes=2 * MB)
        assert response.status_code == 412
        assert "exceed 2,000,000 bytes" in response.get_json()["issue"][0]["diagnostics"]
        assert server.sent < 12 * MB  # the cap plus what the sockets' buffers hold, not 300 MB
        assert elapsed < 2.0


def test_a_compressed_body_is_measured_unpacked(tmp_path):
    # 60 MB of narrative in ~60 KB of gzip: the cap counts what it would take in memory.
    bomb = gzip.compress(b'{"resourceType":"Patient","id":"pkp-chronic-01","text":{"div":"' + b"0" * 60 * MB + b'"}}')

    def handler(server: RawServer, conn: socket.socket) -> None:
        server.read_request(conn)
        server.send(conn, HEADERS + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(bomb) + bomb)

    with RawServer(handler) as server:
        response, _elapsed = _call(tmp_path, server.base, fhir_max_bytes=2 * MB)
    assert response.status_code == 412
    assert "exceed 2,000,000 bytes" in response.get_json()["issue"][0]["diagnostics"]


def test_optional_data_over_the_cap_is_listed_as_missing_and_the_call_goes_on(tmp_path):
    with RawServer(endless(declare_length=False)) as server:
        response, _elapsed = _call(tmp_path, server.base, key="recent-encounters", fhir_max_bytes=2 * MB)
    assert response.status_code == 200
    missing = response.get_json()["extension"]["org.example.kneecds.data-quality"]["missing"]
    assert [m["key"] for m in missing] == ["recent-encounters"]
    assert "exceed 2,000,000 bytes" in missing[0]["reason"]
    assert [c["source"]["topic"]["code"] for c in response.get_json()["cards"]] == ["imaging-appropriateness"]


def test_a_gzip_answer_within_the_cap_is_read(tmp_path):
    def handler(server: RawServer, conn: socket.socket) -> None:
        server.read_request(conn)
        packed = gzip.compress(PATIENT)
        server.send(conn, HEADERS + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(packed) + packed)

    with RawServer(handler) as server:
        response, _elapsed = _call(tmp_path, server.base)
    assert response.status_code == 200, response.get_json()
    assert [c["source"]["topic"]["code"] for c in response.get_json()["cards"]] == ["imaging-appropriateness"]
