"""The card log: every card the service issues, recorded off the request path, so that feedback can be joined to
what was shown (analytics.py).

A hook call hands its cards' rows (uuid, service, topic, indicator, rule ids, number of suggestions, time from the
app's clock; no patient data) to a bounded queue in its process and goes on; a daemon thread, the writer, writes
the queue in batches through the store. The writer is started by the first call in each process (gunicorn preloads
the app in its master, and a thread started there would not survive the fork into the workers) and ends after a
minute with nothing to write. Best effort: when the queue is full or the database fails, rows are dropped, counted
(metric knee_cds_card_log_dropped_rows) and logged once per burst; a hook call is never delayed or failed by it.

The writer also deletes the rows past the retention period, about daily (create_app does it once at start-up).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from .errors import ServiceUnavailable
from .metrics import Metrics
from .store import CardLogRow, FeedbackStore

log = logging.getLogger(__name__)

QUEUE_ROWS = 10_000  # a few seconds of cards at the benchmark's rate: rides out a slow commit, not an outage
BATCH_ROWS = 500
# Rows wait up to this long for others to join their batch: a row written alone costs ~100 µs of CPU, one of a batch of
# hundreds ~10 µs (SQLite and PostgreSQL alike), and this CPU is the worker's, taken from its hook calls.
LINGER_SECONDS = 1.0
IDLE_SECONDS = 60.0
PURGE_INTERVAL_SECONDS = 24 * 3600.0
PURGE_RETRY_SECONDS = 3600.0
CLOSE_SECONDS = 2.0  # at process exit, the most time given to writing what is still queued


class CardLog:
    def __init__(self, store: FeedbackStore, metrics: Metrics, clock: Callable[[], datetime], retention: timedelta):
        self._store = store
        self._metrics = metrics
        self._clock = clock
        self._retention = retention
        self._pending: deque[CardLogRow] = deque()
        self._lock = threading.Lock()
        self._has_rows = threading.Condition(self._lock)
        self._drained = threading.Condition(self._lock)
        self._writer: threading.Thread | None = None
        self._writer_pid = 0
        self._writing = 0  # rows the writer has taken and not yet written or dropped
        self._flushing = 0  # callers of flush() waiting: the writer does not linger for them
        self._closed = False
        self._next_purge = time.monotonic() + PURGE_INTERVAL_SECONDS
        self._dropped: dict[str, int] = {}  # rows dropped by cause since the last good write: one log line per burst

    def record(self, service_id: str, cards: Sequence[dict[str, Any]], card_rules: Mapping[str, tuple[str, ...]],
               issued_at: datetime) -> None:
        """Queue the rows of a hook call's cards (on the request path: a lock and an append, never a wait)."""
        rows = [CardLogRow(card["uuid"], service_id, card["source"]["topic"]["code"], card["indicator"],
                           card_rules.get(card["uuid"], ()), len(card.get("suggestions", ())), issued_at)
                for card in cards]
        if not rows:
            return
        with self._lock:
            if self._closed:
                return
            full = len(self._pending) + len(rows) > QUEUE_ROWS
            if not full:
                self._pending.extend(rows)
                if self._writer is None or self._writer_pid != os.getpid() or not self._writer.is_alive():
                    self._start_writer()
                elif len(self._pending) == len(rows) or len(self._pending) >= BATCH_ROWS:
                    self._has_rows.notify()  # the first rows, or a full batch; others wait for the linger
        if full:
            self._drop("queue-full", len(rows))

    def flush(self, timeout: float) -> bool:
        """Wait until every queued row is written or dropped; False if that takes longer than ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._flushing += 1
            self._has_rows.notify()
            try:
                while self._pending or self._writing:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._drained.wait(remaining)
            finally:
                self._flushing -= 1
        return True

    def close(self) -> None:
        """Write what is queued (for at most CLOSE_SECONDS) and stop the writer: at process exit."""
        with self._lock:
            self._closed = True
            self._has_rows.notify()
            writer = self._writer if self._writer_pid == os.getpid() else None
        if writer is not None:
            writer.join(CLOSE_SECONDS)

    def _start_writer(self) -> None:
        self._writer = threading.Thread(target=self._run, name="knee-cds-card-log", daemon=True)
        self._writer_pid = os.getpid()
        self._writer.start()

    def _run(self) -> None:
        idle_since = time.monotonic()
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    now = time.monotonic()
                    if now >= self._next_purge:
                        break
                    if now - idle_since >= IDLE_SECONDS:
                        self._writer = None  # the next record() starts another
                        return
                    self._has_rows.wait(min(idle_since + IDLE_SECONDS, self._next_purge) - now)
                if self._closed and not self._pending:
                    self._writer = None
                    return
                linger_until = time.monotonic() + LINGER_SECONDS
                while 0 < len(self._pending) < BATCH_ROWS and not self._closed and not self._flushing:
                    remaining = linger_until - time.monotonic()
                    if remaining <= 0:
                        break
                    self._has_rows.wait(remaining)
                batch = [self._pending.popleft() for _ in range(min(BATCH_ROWS, len(self._pending)))]
                self._writing = len(batch)
            if batch:
                self._write(batch)
                idle_since = time.monotonic()
            if time.monotonic() >= self._next_purge:
                self._purge()
            with self._lock:
                self._writing = 0
                self._drained.notify_all()

    def _write(self, batch: list[CardLogRow]) -> None:
        try:
            self._store.log_cards(batch)
        except ServiceUnavailable:
            self._drop("database", len(batch))
            return
        except Exception:  # a bug must not end the writer: the rows are lost, the hook calls go on
            log.exception("card log: %d rows dropped by an unexpected error", len(batch))
            self._drop("error", len(batch))
            return
        with self._lock:
            dropped, self._dropped = self._dropped, {}
        if dropped:
            log.warning("card log: written again; rows dropped meanwhile: %s",
                        ", ".join(f"{rows} ({cause})" for cause, rows in dropped.items()))

    def _drop(self, cause: str, rows: int) -> None:
        with self._lock:
            burst_starts = not self._dropped
            self._dropped[cause] = self._dropped.get(cause, 0) + rows
        if burst_starts:
            log.warning("card log: rows are being dropped (%s); hook calls go on. Counted in "
                        "knee_cds_card_log_dropped_rows; logged again when the log is written again", cause)
        self._metrics.card_log_dropped(cause, rows)

    def _purge(self) -> None:
        cutoff = self._clock() - self._retention
        try:
            self._store.delete_expired(cutoff)  # logs what it deleted
        except ServiceUnavailable:  # the store has logged it
            self._next_purge = time.monotonic() + PURGE_RETRY_SECONDS
            return
        self._next_purge = time.monotonic() + PURGE_INTERVAL_SECONDS
