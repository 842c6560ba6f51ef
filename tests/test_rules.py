"""Every rule of rules.md, as a clinician would check it: with the rule's trigger a visible output
appears (a rule id in a card, a Wells criterion, a topic, an ordered code); in the nearest miss it
does not. The pairs live in fhir_examples/manifest.json (rule_checks)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from cds_service import Settings, create_app

from .conftest import EXAMPLES, SHARED, example_request, load_json, service_for

MANIFEST = load_json(EXAMPLES / "manifest.json")
CHECKS = MANIFEST["rule_checks"]
# Rules the README's clinical section lists as having no separate visible output.
NOT_SEPARATELY_VISIBLE: set[str] = set()


def visible(response: dict[str, Any]) -> set[str]:
    """What a card shows: topics, the rules it applies (its evidence extension), Wells criteria, suggested orders."""
    tokens: set[str] = set()
    for card in response["cards"]:
        tokens.add(card["source"]["topic"]["code"])
        tokens |= {rule for item in card["extension"]["org.example.kneecds.evidence"] for rule in item["rules"]}
        wells = card.get("extension", {}).get("org.example.kneecds.wells")
        if wells:
            tokens.add("org.example.kneecds.wells")
            tokens |= set(wells.get("criteria", []))
        for suggestion in card.get("suggestions", []):
            for action in suggestion["actions"]:
                for coding in action.get("resource", {}).get("code", {}).get("coding", []):
                    tokens.add(f"order:{coding['code']}")
    return tokens


def _answer(tmp_path, name: str, hook: str) -> dict[str, Any]:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'r.db'}",
                              now=MANIFEST["examples"][name]["today"]))
    response = app.test_client().post(f"/cds-services/{service_for(hook)}", json=example_request(name, hook))
    assert response.status_code == 200
    return response.get_json()


@pytest.mark.parametrize("check", CHECKS, ids=[f"{c['rule']}:{c['trigger']}" for c in CHECKS])
def test_trigger_changes_what_the_clinician_sees_and_the_nearest_miss_does_not(tmp_path, check):
    trigger = visible(_answer(tmp_path, check["trigger"], check["hook"]))
    miss = visible(_answer(tmp_path, check["near_miss"], check["hook"]))
    token = check["look_for"]
    if check["absent"]:
        assert token not in trigger and token in miss, (trigger, miss)
    else:
        assert token in trigger and token not in miss, (trigger, miss)


def test_every_rule_of_rules_md_has_a_trigger_and_near_miss_check():
    text = (SHARED / "clinical" / "rules.md").read_text(encoding="utf-8")
    rule_ids = set(re.findall(r"^\| ([A-Z]{1,2}-\d{2}) \|", text, re.M))
    assert len(rule_ids) > 60
    checked = {c["rule"] for c in CHECKS}
    assert rule_ids - checked - NOT_SEPARATELY_VISIBLE == set()
