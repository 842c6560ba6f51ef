"""The decision pipeline shared by the HTTP hooks and the CLI: chart index → facts → rules → cards."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

from . import rules
from .cards import DATA_QUALITY_EXTENSION, CardBuilder
from .chart import Rejected, build_index
from .facts import build_facts
from .knowledge import Knowledge
from .prefetch import DataGap

INDICATOR_ORDER = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class Decision:
    cards: list[dict[str, Any]]
    rejected: tuple[Rejected, ...]
    gaps: tuple[DataGap, ...]
    not_read: int = 0  # resources no rule reads: not validated, not listed
    # card uuid -> the rules that made the card (the card log's; the card shows them only as links to rule pages)
    card_rules: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def response(self) -> dict[str, Any]:
        body: dict[str, Any] = {"cards": self.cards}
        quality: dict[str, Any] = {}
        if self.rejected:
            quality["leftOut"] = [r.as_json() for r in self.rejected]
        if self.gaps:
            quality["missing"] = [g.as_json() for g in self.gaps]
        if self.not_read:
            quality["notRead"] = self.not_read
        if quality:
            body["extension"] = {DATA_QUALITY_EXTENSION: quality}
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
    zone: tzinfo = UTC,
    rule_book: rules.RuleBook | None = None,
    rules_url: str | None = None,
) -> Decision:
    drafts = [d for d in draft_order_resources(context, hook) if d.get("status") == "draft"]
    index = build_index(patient_resources, drafts, knowledge, now.date(), zone)
    facts = build_facts(index, now)
    builder = card_builder or CardBuilder(knowledge)
    findings = rules.evaluate(facts, hook, rule_book or rules.RuleBook.from_cards(knowledge.cards))
    missing = tuple(gap.key for gap in gaps)
    cards = [builder.build(f, context["patientId"], index.rejected, facts.today, missing, rules_url) for f in findings]
    card_rules = {card["uuid"]: finding.rules for card, finding in zip(cards, findings, strict=True)}
    cards.sort(key=lambda c: INDICATOR_ORDER[c["indicator"]])
    return Decision(cards, index.rejected, gaps, index.not_read, card_rules)
