"""What the operations tests share: a PostgreSQL schema of their own, a TCP proxy that can take the database away and
give it back, and client JWTs."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from sqlalchemy import create_engine, make_url, text


@contextlib.contextmanager
def fresh_schema(postgres_url: str) -> Iterator[str]:
    """A URL whose tables land in a new, empty schema (the test database is shared with other tests)."""
    schema = f"knee_cds_ops_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{postgres_url}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a TCP server. ``stop()`` closes the listener and every connection (the database
    is gone, pooled connections included); ``start()`` listens again on the same port."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def url_for(self, url: str) -> str:
        """``url`` (a PostgreSQL URL) pointed at this proxy."""
        parsed = make_url(url)
        return parsed.set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, []
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread (close alone leaves it listening)
            listener.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


class ClientKeys:
    """A CDS client's signing key and the trusted-issuer file that trusts it."""

    def __init__(self, tmp: Path, issuers: tuple[str, ...] = ("https://ehr.example.org",)):
        self.key = ec.generate_private_key(ec.SECP384R1())
        jwk = {**json.loads(ECAlgorithm.to_jwk(self.key.public_key())), "kid": "k-1", "use": "sig"}
        self.issuers_file = tmp / "issuers.json"
        self.issuers_file.write_text(json.dumps({"issuers": [{"iss": iss, "jwks": {"keys": [jwk]}} for iss in issuers]}))

    def token(self, audience: str, now: datetime, iss: str = "https://ehr.example.org", sub: str | None = None,
              exp: timedelta = timedelta(minutes=5)) -> str:
        claims = {"iss": iss, "aud": audience, "iat": int(now.timestamp()), "exp": int((now + exp).timestamp()),
                  "jti": str(uuid.uuid4())}
        if sub is not None:
            claims["sub"] = sub
        return jwt.encode(claims, self.key, algorithm="ES384", headers={"kid": "k-1", "typ": "JWT"})
