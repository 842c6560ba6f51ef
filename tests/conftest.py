"""Shared fixtures: apps built with explicit settings, sample bundles, and the real services
(Node FHIR server, PostgreSQL) the boundary tests need."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from cds_service import Settings, create_app
from cds_service.samples import build_request
from cds_service.samples import sample_resources as bundle_resources

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "fhir_examples"
SHARED = ROOT.parent / "shared"
ARTIFACTS = SHARED / "cds-hooks-artifacts"
FHIR_SERVER_DIR = ROOT / "tests" / "fhir_server"
POSTGRES_URL = os.environ.get("KNEE_CDS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = bool(os.environ.get("CI"))
T = TypeVar("T")


def unavailable(reason: str) -> None:
    """Skip with a visible reason on a developer machine; fail in CI, where the part must exist."""
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


# The test FHIR servers listen on loopback over http: allowed here as `make run` allows them, never by default.
LOCAL_FHIR = {"fhir_allow_http": True, "fhir_allowed_hosts": "127.0.0.1,localhost"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path / 'feedback.sqlite3'}", now="2026-11-20", **LOCAL_FHIR)


@pytest.fixture
def app(settings: Settings):
    application = create_app(settings)
    yield application
    application.extensions["knee_cds"].close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def manifest() -> dict[str, Any]:
    return load_json(EXAMPLES / "manifest.json")


def example_request(name: str, hook: str, fhir_server: str | None = None) -> dict[str, Any]:
    return build_request(bundle_resources(load_json(EXAMPLES / name)), hook, fhir_server)


def service_for(hook: str) -> str:
    return {"patient-view": "posterior-knee-pain", "order-select": "knee-imaging-select",
            "order-sign": "knee-imaging-sign"}[hook]


class FhirTestServer:
    """Handle on the Medplum-based FHIR server (tests/fhir_server/server.mjs)."""

    def __init__(self, base: str):
        self.base = base
        self.http = httpx.Client(base_url=base, timeout=10)

    def reset(self) -> None:
        self.http.post("/_test/reset").raise_for_status()

    def load(self, resources: list[dict[str, Any]]) -> None:
        self.http.post("/_test/load", json=resources).raise_for_status()

    def configure(self, **config: Any) -> None:
        self.http.post("/_test/config", json=config).raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        return self.http.get("/_test/requests").json()


@pytest.fixture(scope="session")
def fhir_server_process():
    node = shutil.which("node")
    if node is None:
        unavailable("Node.js is not installed: the real-FHIR-server tests need it")
    if not (FHIR_SERVER_DIR / "node_modules" / "@medplum" / "fhir-router").is_dir():
        unavailable("tests/fhir_server has no node_modules: run `make test` (it runs npm ci)")
    process = subprocess.Popen(
        [node, "server.mjs", "0"], cwd=FHIR_SERVER_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    line = process.stdout.readline()
    if not line:
        process.kill()
        pytest.fail(f"FHIR test server did not start: {process.stderr.read()[:2000]}")
    port = json.loads(line)["port"]
    yield FhirTestServer(f"http://127.0.0.1:{port}")
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def fhir_server(fhir_server_process: FhirTestServer) -> FhirTestServer:
    fhir_server_process.reset()
    return fhir_server_process


@pytest.fixture(scope="session")
def postgres_url() -> str:
    from sqlalchemy import create_engine, text

    engine = create_engine(POSTGRES_URL)
    try:
        with engine.connect() as connection:
            connection.execute(text("select 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "no PostgreSQL here"
        unavailable(f"PostgreSQL is not reachable at {POSTGRES_URL}: {type(exc).__name__}")
    finally:
        engine.dispose()
    return POSTGRES_URL


def wait_for_http(url: str, seconds: float = 60.0) -> httpx.Response:
    deadline = time.monotonic() + seconds
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return httpx.get(url, timeout=2)
        except httpx.HTTPError as exc:
            last = exc
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {seconds}s: {last}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def gunicorn_server(tmp: Path, environ: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The real server (gunicorn with gunicorn.conf.py, two workers), its log and temporary files under ``tmp``."""
    port = free_port()
    env = {**os.environ, "PORT": str(port), "TMPDIR": str(tmp), **environ}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with open(tmp / "server.log", "w") as log:
        process = subprocess.Popen([str(ROOT / ".venv" / "bin" / "gunicorn"), "-c", "gunicorn.conf.py",
                                    "cds_service:create_app()"], cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for_http(f"http://127.0.0.1:{port}/healthz", seconds=60)
            yield f"http://127.0.0.1:{port}", process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)


def within(seconds: float, call: Callable[[], T]) -> T:
    """``call()``'s result, failing (not hanging) when it takes longer than ``seconds``."""
    result: list[T] = []
    worker = threading.Thread(target=lambda: result.append(call()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"no answer within {seconds} s"
    return result[0]


@pytest.fixture(scope="session")
def paging_fhir_server():
    """The project's paging FHIR server (tests/paging_fhir_server.py) for charts too long for Medplum's router."""
    from .paging_fhir_server import PagingFhirServer

    with PagingFhirServer() as server:
        yield server


@pytest.fixture
def fresh_paging_fhir_server(paging_fhir_server):
    """The paging FHIR server emptied, with no token required, no failures and no requests counted."""
    paging_fhir_server.reset()
    return paging_fhir_server


class RawServer:
    """A TCP server on 127.0.0.1 whose every connection is handed to ``handler(server, socket)`` in its own thread: for
    FHIR servers that misbehave below HTTP (silent, trickling, endless, not HTTP at all). Counts what it saw."""

    def __init__(self, handler: Callable[[RawServer, socket.socket], None]):
        self._handler = handler
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self.received = b""
        self.sent = 0
        self._stopped = threading.Event()

    def __enter__(self) -> RawServer:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopped.set()
        self._listener.close()

    def send(self, conn: socket.socket, data: bytes) -> bool:
        """Send and count; False once the service has hung up (or the test is over)."""
        if self._stopped.is_set():
            return False
        try:
            conn.sendall(data)
        except OSError:
            return False
        self.sent += len(data)
        return True

    def read_request(self, conn: socket.socket) -> bytes:
        data = b""
        conn.settimeout(5)
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        self.received += data
        return data

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # the service hanging up is the point of most of these tests
            self._handler(self, conn)


# --- the operations tests (ops, metrics, card log, analytics) --------------------------------------------------------
@pytest.fixture
def make_app() -> Iterator[Callable[..., Any]]:
    """Apps on a given database (KNEE_CDS_NOW 2026-11-20, or an injected clock), closed at teardown."""
    apps = []

    def make(url: str, clock: Callable[[], datetime] | None = None, **settings: Any):
        app = create_app(Settings(database_url=url, now="2026-11-20", **settings), clock=clock)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["knee_cds"].close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path) -> Iterator[str]:
    """The same test on SQLite and on a fresh schema of the real PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'f.sqlite3'}"
        return
    from .ops_kit import fresh_schema  # ops_kit imports this module

    with fresh_schema(request.getfixturevalue("postgres_url")) as url:
        yield url


@pytest.fixture
def silent_postgres() -> Iterator[str]:
    """A "PostgreSQL" that accepts connections and never answers (the kernel completes the handshakes)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    yield f"postgresql+psycopg://postgres@127.0.0.1:{listener.getsockname()[1]}/test"
    listener.close()
