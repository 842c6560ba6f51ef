"""Every setting of the service in one typed place.

Each field carries its environment variable and a one-line description; the README's settings
table is checked against this list by a test, so the two cannot drift apart.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo

from .errors import ConfigurationError


def _setting(default, env: str, description: str):
    return field(default=default, metadata={"env": env, "description": description})


@dataclass(frozen=True)
class Settings:
    database_url: str = _setting(
        "sqlite:///instance/feedback.sqlite3",
        "DATABASE_URL",
        "SQLAlchemy URL of the feedback store (SQLite file by default; postgresql+psycopg://… for PostgreSQL).",
    )
    fhir_deadline_seconds: float = _setting(
        2.0,
        "KNEE_CDS_FHIR_DEADLINE_SECONDS",
        "Total time budget for all FHIR server fetches of one hook call (not per request).",
    )
    fhir_max_pages: int = _setting(
        20, "KNEE_CDS_FHIR_MAX_PAGES", "Most searchset pages followed for one prefetch key."
    )
    fhir_max_bytes: int = _setting(
        20_000_000,
        "KNEE_CDS_FHIR_MAX_BYTES",
        "Most bytes (decompressed) read from FHIR servers for one hook call, all keys and pages; beyond it the key"
        " being read counts as unavailable.",
    )
    fhir_allow_http: bool = _setting(
        False,
        "KNEE_CDS_FHIR_ALLOW_HTTP",
        "'true' to let a request's fhirServer use plain http (local development; make run sets it); otherwise https"
        " only.",
    )
    fhir_allowed_hosts: str | None = _setting(
        None,
        "KNEE_CDS_FHIR_ALLOWED_HOSTS",
        "Comma-separated hosts (* wildcards), addresses or networks (10.2.0.0/16) a fhirServer may name even when they"
        " resolve to a loopback, private, link-local or other non-public address (make run: 127.0.0.1,localhost,::1);"
        " unset = public addresses only.",
    )
    request_read_seconds: float = _setting(
        15.0,
        "KNEE_CDS_REQUEST_READ_SECONDS",
        "Time a client has to send its whole request (headers and body) once it starts; a slower client is"
        " disconnected. Requests are read by the worker's event loop, so slow clients hold no thread meanwhile.",
    )
    preview: bool = _setting(
        False,
        "KNEE_CDS_PREVIEW",
        "'true' (or 1) serves the card preview page for developers at /preview (make run sets it); never set it in"
        " production.",
    )
    now: str | None = _setting(
        None,
        "KNEE_CDS_NOW",
        "Fixed clock (ISO date or dateTime) for reproducible demos and tests: 'today' for the rules, and the time"
        " client JWTs are checked and feedback is stamped against; unset = the real clock.",
    )
    timezone: str = _setting(
        "UTC",
        "KNEE_CDS_TIMEZONE",
        "Time zone (IANA name) in which dates and dateTimes written without a zone are read (rules.md G-11).",
    )
    cors_allow_origin: str = _setting(
        "*", "KNEE_CDS_CORS_ALLOW_ORIGIN", "Value of Access-Control-Allow-Origin for browser clients."
    )
    cards_dir: str | None = _setting(
        None,
        "KNEE_CDS_CARDS_DIR",
        "Folder of card definitions and value sets; unset = the copy shipped with the package.",
    )
    log_level: str = _setting("INFO", "KNEE_CDS_LOG_LEVEL", "Python logging level of the service.")
    auth: str = _setting(
        "off",
        "KNEE_CDS_AUTH",
        "'jwt' to require a CDS Hooks client JWT on every call (production); 'off' for local development.",
    )
    trusted_issuers: str | None = _setting(
        None,
        "KNEE_CDS_TRUSTED_ISSUERS",
        "JSON file listing the trusted JWT issuers and their JWK Sets (needed when KNEE_CDS_AUTH=jwt).",
    )
    public_base_url: str | None = _setting(
        None,
        "KNEE_CDS_PUBLIC_BASE_URL",
        "Base URL clients call (e.g. https://cds.example.org), for the JWT aud check; required with KNEE_CDS_AUTH=jwt.",
    )
    metrics: bool = _setting(
        True,
        "KNEE_CDS_METRICS",
        "Serves Prometheus metrics at /metrics (no client JWT: expose it to the monitoring network only); 'false'"
        " turns the endpoint and the counting off.",
    )
    analytics: bool = _setting(
        False,
        "KNEE_CDS_ANALYTICS",
        "'true' serves the override analytics page at /analytics (with KNEE_CDS_AUTH=jwt only to the readers"
        " KNEE_CDS_ANALYTICS_READERS names).",
    )
    analytics_readers: str | None = _setting(
        None,
        "KNEE_CDS_ANALYTICS_READERS",
        "With KNEE_CDS_AUTH=jwt, who may read /analytics: comma-separated JWT issuers (any subject) or iss|sub"
        " pairs, each issuer also in the trusted-issuer file; unset = /analytics is never served under jwt.",
    )
    retention_days: int = _setting(
        400,
        "KNEE_CDS_RETENTION_DAYS",
        "Days the card log and feedback are kept; older rows are deleted at start-up and about daily.",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> Settings:
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = environ.get(f.metadata["env"])
            if raw is None or raw == "":
                continue
            kind = f.type if isinstance(f.type, str) else f.type.__name__
            if kind.startswith("bool"):
                values[f.name] = _flag(f.metadata["env"], raw)
            elif kind.startswith("float"):
                values[f.name] = float(raw)
            elif kind.startswith("int"):
                values[f.name] = int(raw)
            else:
                values[f.name] = raw
        values.update(overrides)
        return cls(**values)

    def fixed_now(self) -> datetime | None:
        if not self.now:
            return None
        return parse_instant(self.now)

    def zone(self) -> tzinfo:
        return UTC if self.timezone.upper() == "UTC" else ZoneInfo(self.timezone)

    def analytics_reader_pairs(self) -> frozenset[tuple[str, str | None]]:
        """KNEE_CDS_ANALYTICS_READERS as (iss, sub) pairs; a sub of None admits any subject of that issuer."""
        pairs = set()
        for entry in filter(None, (item.strip() for item in (self.analytics_readers or "").split(","))):
            iss, bar, sub = (part.strip() for part in entry.partition("|"))
            if not iss or (bar and not sub):
                raise ConfigurationError(f"KNEE_CDS_ANALYTICS_READERS: {entry!r} is not 'iss' or 'iss|sub'")
            pairs.add((iss, sub or None))
        return frozenset(pairs)


def _flag(env: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    # A typo must not silently fall back to either behaviour of a security setting.
    raise ConfigurationError(f"{env} must be true or false, not {raw!r}")


def parse_instant(text: str) -> datetime:
    """An ISO date or dateTime as an aware datetime (a bare date is midday UTC of that day)."""
    if len(text) == 10:
        return datetime.fromisoformat(text).replace(hour=12, tzinfo=UTC)
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def describe() -> list[tuple[str, str, str]]:
    """(environment variable, default, description) for every setting: the README table."""
    return [(f.metadata["env"], repr(f.default), f.metadata["description"]) for f in fields(Settings)]
