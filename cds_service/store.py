"""The store: feedback (committed before the 200 goes out), the card log, and used client-JWT ids.

SQLite (default) runs in WAL mode with ``synchronous=FULL`` so a committed row survives a crash of
the process or the machine; PostgreSQL commits are durable by default. Clients resend feedback, so
each item is stored once, keyed by a hash of its content.

The tables are created once at start-up (``create_tables``), under a lock every process takes, so workers
starting together on a fresh database do not race. Every database call is bounded in time (connect,
statement, lock and pool waits), and any database fault is a ``ServiceUnavailable`` (503): a feedback post or
a JWT replay check fails, and says so, while hook calls, which need no database, go on answering.

The card log (``cds_card_log``: one row per card issued, no patient data) is written in batches by card_log.py,
off the request path. Feedback is joined to it by card uuid when a report is made, not when the feedback is
stored: the card's row may still be on its way, and a join at report time sees it once it is there. Rows of both
older than the retention period are deleted (``delete_expired``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import (
    Column,
    DateTime,
    Executable,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine, Row, make_url
from sqlalchemy.exc import SQLAlchemyError

from .errors import ConfigurationError, ServiceUnavailable

log = logging.getLogger(__name__)

# A database that is down, or accepts connections and never answers, must cost a request seconds, not the
# worker: PostgreSQL's connect_timeout counts whole seconds (at least 2); the rest are milliseconds.
DB_TIMEOUT_SECONDS = 2
SQLITE_BUSY_TIMEOUT_MS = 5000  # writers queue on SQLite's one write lock; 5 s covers a burst of FULL-sync commits
EXPIRE_BATCH_ROWS = 5000  # rows deleted per transaction by retention: milliseconds each, well within the timeouts
# Any fixed 64-bit number, the same in every process: pg_advisory_xact_lock key for creating the tables.
_SCHEMA_LOCK_KEY = 0x6B6E_6565_6364_7301

metadata = MetaData()

feedback_table = Table(
    "cds_feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dedup_key", String(64), nullable=False, unique=True),
    Column("service_id", String(64), nullable=False, index=True),
    Column("card_uuid", String(128), nullable=False, index=True),
    Column("outcome", String(16), nullable=False),
    Column("accepted_suggestions", Text, nullable=True),  # JSON list of suggestion uuids
    Column("override_system", String(512), nullable=True),
    Column("override_code", String(256), nullable=True),
    Column("override_display", String(1024), nullable=True),
    Column("user_comment", Text, nullable=True),
    Column("outcome_timestamp", String(64), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
)

# Retention deletes by this; made on databases whose feedback table predates it too (_create_tables_locked).
feedback_received_index = Index("ix_cds_feedback_received_at", feedback_table.c.received_at)

# Every card the service issued: what feedback is joined to. No patient data: the card's own uuid (made by the
# service for the card), which service, topic and indicator, the rules that made it, how many suggestions it had.
card_log_table = Table(
    "cds_card_log",
    metadata,
    Column("card_uuid", String(64), primary_key=True),
    Column("service_id", String(64), nullable=False),
    Column("topic", String(64), nullable=False),
    Column("indicator", String(16), nullable=False),
    Column("rule_ids", String(512), nullable=False),  # space-separated, e.g. "D-01 RF-01"
    Column("suggestions", Integer, nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False, index=True),
)

# Client JWT ids already used (CDS Hooks jti replay protection), shared by every worker and host.
jti_table = Table(
    "cds_jwt_used",
    metadata,
    Column("key", String(64), primary_key=True),  # sha256 of iss + jti
    Column("expires_at", Float, nullable=False, index=True),
)


def _sqlite_durability(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    # First, so that switching a fresh file to WAL waits for a concurrent switch instead of failing.
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    # Two connections switching a fresh file at once can still meet SQLITE_BUSY at once: each holds the shared lock
    # the other must wait for, so SQLite answers one without waiting (about 1 start in 20 of 8 workers). Try again.
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        if str(path) not in ("", ":memory:"):
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
        event.listen(engine, "connect", _sqlite_durability)
        return engine
    if url.startswith("postgresql"):
        timeout_ms = DB_TIMEOUT_SECONDS * 1000
        query = make_url(url).query
        # Defaults only: the URL's own connect_timeout wins, and its options come after (a later -c wins).
        connect_args: dict[str, Any] = {name: value for name, value in (
            ("connect_timeout", DB_TIMEOUT_SECONDS),
            ("tcp_user_timeout", timeout_ms),  # a query the server's host never acknowledges (network gone)
        ) if name not in query}
        connect_args["options"] = " ".join(
            [f"-c statement_timeout={timeout_ms} -c lock_timeout={timeout_ms}", *_as_list(query.get("options"))])
        return create_engine(url, pool_pre_ping=True, pool_timeout=DB_TIMEOUT_SECONDS, connect_args=connect_args)
    return create_engine(url, pool_pre_ping=True)


def _as_list(value: str | tuple[str, ...] | None) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def _dedup_key(service_id: str, item: dict[str, Any]) -> str:
    canonical = json.dumps([service_id, item], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _create_tables_locked(connection: Connection) -> None:
    """Create the missing tables in one transaction that holds a lock every process takes first: two workers
    starting on a fresh database would otherwise both see no table and both CREATE it (the second fails)."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(select(func.pg_advisory_xact_lock(_SCHEMA_LOCK_KEY)))
    elif dialect == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")  # SQLite's write lock; its DDL is transactional
    metadata.create_all(connection)
    feedback_received_index.create(connection, checkfirst=True)


