"""Data step: prefetched data where the client sent it, the FHIR server for the rest.

Per CDS Hooks 2.0: a key present with data is used as is; a key with ``null`` means the client knows
there is nothing (do not fetch); an OperationOutcome means the client tried and failed (do not try
again); an absent key is fetched from ``fhirServer``. Required data that cannot be had is a 412.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta, tzinfo
from typing import Any
from urllib.parse import quote

from .errors import BadRequest, FhirFetchError, PreconditionFailed
from .fhir_client import Deadline, FhirClient, bundle_resources, next_link
from .fhir_dates import clinical_dates
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


def gather(
    service: ServiceDefinition,
    body: dict[str, Any],
    client: FhirClient,
    deadline_seconds: float,
    today: date,
    zone: tzinfo,
) -> PatientData:
    prefetch = body.get("prefetch") or {}
    context = body["context"]
    fhir_server = body.get("fhirServer")
    token = (body.get("fhirAuthorization") or {}).get("access_token")
    deadline = Deadline(deadline_seconds)

    resources: list[dict[str, Any]] = []
    gaps: list[DataGap] = []
    sources: dict[str, str] = {}
    to_fetch: list[tuple[PrefetchSpec, str]] = []
    continue_paging: list[tuple[PrefetchSpec, dict[str, Any]]] = []

    def unavailable(spec: PrefetchSpec, reason: str) -> None:
        if spec.required:
            raise PreconditionFailed(
                f"Required data '{spec.key}' ({spec.why}) is not available: {reason}",
                expression=f"prefetch.{spec.key}",
            )
        gaps.append(DataGap(spec.key, reason))
        sources[spec.key] = "missing"

    for spec in service.prefetch:
        if spec.key in prefetch:
            value = prefetch[spec.key]
            if value is None:
                sources[spec.key] = "prefetch-null"
            elif value.get("resourceType") == "OperationOutcome":
                unavailable(spec, "the client reported an error prefetching it")
            elif value.get("resourceType") == "Bundle":
                resources.extend(bundle_resources(value))
                sources[spec.key] = "prefetch"
                if next_link(value) and not covered(spec, value, today, zone):
                    continue_paging.append((spec, value))
            else:
                resources.append(value)
                sources[spec.key] = "prefetch"
        elif fhir_server:
            to_fetch.append((spec, render_template(spec.fallback(today), context)))
        else:
            unavailable(spec, "not prefetched, and the request names no fhirServer to read it from")

    if to_fetch or continue_paging:
        def run(job: tuple[PrefetchSpec, Any]) -> tuple[PrefetchSpec, list[dict[str, Any]] | str]:
            spec, what = job
            enough = page_rule(spec, today, zone)
            try:
                if isinstance(what, str):
                    found = client.fetch(fhir_server, what, token, deadline, enough)
                    if spec.read and not found:
                        raise FhirFetchError(f"no {spec.resource_type} with that id on the FHIR server")
                    return spec, found
                if not fhir_server:
                    raise FhirFetchError("the prefetched Bundle has more pages and no fhirServer is named")
                first_page = bundle_resources(what)
                return spec, client.collect_pages(fhir_server, what, token, deadline, enough)[len(first_page):]
            except FhirFetchError as exc:
                log.warning("FHIR fetch for %s failed: %s", spec.key, exc)
                return spec, str(exc)

        jobs: list[tuple[PrefetchSpec, Any]] = [*to_fetch, *continue_paging]
        with ThreadPoolExecutor(max_workers=min(8, len(jobs))) as pool:
            outcomes = list(pool.map(run, jobs))
        for spec, outcome in outcomes:
            if isinstance(outcome, str):
                unavailable(spec, f"FHIR server: {outcome}")
            else:
                resources.extend(outcome)
                sources.setdefault(spec.key, "fhir-server")

    _check_patient_matches(resources, context["patientId"])
    return PatientData(tuple(resources), tuple(gaps), sources)


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
