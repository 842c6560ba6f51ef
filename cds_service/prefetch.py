"""Data step: prefetched data where the client sent it, the FHIR server for the rest.

Per CDS Hooks 2.0: a key present with data is used as is; a key with ``null`` means the client knows
there is nothing (do not fetch); an OperationOutcome means the client tried and failed (do not try
again); an absent key is fetched from ``fhirServer``. Required data that cannot be had is a 412.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta, tzinfo
from typing import Any
from urllib.parse import quote

from .errors import BadRequest, FhirFetchError, PreconditionFailed
from .fhir_client import Deadline, FhirClient, bundle_resources, next_link
from .fhir_dates import clinical_dates
from .metrics import Metrics
from .registry import PrefetchSpec, ServiceDefinition

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"\{\{\s*([A-Za-z.]+)\s*\}\}")
_USER_TOKENS = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}


@dataclass(frozen=True)
class DataGap:
    """Optional data the service went on without, and why."""

    key: str
    reason: str

    def as_json(self) -> dict[str, str]:
        return {"key": self.key, "reason": self.reason}


@dataclass(frozen=True)
class PatientData:
    resources: tuple[dict[str, Any], ...]
    gaps: tuple[DataGap, ...]
    sources: dict[str, str]  # key -> "prefetch" | "prefetch-null" | "fhir-server" | "missing"


def render_template(template: str, context: dict[str, Any]) -> str:
    def token_value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("context."):
            value = context.get(name.split(".", 1)[1])
        elif name in _USER_TOKENS:
            kind, _, ident = str(context.get("userId", "")).partition("/")
            value = ident if kind == _USER_TOKENS[name] else None
        else:
            value = None
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise BadRequest(f"Prefetch token {{{{{name}}}}} has no value in the context", expression="context")
        return quote(str(value), safe="")

    return _TOKEN.sub(token_value, template)


@dataclass
class _Gathering:
    """One hook call's data as it is collected: what was had, from where, and what could not be had."""

    today: date
    zone: tzinfo
    resources: list[dict[str, Any]] = field(default_factory=list)
    gaps: list[DataGap] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)

    def unavailable(self, spec: PrefetchSpec, reason: str) -> None:
        if spec.required:
            raise PreconditionFailed(
                f"Required data '{spec.key}' ({spec.why}) is not available: {reason}",
                expression=f"prefetch.{spec.key}",
            )
        self.gaps.append(DataGap(spec.key, reason))
        self.sources[spec.key] = "missing"

    def take(self, spec: PrefetchSpec, value: dict[str, Any] | None) -> dict[str, Any] | None:
        """A prefetched value; returns a Bundle whose further pages must still be read."""
        if value is None:
            self.sources[spec.key] = "prefetch-null"
        elif value.get("resourceType") == "OperationOutcome":
            self.unavailable(spec, "the client reported an error prefetching it")
        elif value.get("resourceType") == "Bundle":
            self.resources.extend(bundle_resources(value))
            self.sources[spec.key] = "prefetch"
            if next_link(value) and not covered(spec, value, self.today, self.zone):
                return value
        else:
            self.resources.append(value)
            self.sources[spec.key] = "prefetch"
        return None


