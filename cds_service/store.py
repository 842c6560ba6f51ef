"""The store: feedback (committed before the 200 goes out) and used client-JWT ids.

SQLite (default) runs in WAL mode with ``synchronous=FULL`` so a committed row survives a crash of
the process or the machine; PostgreSQL commits are durable by default. Clients resend feedback, so
each item is stored once, keyed by a hash of its content.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Float,
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
from sqlalchemy.engine import Engine

from .errors import ConfigurationError

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

# Client JWT ids already used (CDS Hooks jti replay protection), shared by every worker and host.
jti_table = Table(
    "cds_jwt_used",
    metadata,
    Column("key", String(64), primary_key=True),  # sha256 of iss + jti
    Column("expires_at", Float, nullable=False, index=True),
)


def _sqlite_durability(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        if str(path) not in ("", ":memory:"):
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
        event.listen(engine, "connect", _sqlite_durability)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _dedup_key(service_id: str, item: dict[str, Any]) -> str:
    canonical = json.dumps([service_id, item], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class FeedbackStore:
    def __init__(self, url: str):
        self.url = url
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        # Created on first use, so each gunicorn worker opens its own connections after the fork.
        if self._engine is None:
            self._engine = make_engine(self.url)
            metadata.create_all(self._engine)
        return self._engine

    def _insert(self, table: Table = feedback_table):
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            return pg_insert(table)
        if dialect == "sqlite":
            return sqlite_insert(table)
        raise ConfigurationError(f"unsupported database: {dialect}")

    def save(self, service_id: str, items: list[dict[str, Any]], received_at: datetime) -> tuple[int, int]:
        """Store the items in one transaction; returns (new, duplicates)."""
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
        statement = (
            self._insert()
            .values(list(rows.values()))
            .on_conflict_do_nothing(index_elements=["dedup_key"])
            .returning(feedback_table.c.dedup_key)  # only the rows actually inserted come back
        )
        with self.engine.begin() as connection:
            inserted = len(connection.execute(statement).fetchall())
        return inserted, len(items) - inserted

    def claim_jti(self, iss: str, jti: str, expires_at: float, now: float) -> bool:
        """Record a JWT id as used; False if it was used before (a replay)."""
        key = hashlib.sha256(json.dumps([iss, jti]).encode()).hexdigest()
        statement = self._insert(jti_table).values(key=key, expires_at=expires_at).on_conflict_do_nothing(
            index_elements=["key"]).returning(jti_table.c.key)
        with self.engine.begin() as connection:
            connection.execute(delete(jti_table).where(jti_table.c.expires_at < now - 60))
            return bool(connection.execute(statement).fetchall())

    def count(self, service_id: str | None = None) -> int:
        query = select(func.count()).select_from(feedback_table)
        if service_id:
            query = query.where(feedback_table.c.service_id == service_id)
        with self.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def rows(self, card_uuid: str) -> list[dict[str, Any]]:
        query = select(feedback_table).where(feedback_table.c.card_uuid == card_uuid)
        with self.engine.connect() as connection:
            return [dict(r._mapping) for r in connection.execute(query)]

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