class CardLogRow(NamedTuple):
    card_uuid: str
    service_id: str
    topic: str
    indicator: str
    rule_ids: tuple[str, ...]
    suggestions: int
    issued_at: datetime


class StoredFeedback(NamedTuple):
    """A feedback item just stored (not a resent duplicate): its card's topic from the card log (None: the card log
    does not hold the card, yet or ever), outcome and override reason code."""

    topic: str | None
    outcome: str
    override_code: str | None


class Expired(NamedTuple):
    cards: int
    feedback: int


def _delete_expired(connection: Connection, cutoff: datetime) -> Expired:
    """Delete the rows stamped before ``cutoff``, in transactions of EXPIRE_BATCH_ROWS rows: a backlog (a retention
    just shortened) is deleted in steps that each stay well within the statement timeout."""
    cutoff = cutoff.astimezone(UTC)  # as the rows are stamped (SQLite keeps no offset)
    deleted = []
    for key, stamp in ((card_log_table.c.card_uuid, card_log_table.c.issued_at),
                       (feedback_table.c.id, feedback_table.c.received_at)):
        total, batch = 0, EXPIRE_BATCH_ROWS
        while batch == EXPIRE_BATCH_ROWS:
            oldest = select(key).where(stamp < cutoff).limit(EXPIRE_BATCH_ROWS)
            with connection.begin():
                batch = connection.execute(delete(key.table).where(key.in_(oldest))).rowcount
            total += batch
        deleted.append(total)
    expired = Expired(*deleted)
    log.info("retention: deleted %d card log rows and %d feedback items stamped before %s",
             expired.cards, expired.feedback, cutoff.isoformat())
    return expired


