"""The decision pipeline shared by the HTTP hooks and the CLI: parse → facts → rules → cards."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import rules
from .cards import CardBuilder
from .facts import build_facts
from .knowledge import Knowledge
from .parse import Rejected, parse_record
from .prefetch import DataGap

INDICATOR_ORDER = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class Decision:
    cards: list[dict[str, Any]]
    rejected: tuple[Rejected, ...]
    gaps: tuple[DataGap, ...]

    def response(self) -> dict[str, Any]:
        body: dict[str, Any] = {"cards": self.cards}
        quality: dict[str, Any] = {}
        if self.rejected:
            quality["leftOut"] = [r.as_json() for r in self.rejected]
        if self.gaps:
            quality["missing"] = [g.as_json() for g in self.gaps]
        if quality:
            body["extension"] = {"pkp-data-quality": quality}
        return body


def draft_order_resources(context: dict[str, Any], hook: str) -> list[dict[str, Any]]:
    """The draft ServiceRequests a hook asks about: the selected ones for order-select, all for order-sign."""
    entries = (context.get("draftOrders") or {}).get("entry") or []
    orders = [e["resource"] for e in entries if e.get("resource", {}).get("resourceType") == "ServiceRequest"]
    if hook == "order-select":
        selected = set(context.get("selections") or [])
        orders = [o for o in orders if f"ServiceRequest/{o.get('id')}" in selected]
    return orders


def decide(
    hook: str,
    context: dict[str, Any],
    patient_resources: tuple[dict[str, Any], ...] | list[dict[str, Any]],
    knowledge: Knowledge,
    now: datetime,
    gaps: tuple[DataGap, ...] = (),
    card_builder: CardBuilder | None = None,
) -> Decision:
    record = parse_record(list(patient_resources) + draft_order_resources(context, hook))
    drafts = tuple(r for r in record.of("ServiceRequest") if r.status == "draft")
    facts = build_facts(record, knowledge, now, drafts)
    builder = card_builder or CardBuilder(knowledge)
    findings = rules.evaluate(facts, hook, builder.modality_of)
    cards = [builder.build(f, context["patientId"], record.rejected, facts.today) for f in findings]
    cards.sort(key=lambda c: INDICATOR_ORDER[c["indicator"]])
    return Decision(cards, record.rejected, gaps)
