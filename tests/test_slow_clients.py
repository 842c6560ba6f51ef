"""Slow clients cannot take the service down: under gunicorn.conf.py (the one configuration `make run` and the
benchmark use), many more clients sending a byte a second than there are worker threads leave discovery and
hook calls answering; such a client is disconnected when its request-read time is up; ordinary HTTP (100-continue,
chunked bodies, keep-alive) still works."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from cds_service.serving import BUFFER_BYTES_LIMIT, HEADER_BYTES_LIMIT, _Request

from .conftest import example_request, gunicorn_server

WORKERS, THREADS = 2, 1  # gunicorn.conf.py
READ_SECONDS = 4
HOOK = "/cds-services/posterior-knee-pain"


@pytest.fixture(scope="module")
def server(tmp_path_factory, manifest) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("slow")
    with gunicorn_server(tmp, {"DATABASE_URL": f"sqlite:///{tmp / 'feedback.sqlite3'}",
                               "KNEE_CDS_REQUEST_READ_SECONDS": str(READ_SECONDS),
                               "KNEE_CDS_NOW": manifest["reference_date"]}) as (base, _):
        yield base


def _hook_body() -> bytes:
    return json.dumps(example_request("dvt-urgent-hot-calf.json", "patient-view")).encode()


class _SlowClient(threading.Thread):
    """Sends a hook request one byte a second, as a slowloris attack does; records when the server hung up."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.port = int(base.rsplit(":", 1)[1])
        self.stop = threading.Event()
        self.cut_after: float | None = None

    def run(self) -> None:
        body = _hook_body()
        request = (f"POST {HOOK} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.port)) as sock:
            try:
                for byte in request:
                    if self.stop.is_set():
                        return
                    sock.sendall(bytes([byte]))
                    time.sleep(1)
            except OSError:
                self.cut_after = time.monotonic() - started


def test_more_slow_clients_than_threads_leave_discovery_and_hooks_answering(server):
    slow = [_SlowClient(server) for _ in range(10 * WORKERS * THREADS)]
    for client in slow:
        client.start()
    try:
        time.sleep(2)  # every slow client has sent its first bytes
        for _ in range(3):
            started = time.monotonic()
            assert httpx.get(f"{server}/cds-services", timeout=5).status_code == 200
            assert time.monotonic() - started < 1.0
        answer = httpx.post(f"{server}{HOOK}", content=_hook_body(), headers={"Content-Type": "application/json"},
                            timeout=10)
        assert answer.status_code == 200
        assert answer.json()["cards"][0]["indicator"] == "critical"
    finally:
        for client in slow:
            client.stop.set()


def test_a_client_still_sending_when_its_read_time_is_up_is_disconnected(server):
    client = _SlowClient(server)
    client.start()
    client.join(timeout=READ_SECONDS + 5)
    assert client.cut_after is not None, "the server kept a 1-byte-per-second client past its read time"
    assert READ_SECONDS - 1 <= client.cut_after <= READ_SECONDS + 3


def test_a_client_expecting_100_continue_gets_one_interim_answer_and_its_cards(server):
    body = _hook_body()
    port = int(server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall((f"POST {HOOK} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n").encode())
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"  # before any body byte was sent
        sock.sendall(body)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"100 Continue" not in answer


def test_a_chunked_body_sent_in_pieces_is_answered(server):
    body = _hook_body()

    def pieces() -> Iterator[bytes]:
        for start in range(0, len(body), 997):
            time.sleep(0.01)
            yield body[start:start + 997]

    answer = httpx.post(f"{server}{HOOK}", content=pieces(), headers={"Content-Type": "application/json"}, timeout=10)
    assert answer.status_code == 200
    assert answer.json()["cards"]


def test_each_answer_closes_its_connection_so_the_next_call_can_go_to_an_idle_worker(server):
    with httpx.Client(timeout=10) as client:
        answers = [client.post(f"{server}{HOOK}", content=_hook_body(), headers={"Content-Type": "application/json"})
                   for _ in range(3)]
        answers.append(client.get(f"{server}/cds-services"))
    assert [a.status_code for a in answers] == [200, 200, 200, 200]
    assert {a.headers["connection"] for a in answers} == {"close"}


HEAD = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n"


@pytest.mark.parametrize(("received", "complete"), [
    (HEAD + b"123456789", False),  # one body byte short
    (HEAD + b"1234567890", True),
    (HEAD[:-2], False),  # the header block has not ended
    (b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", True),  # no body
    (b"POST /x HTTP/1.1\r\nContent-Length: ten\r\n\r\n", True),  # malformed: gunicorn answers 400
    (b"POST /x HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (BUFFER_BYTES_LIMIT + 1), True),  # the app answers 413
    (b"GET /" + b"a" * HEADER_BYTES_LIMIT, True),  # gunicorn answers the overlong request line
    (b"GET /" + b"a" * (HEADER_BYTES_LIMIT - 10), False),
])
def test_when_a_request_counts_as_arrived(received, complete):
    request = _Request(deadline=0)
    request.receive(received)
    assert request.complete() is complete


CHUNKED = b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(("pieces", "complete"), [
    ([b"5\r\nhello\r\n"], False),
    ([b"5\r\nhello\r\n0\r\n"], False),
    ([b"5\r\nhello\r\n0\r\n\r\n"], True),
    ([b"5\r\nhel", b"lo\r\n3;ext=1\r\nabc\r\n", b"0\r\n\r\n"], True),  # resumed across arrivals
    ([b"5\r\nhello\r\n0\r\nTrailer: x\r\n"], False),
    ([b"5\r\nhello\r\n0\r\nTrailer: x\r\n\r\n"], True),
    ([b"zz\r\n"], True),  # malformed size: gunicorn answers it
])
def test_when_a_chunked_request_counts_as_arrived(pieces, complete):
    request = _Request(deadline=0)
    request.receive(CHUNKED)
    answers = []
    for piece in pieces:
        request.receive(piece)
        answers.append(request.complete())
    assert answers[-1] is complete
    assert not any(answers[:-1])


def test_expect_100_continue_is_taken_out_of_the_request_gunicorn_reads():
    request = _Request(deadline=0)
    request.receive(b"POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    assert request.expects_continue and not request.complete()
    request.receive(b"{}")
    assert request.complete()
    assert bytes(request.data) == b"POST /x HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"
