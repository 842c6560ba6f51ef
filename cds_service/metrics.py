"""Prometheus metrics (GET /metrics): hook calls, cards issued, FHIR fetches, feedback, JWT refusals, card log drops.

Under gunicorn, gunicorn.conf.py points PROMETHEUS_MULTIPROC_DIR at a fresh directory before the workers fork: each
worker writes its counts to files there, and a scrape answered by any worker adds up every worker's, those of workers
that have died included. Elsewhere (the Flask test client, one process) each app has a registry of its own, so apps
do not share counts. prometheus_client chooses between the two when it is first imported, so it is imported here on
first use (in the worker, after the variable is set), never when the package is.

No label carries patient data. Every label value comes from a bounded set the service defines: service ids, HTTP
statuses, card topics and indicators, the FHIR resource types of the prefetch keys, feedback outcomes, the override
reason codes of the card definitions (any other code is ``other``), JWT refusal reasons from auth.py. Never an id, a
URL or a text of a request.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Histogram

    from .store import StoredFeedback

log = logging.getLogger(__name__)
P = ParamSpec("P")

# Hook calls take milliseconds (a 5,000-resource chart ~0.1 s; FHIR fetches up to the 2 s deadline).
HOOK_SECONDS_BUCKETS = (0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FETCH_SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
UNKNOWN_TOPIC = "unknown"  # feedback naming a card the card log does not hold (yet)
NO_REASON = "none"
OTHER_REASON = "other"


class _Instruments:
    def __init__(self, registry: CollectorRegistry | None):
        from prometheus_client import Counter, Histogram

        self.hook_calls: Counter = Counter(
            "knee_cds_hook_calls", "Hook calls answered, by service and HTTP status", ["service", "status"],
            registry=registry)
        self.hook_seconds: Histogram = Histogram(
            "knee_cds_hook_duration_seconds", "Time to answer a hook call (FHIR fetches included), by service",
            ["service"], buckets=HOOK_SECONDS_BUCKETS, registry=registry)
        self.cards: Counter = Counter(
            "knee_cds_cards_issued", "Cards sent in hook answers, by card topic and indicator", ["topic", "indicator"],
            registry=registry)
        self.fetch_seconds: Histogram = Histogram(
            "knee_cds_fhir_fetch_duration_seconds",
            "Time to read one prefetch key from the FHIR server (all its pages), by resource type", ["resource_type"],
            buckets=FETCH_SECONDS_BUCKETS, registry=registry)
        self.fetch_failures: Counter = Counter(
            "knee_cds_fhir_fetch_failures", "Prefetch keys the FHIR server could not give, by resource type",
            ["resource_type"], registry=registry)
        self.feedback: Counter = Counter(
            "knee_cds_feedback_items",
            "Feedback items stored (resent duplicates not counted), by card topic ('unknown': a card the card log"
            " does not hold yet, its row still queued, or never issued; knee-cds report joins later), outcome and"
            " override reason code", ["topic", "outcome", "override_reason"],
            registry=registry)
        self.jwt_refusals: Counter = Counter(
            "knee_cds_jwt_refusals", "Client JWTs refused, by reason", ["reason"], registry=registry)
        self.card_log_dropped: Counter = Counter(
            "knee_cds_card_log_dropped_rows",
            "Card log rows dropped instead of delaying hook calls, by cause (queue-full, database, error)", ["cause"],
            registry=registry)


def _never_fails(count: Callable[P, None]) -> Callable[P, None]:
    """Counting is never why a request fails: a fault (a full disk under the multi-process files) is logged once
    per process and the count is lost."""
    failed_in: set[int] = set()

    @functools.wraps(count)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            count(*args, **kwargs)
        except Exception:
            if os.getpid() not in failed_in:
                failed_in.add(os.getpid())
                log.exception("metrics: a count was lost (logged once per process)")

    return guarded


class Metrics:
    """The service's instruments, made on first use in the process that counts. Off (``enabled=False``), every
    method returns at once and /metrics is not served."""

    def __init__(self, enabled: bool, override_codes: Iterable[str] = ()):
        self.enabled = enabled
        self._override_codes = frozenset(override_codes)
        self._instruments: _Instruments | None = None
        self._registry: CollectorRegistry | None = None
        self._multiprocess_dir: str | None = None
        self._lock = threading.Lock()

    def _get(self) -> _Instruments:
        instruments = self._instruments
        if instruments is None:
            with self._lock:
                if self._instruments is None:
                    self._instruments = self._build()
                instruments = self._instruments
        return instruments

    def _build(self) -> _Instruments:
        from prometheus_client import CollectorRegistry, values

        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        # The value class prometheus_client chose at its import says whether counts really go to the shared files.
        if directory and getattr(values.ValueClass, "_multiprocess", False):
            self._multiprocess_dir = directory
            return _Instruments(None)  # in the files; a scrape reads them all through a fresh registry
        self._registry = CollectorRegistry(auto_describe=True)
        return _Instruments(self._registry)

    def exposition(self) -> tuple[bytes, str]:
        """The text format of every count (every worker's, under gunicorn), and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

        self._get()
        if self._multiprocess_dir is not None:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self._multiprocess_dir)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        assert self._registry is not None
        return generate_latest(self._registry), CONTENT_TYPE_LATEST

    # --- the counting calls (each returns at once when metrics are off) ----------------------------------------------

    @_never_fails
    def hook_call(self, service: str, status: int, seconds: float, cards: Sequence[dict[str, Any]] = ()) -> None:
        if not self.enabled:
            return
        instruments = self._get()
        instruments.hook_calls.labels(service, str(status)).inc()
        instruments.hook_seconds.labels(service).observe(seconds)
        for card in cards:
            instruments.cards.labels(card["source"]["topic"]["code"], card["indicator"]).inc()

    @_never_fails
    def fhir_fetch(self, resource_type: str, seconds: float, failed: bool) -> None:
        if not self.enabled:
            return
        instruments = self._get()
        instruments.fetch_seconds.labels(resource_type).observe(seconds)
        if failed:
            instruments.fetch_failures.labels(resource_type).inc()

    @_never_fails
    def feedback_stored(self, items: Iterable[StoredFeedback]) -> None:
        if not self.enabled:
            return
        counter = self._get().feedback
        for item in items:
            reason = NO_REASON if item.override_code is None else (
                item.override_code if item.override_code in self._override_codes else OTHER_REASON)
            counter.labels(item.topic or UNKNOWN_TOPIC, item.outcome, reason).inc()

    @_never_fails
    def jwt_refused(self, reason: str) -> None:
        if self.enabled:
            self._get().jwt_refusals.labels(reason).inc()

    @_never_fails
    def card_log_dropped(self, cause: str, rows: int) -> None:
        if self.enabled and rows:
            self._get().card_log_dropped.labels(cause).inc(rows)
