"""The benchmark's request bodies: a Synthea-shaped chart around a knee scenario, one token per request.

The token is in the patient id, every resource id and one value (a Patient identifier), so no two
requests are alike and no cache can stand in for the work. Every resource of the chart is in the body:
the `observations` key carries all the Observations, as an EHR that does not apply the template's code
filter would send them, so a 5,000-resource chart is a 5,000-resource call.
"""

from __future__ import annotations

import json
import uuid
from datetime import date

from cds_service.samples import build_request
from fhir_examples.synthea import sized_chart

TODAY = date(2026, 11, 20)  # also the service's KNEE_CDS_NOW, so the chart's dates fall in the rules' windows
SCENARIO = "dvt-urgent-note"
HOOK = "patient-view"
SERVICE_ID = "posterior-knee-pain"
TOKEN_SYSTEM = "urn:knee-cds:bench:request"


def hook_body(resources: int, token: str) -> bytes:
    """A patient-view request for a chart of exactly `resources` resources, as compact JSON bytes."""
    chart = sized_chart(resources, today=TODAY, token=token, scenario=SCENARIO)
    patient = next(r for r in chart if r["resourceType"] == "Patient")
    patient["identifier"] = [*patient.get("identifier", []), {"system": TOKEN_SYSTEM, "value": token}]
    body = build_request(chart, HOOK, hook_instance=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{TOKEN_SYSTEM}:{token}")))
    observations = [r for r in chart if r["resourceType"] == "Observation"]
    body["prefetch"]["observations"] = {"resourceType": "Bundle", "type": "searchset", "total": len(observations),
                                        "entry": [{"resource": r} for r in observations]}
    return json.dumps(body, separators=(",", ":")).encode()
