"""Whole-bundle FHIR R4 check for the CLI's ``validate``: every resource of the types the rules read.

Hook calls do not use this: the chart index validates only what a rule reads (``chart.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, tzinfo
from typing import Any

from fhir.resources.R4B.resource import Resource

from .chart import Rejected, rejection_reason, validate
from .fhir_models import RULE_RESOURCE_TYPES


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


def parse_record(raw_resources: list[Any], zone: tzinfo = UTC) -> ParsedRecord:
    parsed: dict[str, list[Resource]] = {}
    seen: set[tuple[str, str]] = set()
    rejected: list[Rejected] = []
    for position, raw in enumerate(raw_resources):
        if not isinstance(raw, dict):
            rejected.append(Rejected(f"#{position}", "unknown", "not a JSON object"))
            continue
        rtype = raw.get("resourceType")
        if rtype not in RULE_RESOURCE_TYPES:
            continue  # not read by any rule
        rid = raw.get("id")
        reference = f"{rtype}/{rid}" if isinstance(rid, str) else f"{rtype} #{position}"
        if isinstance(rid, str):
            if (rtype, rid) in seen:
                continue
            seen.add((rtype, rid))
        try:
            resource = validate(rtype, raw, zone, whole=True)
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            rejected.append(Rejected(reference, rtype, rejection_reason(exc)))
            continue
        parsed.setdefault(rtype, []).append(resource)
    return ParsedRecord({k: tuple(v) for k, v in parsed.items()}, tuple(rejected))