class FeedbackStore:
    def __init__(self, url: str):
        self.url = url
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()
        self._tables_ready = False
        self._ping_lock = threading.Lock()
        self._pinging = False

    @property
    def engine(self) -> Engine:
        # Made on first use, so each gunicorn worker opens its own connections after the fork.
        with self._engine_lock:
            if self._engine is None:
                self._engine = make_engine(self.url)
            return self._engine

    def create_tables(self, expire_before: datetime | None = None) -> bool:
        """Create the tables if they are missing (at start-up, before workers serve), and delete the rows stamped
        before ``expire_before``; False if the database cannot be reached, so that hook calls still start and the
        first store call tries again.

        Runs on a short-lived engine: with a preloaded app this runs in gunicorn's master, and no
        connection may be inherited by the forked workers.
        """
        engine = None
        try:
            engine = make_engine(self.url)
            with engine.connect() as connection, connection.begin():
                _create_tables_locked(connection)
            if expire_before is not None:
                with engine.connect() as connection:
                    _delete_expired(connection, expire_before)
        except (SQLAlchemyError, OSError) as exc:  # OSError: a SQLite folder that cannot be made
            log.error("feedback store unavailable, tables not created (will retry on use): %s", type(exc).__name__)
            return False
        finally:
            if engine is not None:
                engine.dispose()
        self._tables_ready = True
        return True

    @contextmanager
    def _connection(self, write: bool = False, report_faults: bool = True) -> Iterator[Connection]:
        """A connection (in a transaction when writing); any database fault is a 503, never a 500 or a hang.
        ``report_faults=False``: the caller logs faults its own way (the card log once per burst, readiness not)."""
        try:
            if not self._tables_ready:  # start-up could not reach the database
                with self.engine.connect() as connection, connection.begin():
                    _create_tables_locked(connection)
                self._tables_ready = True
            with self.engine.connect() as connection:
                if write:
                    with connection.begin():
                        yield connection
                else:
                    yield connection
        except (SQLAlchemyError, OSError) as exc:  # OSError: a SQLite folder that cannot be made
            if not report_faults:
                raise ServiceUnavailable("The database is unavailable") from None
            # The first line only: SQLAlchemy appends the statement's parameters, which are the client's feedback.
            log.error("feedback store error: %s: %s", type(exc).__name__, (str(exc).splitlines() or [""])[0][:200])
            raise ServiceUnavailable("The feedback store is unavailable; try again later") from None

    @staticmethod
    def _insert(connection: Connection, table: Table):
        dialect = connection.dialect.name
        if dialect == "postgresql":
            return pg_insert(table)
        if dialect == "sqlite":
            return sqlite_insert(table)
        raise ConfigurationError(f"unsupported database: {dialect}")

    def save(self, service_id: str, items: list[dict[str, Any]], received_at: datetime,
             on_stored: Callable[[list[StoredFeedback]], None] | None = None) -> tuple[int, int]:
        """Store the items in one transaction; returns (new, duplicates). ``on_stored`` is given the new items with
        their cards' topics (looked up in the same transaction) once they are committed."""
        # SQLite keeps no offset: store UTC so every row reads back in the same zone.
        received_at = received_at.astimezone(UTC)
        rows = {}
        for item in items:
            reason = (item.get("overrideReason") or {}).get("reason") or {}
            accepted = [s["id"] for s in item.get("acceptedSuggestions") or []]
            key = _dedup_key(service_id, item)
            rows[key] = {
                "dedup_key": key,
                "service_id": service_id,
                "card_uuid": item["card"],
                "outcome": item["outcome"],
                "accepted_suggestions": json.dumps(accepted) if accepted else None,
                "override_system": reason.get("system"),
                "override_code": reason.get("code"),
                "override_display": reason.get("display"),
                "user_comment": (item.get("overrideReason") or {}).get("userComment"),
                "outcome_timestamp": item["outcomeTimestamp"],
                "received_at": received_at,
            }
        with self._connection(write=True) as connection:
            statement = (
                self._insert(connection, feedback_table)
                .values(list(rows.values()))
                .on_conflict_do_nothing(index_elements=["dedup_key"])
                # only the rows actually inserted come back
                .returning(feedback_table.c.card_uuid, feedback_table.c.outcome, feedback_table.c.override_code)
            )
            inserted = connection.execute(statement).fetchall()
            if on_stored is not None and inserted:
                topics = {card: topic for card, topic in connection.execute(
                    select(card_log_table.c.card_uuid, card_log_table.c.topic)
                    .where(card_log_table.c.card_uuid.in_({row.card_uuid for row in inserted})))}
        if on_stored is not None and inserted:
            on_stored([StoredFeedback(topics.get(row.card_uuid), row.outcome, row.override_code) for row in inserted])
        return len(inserted), len(items) - len(inserted)

    def log_cards(self, rows: Sequence[CardLogRow]) -> None:
        """Write a batch of the card log in one transaction. A fault is a ServiceUnavailable the caller (the card
        log's writer) counts and logs once per burst: nothing is logged here."""
        values = [{**row._asdict(), "rule_ids": " ".join(row.rule_ids), "issued_at": row.issued_at.astimezone(UTC)}
                  for row in rows]
        with self._connection(write=True, report_faults=False) as connection:
            # A batch retried after a fault that struck past its commit is not logged twice.
            connection.execute(self._insert(connection, card_log_table).on_conflict_do_nothing(
                index_elements=["card_uuid"]), values)

    def delete_expired(self, cutoff: datetime) -> Expired:
        """Delete the card log rows issued, and the feedback received, before ``cutoff``."""
        with self._connection() as connection:
            return _delete_expired(connection, cutoff)

    def read(self, *statements: Executable, report_faults: bool = True) -> list[list[Row[Any]]]:
        """The rows of each statement, read on one connection (the analytics' queries)."""
        with self._connection(report_faults=report_faults) as connection:
            return [list(connection.execute(statement)) for statement in statements]

    def ping(self, timeout: float) -> bool:
        """Whether the database answers ``SELECT 1`` within ``timeout`` seconds.

        The query runs in a thread of its own so that the wait is bounded whatever the driver does (PostgreSQL's
        connect_timeout cannot go below 2 s). While a ping is still waiting for the database, the next answers
        False at once instead of starting another thread: a hung database holds one thread, not one per probe."""
        with self._ping_lock:
            if self._pinging:
                return False
            self._pinging = True
        done = threading.Event()
        answered: list[bool] = []

        def run() -> None:
            try:
                with self._connection(report_faults=False) as connection:
                    connection.execute(select(1))
                answered.append(True)
            except ServiceUnavailable:
                pass
            finally:
                with self._ping_lock:
                    self._pinging = False
                done.set()

        threading.Thread(target=run, name="knee-cds-db-ping", daemon=True).start()
        return done.wait(timeout) and bool(answered)

    def claim_jti(self, iss: str, jti: str, expires_at: float, now: float) -> bool:
        """Record a JWT id as used; False if it was used before (a replay)."""
        key = hashlib.sha256(json.dumps([iss, jti]).encode()).hexdigest()
        with self._connection(write=True) as connection:
            statement = self._insert(connection, jti_table).values(key=key, expires_at=expires_at).on_conflict_do_nothing(
                index_elements=["key"]).returning(jti_table.c.key)
            connection.execute(delete(jti_table).where(jti_table.c.expires_at < now - 60))
            return bool(connection.execute(statement).fetchall())

    def count(self, service_id: str | None = None) -> int:
        query = select(func.count()).select_from(feedback_table)
        if service_id:
            query = query.where(feedback_table.c.service_id == service_id)
        with self._connection() as connection:
            return int(connection.execute(query).scalar_one())

    def rows(self, card_uuid: str) -> list[dict[str, Any]]:
        query = select(feedback_table).where(feedback_table.c.card_uuid == card_uuid)
        with self._connection() as connection:
            return [dict(r._mapping) for r in connection.execute(query)]

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
