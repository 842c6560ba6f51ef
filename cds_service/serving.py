"""The gunicorn worker of the service: a slow client never holds a worker thread.

gunicorn's threaded worker hands a connection to a thread as soon as its first byte arrives, and the thread
then reads the rest of the request at the client's pace: a few clients sending one byte per second hold
every thread, and discovery stops answering. This worker reads requests in its event loop instead (as a
buffering proxy would), with non-blocking reads and a deadline for the whole request, and gives a thread
only a request that has fully arrived. A client that has not sent its whole request within
`KNEE_CDS_REQUEST_READ_SECONDS` of connecting (on a kept-alive connection: of starting its next request) is
disconnected.

Used through `gunicorn.conf.py` (`worker_class`); plain TCP only (TLS ends at the proxy, see the README).
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import time
from collections import deque
from concurrent.futures import Future
from functools import partial

from gunicorn.config import Config
from gunicorn.glogging import Logger
from gunicorn.workers.gthread import TConn, ThreadWorker

from .settings import Settings

# Header block larger than this is handed on unread further: gunicorn's own limits then answer it.
HEADER_BYTES_LIMIT = 64 * 1024
# Above the app's 10 MB body limit plus headers: the app refuses such a request from its Content-Length.
BUFFER_BYTES_LIMIT = 10 * 1024 * 1024 + HEADER_BYTES_LIMIT
RECV_BYTES = 256 * 1024


class _Request:
    """What has arrived of one connection's next request, and whether that is all of it."""

    def __init__(self, deadline: float) -> None:
        self.data = bytearray()
        self.deadline = deadline
        self.body_start = -1  # known once the header block has arrived
        self.content_length: int | None = None
        self.chunked = False
        self.next_chunk = 0  # where the next chunk-size line starts, relative to body_start
        self.expects_continue = False

    def receive(self, data: bytes) -> None:
        self.data += data
        if self.body_start < 0:
            self._read_head()

    def _read_head(self) -> None:
        header_end = self.data.find(b"\r\n\r\n")
        if header_end < 0:
            return
        lines = bytes(self.data[:header_end]).split(b"\r\n")
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip().lower()
        self.chunked = b"chunked" in fields.get(b"transfer-encoding", b"")
        length = fields.get(b"content-length", b"0")
        self.content_length = int(length) if length.isdigit() else None
        if fields.get(b"expect") == b"100-continue":
            # Answered here (the client waits for it before sending its body); dropped from the request so
            # gunicorn, reading it later, does not send a second one.
            self.expects_continue = True
            kept = [line for line in lines if not line.lower().startswith(b"expect:")]
            self.data[:header_end] = b"\r\n".join(kept)
            header_end = self.data.find(b"\r\n\r\n")
        self.body_start = header_end + 4

    def complete(self) -> bool:
        """Has the whole request arrived, or enough that gunicorn must answer it without reading more?"""
        if self.body_start < 0:
            return len(self.data) > HEADER_BYTES_LIMIT
        if self.content_length is None or self.content_length > BUFFER_BYTES_LIMIT or len(self.data) > BUFFER_BYTES_LIMIT:
            return True  # a malformed length (gunicorn answers 400) or too large (the app answers 413)
        if self.chunked:
            return self._chunks_complete()
        return len(self.data) - self.body_start >= self.content_length

    def _chunks_complete(self) -> bool:
        # Walks the chunk-size lines once in all (resuming where it stopped), never the chunk data.
        body = memoryview(self.data)[self.body_start:]
        try:
            while True:
                line_end = bytes(body[self.next_chunk:self.next_chunk + 1024]).find(b"\r\n")
                if line_end < 0:
                    return len(body) - self.next_chunk > 1024  # an overlong size line: gunicorn answers it
                size_line = bytes(body[self.next_chunk:self.next_chunk + line_end])
                try:
                    size = int(size_line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    return True  # malformed: gunicorn's parser answers it
                if size == 0:
                    # Optional trailer fields, then an empty line.
                    return b"\r\n\r\n" in bytes(body[self.next_chunk + line_end:])
                following = self.next_chunk + line_end + 2 + size + 2
                if following > len(body):
                    return False
                self.next_chunk = following
        finally:
            body.release()


class BufferingThreadWorker(ThreadWorker):
    """gunicorn's threaded worker, reading each request whole in the event loop before a thread runs it."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.arriving: deque[TConn] = deque()
        self.request_read_seconds = Settings.from_env().request_read_seconds
        self.running = 0  # requests handed to the thread pool and not finished

    def set_accept_enabled(self, enabled: bool) -> None:
        # New connections only while a thread is free: a hook call is CPU work, so a worker whose threads are all
        # busy leaves new clients to an idle worker instead of queueing them behind its own calls.
        super().set_accept_enabled(enabled and self.running < self.cfg.threads)

    def enqueue_req(self, conn: TConn) -> None:
        self.running += 1
        if self.running >= self.cfg.threads:
            super().set_accept_enabled(False)
        super().enqueue_req(conn)

    def finish_request(self, conn: TConn, fs: Future) -> None:
        self.running -= 1
        super().finish_request(conn, fs)

    @classmethod
    def check_config(cls, cfg: Config, log: Logger) -> None:
        super().check_config(cfg, log)
        if cfg.is_ssl:
            raise RuntimeError("BufferingThreadWorker reads plain HTTP: end TLS at the reverse proxy")

    def accept(self, listener: socket.socket) -> None:
        try:
            client_sock, client_addr = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = TConn(self.cfg, client_sock, client_addr, listener.getsockname())  # non-blocking
        self._await_request(conn)

    def on_client_socket_readable(self, conn: TConn, client: socket.socket) -> None:
        # A kept-alive connection starts its next request.
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._await_request(conn)

    def _await_request(self, conn: TConn) -> None:
        conn.arriving = _Request(time.monotonic() + self.request_read_seconds)
        self.arriving.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_request_bytes, conn))

    def _on_request_bytes(self, conn: TConn, client: socket.socket) -> None:
        request: _Request = conn.arriving
        try:
            while True:
                data = client.recv(RECV_BYTES)
                if not data:  # the client went away
                    self._drop(conn)
                    return
                request.receive(data)
                if len(data) < RECV_BYTES:
                    break
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._drop(conn)
            return
        if request.complete():
            self.poller.unregister(client)
            self.arriving.remove(conn)
            self.enqueue_req(conn)
        elif request.expects_continue:
            request.expects_continue = False
            try:
                client.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            except OSError:
                self._drop(conn)

    def _drop(self, conn: TConn) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(conn.sock)
        self.arriving.remove(conn)
        self.nr_conns -= 1
        conn.close()

    def handle(self, conn: TConn) -> object:
        # Runs in a worker thread. The parser starts from the bytes read in the event loop; a request
        # pipelined behind the previous one (already in the parser's buffer) comes without any.
        conn.sock.setblocking(True)
        conn.init()
        if conn.arriving is not None:
            conn.parser.unreader.unread(bytes(conn.arriving.data))
            conn.arriving = None
        conn.data_ready = True
        return super().handle(conn)

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        for conn in [c for c in self.arriving if c.arriving.deadline <= now]:
            self._drop(conn)
