"""Knowledge as data: card definitions and value sets, found, loaded and schema-checked once at start-up."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ConfigurationError
from .terminology import Terminology, ValueSet, load_value_sets
from .validation import make_validator


class KnowledgeError(ConfigurationError):
    """Card definitions or value sets are missing or break their schema: the service must not start."""


def locate_cards_dir(configured: str | None = None) -> Path:
    if configured:
        return Path(configured)
    # An installed wheel carries the folder inside the package; an editable install or a checkout
    # does not, so fall back to the repository's top-level cards/.
    packaged = Path(str(resources.files("cds_service"))) / "_data" / "cards"
    if (packaged / "cards.toml").is_file():
        return packaged
    return Path(__file__).resolve().parent.parent / "cards"


@dataclass(frozen=True)
class Knowledge:
    source_dir: Path
    cards: dict[str, Any]
    value_sets: dict[str, ValueSet]
    laterality: tuple[tuple[re.Pattern[str], dict[str, str]], ...] = ()

    @cached_property
    def terminology(self) -> Terminology:
        return Terminology(self.value_sets)

    def card(self, card_id: str) -> dict[str, Any]:
        return self.cards["cards"][card_id]

    def vs(self, name: str) -> ValueSet:
        return self.value_sets[name]

    def icd_side(self, code: str) -> str | None:
        """Side from an ICD-10-CM code by its family (rules.md G-06); None when no family knows it."""
        key = code.replace(".", "").upper()
        for pattern, sides in self.laterality:
            match = pattern.match(key)
            if match:
                char = match.group(1) if match.groups() else ""
                return sides.get(char, "unknown")
        return None


def load_knowledge(configured_dir: str | None = None, required: Iterable[str] = ()) -> Knowledge:
    """The card definitions and value sets, schema-checked; ``required`` names the value sets the facts read."""
    folder = locate_cards_dir(configured_dir)
    try:
        cards = tomllib.loads((folder / "cards.toml").read_text(encoding="utf-8"))
        value_sets = json.loads((folder / "valuesets.json").read_text(encoding="utf-8"))
        laterality = json.loads((folder / "laterality.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KnowledgeError(f"cannot read card definitions in {folder}: {exc}") from exc
    documents = (
        ("card-definitions.schema.json", cards),
        ("valuesets.schema.json", value_sets),
        ("laterality.schema.json", laterality),
    )
    for schema, document in documents:
        errors = sorted(make_validator(schema).iter_errors(document), key=lambda e: list(e.absolute_path))
        if errors:
            where = "/".join(str(p) for p in errors[0].absolute_path)
            raise KnowledgeError(f"{folder}: {schema} violated at {where}: {errors[0].message}")
    for card_id, card in cards["cards"].items():
        if card["source"] not in cards.get("sources", {}):
            raise KnowledgeError(f"card {card_id} names unknown source {card['source']}")
        reasons = card.get("override_reasons")
        if reasons and reasons not in cards["override_reason_sets"]:
            raise KnowledgeError(f"card {card_id} names unknown override reason set {reasons}")
        if card["indicator"] in ("warning", "critical") and not reasons:
            raise KnowledgeError(f"{card['indicator']} card {card_id} must offer override reasons")
    flag_sets = {source.partition(":")[2] for flag in cards["red_flags"] for alternative in flag["when"]
                 for source in alternative if source.startswith("condition:")}
    missing = sorted((set(required) | flag_sets) - set(value_sets))
    if missing:
        raise KnowledgeError(f"{folder}/valuesets.json lacks value sets the rules read: {', '.join(missing)}")
    families = tuple((re.compile(f["pattern"]), f["sides"]) for f in laterality)
    knowledge = Knowledge(folder, cards, load_value_sets(value_sets), families)
    knowledge.terminology  # noqa: B018 - compile the text matcher at start-up, not on the first call
    return knowledge
