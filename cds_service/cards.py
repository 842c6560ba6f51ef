"""Cards step: findings to CDS Hooks cards, worded by the definitions in cards/cards.toml."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from .knowledge import Knowledge
from .parse import Rejected
from .rules import Finding

CPT = "http://www.ama-assn.org/go/cpt"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"

# Orderable studies (card-contract.md "Imaging suggestions are orderable FHIR").
ORDERABLES: dict[str, dict[str, Any]] = {
    "xray": {
        "text": "Knee radiographs, weight-bearing (AP standing and lateral)",
        "coding": [
            {"system": CPT, "code": "73562", "display": "Radiologic examination, knee; 3 views"},
            {"system": LOINC, "code": "24805-4", "display": "XR Knee AP and Lateral W standing"},
        ],
    },
}
_SIDE_CODING = {
    "right": {"system": SNOMED, "code": "24028007", "display": "Right"},
    "left": {"system": SNOMED, "code": "7771000", "display": "Left"},
    "both": {"system": SNOMED, "code": "51440002", "display": "Right and left"},
}


def service_request(modality: str, patient_id: str, side: str, reasons: tuple[str, ...]) -> dict[str, Any]:
    orderable = ORDERABLES[modality]
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "proposal",
        "code": {"coding": orderable["coding"], "text": orderable["text"]},
        "subject": {"reference": f"Patient/{patient_id}"},
    }
    site: dict[str, Any] = {"coding": [{"system": SNOMED, "code": "72696002", "display": "Knee region structure"}]}
    if side in _SIDE_CODING:
        site["coding"].append(_SIDE_CODING[side])
        site["text"] = f"{side} knee" if side != "both" else "both knees"
    resource["bodySite"] = [site]
    if reasons:
        resource["reasonReference"] = [{"reference": r} for r in reasons]
    return resource


def _side_phrase(side: str) -> str:
    return {"right": "right ", "left": "left ", "both": ""}.get(side, "")


class CardBuilder:
    def __init__(self, knowledge: Knowledge, new_uuid: Callable[[], str] = lambda: str(uuid.uuid4())):
        self.knowledge = knowledge
        self.new_uuid = new_uuid

    def build(self, finding: Finding, patient_id: str, rejected: tuple[Rejected, ...]) -> dict[str, Any]:
        definition = self.knowledge.card(finding.card_id)
        source_def = self.knowledge.cards["sources"][definition["source"]]
        values = {
            "side_phrase": _side_phrase(finding.side),
            "evidence": "\n".join(finding.evidence),
            "order": finding.order.label if finding.order else "",
        }
        detail = definition["detail"].strip().format_map(values)
        caveat = [r for r in rejected if r.resource_type in finding.reads]
        if caveat:
            refs = ", ".join(r.reference for r in caveat[:5])
            detail += (
                f"\n\n**Data left out:** {len(caveat)} record(s) could not be read ({refs}) and were not "
                "considered; they could have changed this advice."
            )
        detail += f"\n\n*Rule {definition['rule']}.*"
        source: dict[str, Any] = {
            "label": source_def["label"],
            "topic": {
                "system": self.knowledge.cards["topic_system"],
                "code": definition["topic"],
                "display": definition["topic_display"],
            },
        }
        if "url" in source_def:
            source["url"] = source_def["url"]
        card: dict[str, Any] = {
            "uuid": self.new_uuid(),
            "summary": definition["summary"].format_map(values)[:140],
            "detail": detail,
            "indicator": definition["indicator"],
            "source": source,
        }
        if definition.get("override_reasons"):
            card["overrideReasons"] = self.knowledge.cards["override_reason_sets"][definition["override_reasons"]]
        suggestions = self._suggestions(finding, definition, patient_id)
        if suggestions:
            card["suggestions"] = suggestions
            card["selectionBehavior"] = "at-most-one"
        return card

    def _suggestions(self, finding: Finding, definition: dict[str, Any], patient_id: str) -> list[dict[str, Any]]:
        labels = definition.get("suggestion_labels", {})
        if finding.card_id == "mri-before-xray" and finding.order is not None:
            request = service_request("xray", patient_id, finding.side, finding.reasons)
            return [
                {
                    "label": labels["replace"],
                    "uuid": self.new_uuid(),
                    "isRecommended": True,
                    "actions": [
                        {
                            "type": "delete",
                            "description": f"Remove the draft MRI order ({finding.order.label})",
                            "resourceId": finding.order.reference,
                        },
                        {"type": "create", "description": request["code"]["text"], "resource": request},
                    ],
                }
            ]
        return []
