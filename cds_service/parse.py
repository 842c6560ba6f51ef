"""Parse step: raw FHIR JSON to ``fhir.resources`` R4B models.

Only the resource types the rules read are validated (validation costs ~0.2 ms per resource). A
resource that fails validation is left out of the decision and reported by reference and reason,
never by content.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource
from pydantic import ValidationError

log = logging.getLogger(__name__)

RULE_RESOURCE_TYPES = (
    "Patient",
    "Condition",
    "Observation",
    "Procedure",
    "MedicationRequest",
    "Encounter",
    "DiagnosticReport",
    "ServiceRequest",
)
# Meta elements of the FHIR standard; servers add their own (Medplum: project, author, compartment…).
_STANDARD_META = {"id", "extension", "versionId", "lastUpdated", "source", "profile", "security", "tag"}
_MODELS = {name: get_fhir_model_class(name) for name in RULE_RESOURCE_TYPES}


@dataclass(frozen=True)
class Rejected:
    reference: str
    resource_type: str
    reason: str

    def as_json(self) -> dict[str, str]:
        return {"reference": self.reference, "reason": self.reason}


@dataclass(frozen=True)
class ParsedRecord:
    resources: dict[str, tuple[Resource, ...]]
    rejected: tuple[Rejected, ...]

    def of(self, resource_type: str) -> tuple[Resource, ...]:
        return self.resources.get(resource_type, ())

    @property
    def patient(self) -> Resource | None:
        patients = self.of("Patient")
        return patients[0] if patients else None

    def rejected_types(self) -> set[str]:
        return {r.resource_type for r in self.rejected}


def _without_vendor_meta(raw: dict[str, Any]) -> dict[str, Any]:
    meta = raw.get("meta")
    if isinstance(meta, dict) and not meta.keys() <= _STANDARD_META:
        raw = {**raw, "meta": {k: v for k, v in meta.items() if k in _STANDARD_META}}
    return raw


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors(include_input=False, include_url=False)[:3]:
            loc = ".".join(str(p) for p in err["loc"]) or "(resource)"
            parts.append(f"{loc}: {err['type']}")
        return "; ".join(parts)
    if isinstance(exc, KeyError):
        return "unknown resourceType inside the resource"
    return f"invalid value ({type(exc).__name__})"


def parse_record(raw_resources: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> ParsedRecord:
    parsed: dict[str, list[Resource]] = {}
    seen: set[tuple[str, str]] = set()
    rejected: list[Rejected] = []
    for position, raw in enumerate(raw_resources):
        if not isinstance(raw, dict):
            rejected.append(Rejected(f"#{position}", "unknown", "not a JSON object"))
            continue
        rtype = raw.get("resourceType")
        model = _MODELS.get(rtype) if isinstance(rtype, str) else None
        if model is None:
            continue  # not read by any rule
        rid = raw.get("id")
        reference = f"{rtype}/{rid}" if isinstance(rid, str) else f"{rtype} #{position}"
        if isinstance(rid, str):
            if (rtype, rid) in seen:
                continue  # the same resource from a prefetch and a fetch, or two overlapping pages
            seen.add((rtype, rid))
        try:
            resource = model.model_validate(_without_vendor_meta(raw))
        except (ValidationError, KeyError, ValueError, TypeError) as exc:
            reason = _reason(exc)
            log.warning("left out %s: %s", reference, reason)
            rejected.append(Rejected(reference, rtype, reason))
            continue
        parsed.setdefault(rtype, []).append(resource)
    return ParsedRecord({k: tuple(v) for k, v in parsed.items()}, tuple(rejected))
