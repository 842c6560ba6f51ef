"""Logs without patient data: a filter every log record passes, and one JSON line per hook call.

A hospital's log pipeline is not a place for protected health information. The service logs no resource
content; what could still carry a patient id (a URL in a library's log line, an exception text) is redacted
by ``PatientDataFilter``: the ids (and FHIR tokens) of the hook calls in progress, and any ``Patient/<id>``
reference or ``patient=`` search parameter. The filter runs when a record is made, so it covers every logger
and every handler, including those added later (gunicorn's, a test's).
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from collections.abc import Iterable
from typing import Any

import orjson

REDACTED = "[redacted]"
_PATIENT_REFERENCE = re.compile(r"\b(Patient/)[A-Za-z0-9\-.]{1,64}")
_PATIENT_PARAMETER = re.compile(r"(?i)([?&](?:patient|subject)(?::Patient)?=)[^&\s\"']+")
_HOOK_INSTANCE = re.compile(r"[A-Za-z0-9\-]{1,64}")

calls_log = logging.getLogger("cds_service.calls")


class _InProgress:
    """The values to redact while the hook calls that carry them run (a count each: calls may share a patient)."""

    def __init__(self) -> None:
        self._values: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._longest_first: tuple[str, ...] = ()

    def add(self, values: Iterable[str]) -> None:
        with self._lock:
            self._values.update(values)
            self._longest_first = tuple(sorted(self._values, key=len, reverse=True))

    def remove(self, values: Iterable[str]) -> None:
        with self._lock:
            self._values.subtract(values)
            self._values = +self._values
            self._longest_first = tuple(sorted(self._values, key=len, reverse=True))

    def values(self) -> tuple[str, ...]:
        return self._longest_first


_in_progress = _InProgress()


def _whole(value: str) -> re.Pattern[str]:
    # Whole values only: an id "12" must not eat the "12" of "120 ms". Compiled only for a line that holds the
    # value (re caches it), not for every call: most lines hold none.
    return re.compile(rf"(?<![\w.\-]){re.escape(value)}(?![\w.\-])")


def redact(text: str) -> str:
    text = _PATIENT_REFERENCE.sub(rf"\1{REDACTED}", text)
    text = _PATIENT_PARAMETER.sub(rf"\1{REDACTED}", text)
    for value in _in_progress.values():  # longest first: a value inside another goes with it
        if value in text:
            text = _whole(value).sub(REDACTED, text)
    return text


def start_redacting(*values: Any) -> list[str]:
    """Redact these values (a patient id, an access token) from every log record until ``stop_redacting``."""
    secrets = [v for v in values if isinstance(v, str) and v]
    _in_progress.add(secrets)
    return secrets


def stop_redacting(secrets: list[str]) -> None:
    _in_progress.remove(secrets)


class PatientDataFilter(logging.Filter):
    """Rewrites a record's message, exception and stack texts with patient data redacted; drops nothing."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed log call must not break the caller; logging reports it later
            return True
        record.msg, record.args = redact(message), ()
        if record.exc_info and not record.exc_text:
            # Handlers format the exception from exc_text when it is set: format it now, redacted.
            record.exc_text = redact(self._formatter.formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def keep_patient_data_out() -> None:
    """Install the filter on every log record of the process (once), and turn httpx's request lines off."""
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "redacts_patient_data", False):
        patient_filter = PatientDataFilter()

        def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = factory(*args, **kwargs)
            patient_filter.filter(record)
            return record

        make_record.redacts_patient_data = True  # type: ignore[attr-defined]
        logging.setLogRecordFactory(make_record)
    # httpx logs every request URL at INFO, and FHIR search URLs carry patient ids.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def log_hook_call(*, service: str | None, hook: str | None, hook_instance: Any, status: int, latency_ms: float,
                  topics: list[str], read: int, left_out: int, not_read: int, missing: list[str]) -> None:
    """One JSON line per hook call: what an operator needs to follow the service, and nothing about the patient."""
    line = {
        "event": "hook-call",
        "service": service,
        "hook": hook,
        # Client-chosen: logged only when it looks like the UUID it should be.
        "hookInstance": hook_instance if isinstance(hook_instance, str) and _HOOK_INSTANCE.fullmatch(hook_instance)
        else None,
        "status": status,
        "latencyMs": round(latency_ms, 1),
        "cardTopics": topics,
        "resourcesRead": read,
        "leftOut": left_out,
        "notRead": not_read,
        "missingKeys": missing,
    }
    calls_log.info(orjson.dumps(line).decode())
