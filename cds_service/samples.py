"""Sample bundles that stay valid: moved in time so that their reference date becomes today.

The sample bundles of `fhir_examples/` are written around one day (their `timestamp`) and carry the sample tag. The
CLI (`evaluate`, `request`) moves every date of such a bundle by the same number of days, a FHIR-aware transform (by
element name, not by the look of a string: a date inside a note stays as written), so that a sample gives the cards
it describes on any day. The service never rewrites the dates of a hook call.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, date, timedelta
from functools import cache
from typing import Any

from .fhir_dates import clinical_dates
from .registry import PrefetchSpec, ServiceDefinition

SAMPLE_TAG = {"system": "http://example.org/fhir/CodeSystem/pkp-sample", "code": "sample",
              "display": "knee-cds sample: its dates are moved so that its timestamp is today"}

_DATE_ELEMENTS = frozenset({"birthDate", "recordedDate", "authoredOn", "issued", "start", "end", "lastUpdated", "date",
                            "recorded", "created", "occurrenceDateTime", "timestamp"})
_DATE_SUFFIXES = ("DateTime", "Instant", "Date")
_FHIR_DATE = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?(T.+)?")


def shift_date(value: str, days: int) -> str:
    """A FHIR date, dateTime or instant moved by whole days, keeping its precision, time and zone as written."""
    match = _FHIR_DATE.fullmatch(value)
    if match is None:
        return value
    year, month, day, rest = match.groups()
    try:
        moved = (date(int(year), int(month or 1), int(day or 1)) + timedelta(days=days)).isoformat()
    except (ValueError, OverflowError):  # 30 February, or past year 9999: left as written, for validation to refuse
        return value
    if day:
        return moved + (rest or "")
    return moved[:7] if month else moved[:4]


def _is_date_element(name: str) -> bool:
    return name in _DATE_ELEMENTS or name.endswith(_DATE_SUFFIXES)


def shifted(node: Any, days: int, is_date: bool = False) -> Any:
    """A deep copy with every date-typed element moved by `days` (FHIR-aware: by element name)."""
    if isinstance(node, dict):
        return {key: shifted(value, days, _is_date_element(key)) for key, value in node.items()}
    if isinstance(node, list):
        return [shifted(value, days, is_date) for value in node]
    if is_date and isinstance(node, str):
        return shift_date(node, days)
    return node


def reference_date(document: Any) -> date | None:
    """The day a sample bundle is written around, or None for anything that is not a tagged sample."""
    if not isinstance(document, dict) or document.get("resourceType") != "Bundle":
        return None
    meta = document.get("meta")
    tags = meta.get("tag") if isinstance(meta, dict) else None
    if not isinstance(tags, list) or not any(
            isinstance(t, dict) and t.get("system") == SAMPLE_TAG["system"] and t.get("code") == "sample" for t in tags):
        return None
    stamp = document.get("timestamp")
    # A tagged sample's timestamp that is no day is a ValueError: the sample is broken, not untagged.
    return date.fromisoformat(stamp[:10]) if isinstance(stamp, str) and len(stamp) >= 10 else None


def as_of(document: Any, today: date) -> Any:
    """A tagged sample moved so that its reference date is `today`; anything else unchanged."""
    reference = reference_date(document)
    return document if reference is None else shifted(document, (today - reference).days)


@cache
def _prefetch_specs(hook: str) -> tuple[PrefetchSpec, ...]:
    """The prefetch a hook's service asks for, as `build_request` fills it from a bundle."""
    from .knowledge import load_knowledge  # the CLI imports this module: the knowledge only when a request is built
    from .registry import resolve_services
    from .settings import Settings

    services = resolve_services(load_knowledge(Settings.from_env().cards_dir).terminology)
    return next(s for s in services if s.hook == hook).prefetch


def sample_resources(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The resources of a sample bundle (ValueError for anything else)."""
    if document.get("resourceType") != "Bundle":
        raise ValueError(f"expected a FHIR Bundle, not {str(document.get('resourceType', 'a JSON object'))[:64]}")
    entries = document.get("entry") or []
    if not isinstance(entries, list):
        raise ValueError("the Bundle's entry is not a list")
    resources = [e["resource"] for e in entries if isinstance(e, dict) and "resource" in e]
    for number, resource in enumerate(resources):
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            raise ValueError(f"resource {number + 1} of the Bundle is not a FHIR resource (no resourceType)")
    return resources


def split_bundle(resources: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """(patient data, draft orders, patient id) from a sample bundle."""
    drafts = [r for r in resources if r.get("resourceType") == "ServiceRequest" and r.get("status") == "draft"]
    data = [r for r in resources if r not in drafts]
    patient = next((r for r in data if r.get("resourceType") == "Patient"), None)
    patient_id = patient.get("id") if patient else "unknown"
    return data, drafts, patient_id or "unknown"


def hook_context(resources: list[dict[str, Any]], hook: str) -> dict[str, Any]:
    """The hook's context for a sample bundle: its patient, and its draft ServiceRequests as the draft orders. A
    ValueError when a draft order for order-select has no id (its selections name drafts by id)."""
    _, drafts, patient_id = split_bundle(resources)
    if hook == "order-select" and any(not isinstance(d.get("id"), str) for d in drafts):
        raise ValueError("a draft ServiceRequest needs an id for order-select (its selections name drafts by id)")
    context: dict[str, Any] = {"userId": "Practitioner/example", "patientId": patient_id}
    if hook in ("order-select", "order-sign"):
        context["draftOrders"] = {"resourceType": "Bundle", "entry": [{"resource": d} for d in drafts]}
    if hook == "order-select":
        context["selections"] = [f"ServiceRequest/{d['id']}" for d in drafts]
    return context


def build_request(resources: list[dict[str, Any]], hook: str, fhir_server: str | None = None,
                  hook_instance: str | None = None,
                  services: tuple[ServiceDefinition, ...] | None = None) -> dict[str, Any]:
    """A CDS Hooks request body for a bundle's resources, its prefetch filled as the service's templates ask
    (``services``: a running app's; by default those of the card definitions the environment names); its context
    as ``hook_context`` makes it."""
    data = split_bundle(resources)[0]
    context = hook_context(resources, hook)
    prefetch: dict[str, Any] = {}
    specs = next(s.prefetch for s in services if s.hook == hook) if services else _prefetch_specs(hook)
    for spec in specs:
        matching = [r for r in data if spec.selects(r)]
        if spec.newest is not None or spec.window_days is not None:
            matching.sort(key=_clinical_date, reverse=True)  # as `_sort=-date` answers
            matching = matching[:spec.newest]
        if spec.read:
            prefetch[spec.key] = matching[0] if matching else None
        else:
            prefetch[spec.key] = {
                "resourceType": "Bundle",
                "type": "searchset",
                "total": len(matching),
                "entry": [{"resource": r} for r in matching],
            }
    body: dict[str, Any] = {"hook": hook, "hookInstance": hook_instance or str(uuid.uuid4())}
    if fhir_server:
        body["fhirServer"] = fhir_server
    body["context"] = context
    body["prefetch"] = prefetch
    return body


def _clinical_date(resource: dict[str, Any]) -> date:
    when = clinical_dates(resource["resourceType"], resource, UTC, date.max, None)[0]
    return when or date.min