def gather(
    service: ServiceDefinition,
    body: dict[str, Any],
    client: FhirClient,
    deadline_seconds: float,
    today: date,
    zone: tzinfo,
    metrics: Metrics | None = None,
) -> PatientData:
    prefetch = body.get("prefetch") or {}
    context = body["context"]
    fhir_server = body.get("fhirServer")
    had = _Gathering(today, zone)
    jobs: list[tuple[PrefetchSpec, str | dict[str, Any]]] = []  # a query to send, or a first page to complete
    for spec in service.prefetch:
        if spec.key in prefetch:
            unfinished = had.take(spec, prefetch[spec.key])
            if unfinished is not None:
                jobs.append((spec, unfinished))
        elif fhir_server:
            jobs.append((spec, render_template(spec.fallback(today), context)))
        else:
            had.unavailable(spec, "not prefetched, and the request names no fhirServer to read it from")
    if jobs:
        token = (body.get("fhirAuthorization") or {}).get("access_token")
        fetcher = _Fetcher(client, fhir_server, token, Deadline(deadline_seconds, client.max_bytes), today, zone,
                           metrics)
        with ThreadPoolExecutor(max_workers=min(8, len(jobs))) as pool:
            outcomes = list(pool.map(fetcher.run, jobs))
        for spec, outcome in outcomes:
            if isinstance(outcome, str):
                had.unavailable(spec, f"FHIR server: {outcome}")
            else:
                had.resources.extend(outcome)
                had.sources.setdefault(spec.key, "fhir-server")
    _check_patient_matches(had.resources, context["patientId"])
    return PatientData(tuple(had.resources), tuple(had.gaps), had.sources)


@dataclass(frozen=True)
class _Fetcher:
    client: FhirClient
    fhir_server: str | None
    token: str | None
    deadline: Deadline
    today: date
    zone: tzinfo
    metrics: Metrics | None = None

    def run(self, job: tuple[PrefetchSpec, str | dict[str, Any]]) -> tuple[PrefetchSpec, list[dict[str, Any]] | str]:
        """The resources of a key's reads, timed and counted by the key's resource type (never its URL, which
        carries the patient's id)."""
        started = time.perf_counter()
        spec, outcome = self._read(job)
        if self.metrics is not None:
            self.metrics.fhir_fetch(spec.resource_type, time.perf_counter() - started, failed=isinstance(outcome, str))
        return spec, outcome

    def _read(self, job: tuple[PrefetchSpec, str | dict[str, Any]]) -> tuple[PrefetchSpec, list[dict[str, Any]] | str]:
        """The resources of a key's query, or of a prefetched Bundle's further pages; or why they could not be had."""
        spec, what = job
        enough = page_rule(spec, self.today, self.zone)
        try:
            if not self.fhir_server:
                raise FhirFetchError("the prefetched Bundle has more pages and no fhirServer is named")
            if isinstance(what, str):
                found = self.client.fetch(self.fhir_server, what, self.token, self.deadline, enough)
                if spec.read and not found:
                    raise FhirFetchError(f"no {spec.resource_type} with that id on the FHIR server")
                return spec, found
            first_page = bundle_resources(what)
            return spec, self.client.collect_pages(self.fhir_server, what, self.token, self.deadline, enough)[
                len(first_page):]
        except FhirFetchError as exc:
            log.warning("FHIR fetch for %s failed: %s", spec.key, exc)
            return spec, str(exc)


def page_rule(spec: PrefetchSpec, today: date, zone: tzinfo) -> Callable[[dict[str, Any]], bool]:
    """When a key has read enough pages: the newest few after one page, a window once it is covered."""
    return lambda bundle: covered(spec, bundle, today, zone)


def covered(spec: PrefetchSpec, bundle: dict[str, Any], today: date, zone: tzinfo) -> bool:
    """Whether a page sorted newest first already reaches past the oldest date the key's rules look at."""
    if spec.newest is not None:
        return True
    if spec.window_days is None:
        return False
    page = bundle_resources(bundle)
    if not page:
        return True
    last = page[-1]
    when = clinical_dates(spec.resource_type, last, zone, today, None)[0] if isinstance(last, dict) else None
    # Undated entries sort last: reaching one means every dated entry has been seen.
    return when is None or when < today - timedelta(days=spec.window_days)


def _check_patient_matches(resources: list[dict[str, Any]], patient_id: str) -> None:
    # Data about another patient must never drive this patient's cards.
    for resource in resources:
        if resource.get("resourceType") == "Patient" and resource.get("id") not in (None, patient_id):
            raise BadRequest(
                "Prefetched Patient.id does not match context.patientId", expression="prefetch.patient.id"
            )
