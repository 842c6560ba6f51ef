"""Each sample bundle gives the cards its manifest promises, over HTTP and through the CLI, and every
response keeps the CDS Hooks 2.0 and card-contract shape."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from cds_service import Settings, create_app
from cds_service.cli import main as cli_main
from cds_service.validation import make_validator

from .conftest import EXAMPLES, SHARED, example_request, load_json, service_for

MANIFEST = load_json(EXAMPLES / "manifest.json")
CASES = [(name, hook, spec["today"], expected)
         for name, spec in MANIFEST["examples"].items() for hook, expected in spec["expect"].items()]
IDS = [f"{name}:{hook}" for name, hook, _, _ in CASES]
RESPONSE_SCHEMA = make_validator("response.schema.json")


def _summary(cards: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"topic": c["source"]["topic"]["code"], "indicator": c["indicator"]} for c in cards]


def _post(tmp_path, name: str, hook: str, today: str) -> dict[str, Any]:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'f.db'}", now=today))
    response = app.test_client().post(f"/cds-services/{service_for(hook)}", json=example_request(name, hook))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


WELLS = "org.example.kneecds.wells"


def _wells(cards: list[dict[str, Any]]) -> dict[str, Any] | None:
    found = [c["extension"][WELLS] for c in cards if WELLS in c.get("extension", {})]
    # No positive criterion: no `criteria` key (never an empty list in a response)
    return {"score": found[0]["score"], "leg": found[0]["leg"], "criteria": found[0].get("criteria", [])} \
        if found else None


def test_every_example_bundle_is_in_the_manifest():
    bundles = {p.name for p in EXAMPLES.glob("*.json") if p.name != "manifest.json"}
    assert bundles == set(MANIFEST["examples"])


def test_the_committed_examples_are_what_the_generator_writes():
    result = subprocess.run([sys.executable, str(EXAMPLES / "make_examples.py"), "--check"], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(("name", "hook", "today", "expected"), CASES, ids=IDS)
def test_http_response_matches_the_manifest(tmp_path, name, hook, today, expected):
    cards = _post(tmp_path, name, hook, today)["cards"]
    assert _summary(cards) == expected["cards"]
    if "wells" in expected:
        assert _wells(cards) == expected["wells"]
    if not any(c["topic"].startswith("dvt-") for c in expected["cards"]):
        assert _wells(cards) is None


@pytest.mark.parametrize(("name", "hook", "today", "expected"), CASES, ids=IDS)
def test_cli_prints_the_same_cards(capsys, name, hook, today, expected):
    assert cli_main(["evaluate", str(EXAMPLES / name), "--hook", hook, "--now", today, "--json"]) == 0
    cards = json.loads(capsys.readouterr().out)["cards"]
    assert _summary(cards) == expected["cards"]
    if "wells" in expected:
        assert _wells(cards) == expected["wells"]


def _walk(value: Any, path: str = "$"):
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{path}[{i}]")


@pytest.mark.parametrize(("name", "hook", "today", "expected"), CASES, ids=IDS)
def test_response_is_valid_cds_hooks_with_no_empty_values(tmp_path, name, hook, today, expected):
    body = _post(tmp_path, name, hook, today)
    errors = [e.message for e in RESPONSE_SCHEMA.iter_errors(body)]
    assert not errors
    for path, value in _walk(body):
        assert value is not None, f"null at {path}"
        # The one empty value allowed: no cards at all (CDS Hooks requires the key).
        assert value not in ("", [], {}) or path == "$.cards", f"empty value at {path}"
    extension_keys = [key for extension in [body.get("extension", {})] + [c.get("extension", {}) for c in body["cards"]]
                      for key in extension]
    assert all(key.startswith("org.example.kneecds.") for key in extension_keys), extension_keys
    uuids = [c["uuid"] for c in body["cards"]] + [s["uuid"] for c in body["cards"] for s in c.get("suggestions", [])]
    assert len(uuids) == len(set(uuids))
    for value in uuids:
        uuid.UUID(value)


@pytest.mark.parametrize(("name", "hook", "today", "expected"), CASES, ids=IDS)
def test_every_fhir_resource_in_a_suggestion_is_valid_r4(tmp_path, name, hook, today, expected):
    body = _post(tmp_path, name, hook, today)
    for card in body["cards"]:
        for suggestion in card.get("suggestions", []):
            for action in suggestion["actions"]:
                if "resource" in action:
                    resource = action["resource"]
                    get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def test_the_mri_card_replaces_the_draft_with_an_orderable_xray(tmp_path):
    body = _post(tmp_path, "chronic-posterior-knee-pain.json", "order-sign", "2026-11-20")
    card = body["cards"][0]
    assert card["selectionBehavior"] == "at-most-one" and card["overrideReasons"]
    actions = card["suggestions"][0]["actions"]
    assert actions[0] == {"type": "delete", "description": actions[0]["description"],
                          "resourceId": "ServiceRequest/pkp-chronic-01-draft-mri-1"}
    request = actions[1]["resource"]
    systems = {c["system"]: c["code"] for c in request["code"]["coding"]}
    assert systems["http://www.ama-assn.org/go/cpt"] in {"73560", "73562", "73564", "73565"}
    assert systems["http://loinc.org"] == "24805-4"
    assert request["status"] == "draft" and request["intent"] == "proposal"
    assert request["subject"] == {"reference": "Patient/pkp-chronic-01"}
    assert request["reasonReference"] == [{"reference": "Condition/pkp-chronic-01-cond-1"}]
    # One pre-coordinated code per site: a side is never a second coding (codings are alternatives).
    assert request["bodySite"] == [{"coding": [{"system": "http://snomed.info/sct", "code": "6757004",
                                                "display": "Structure of right knee region"}]}]


def test_cards_explain_what_triggered_them_with_dates_and_source(tmp_path):
    body = _post(tmp_path, "chronic-posterior-knee-pain.json", "order-select", "2026-11-20")
    card = body["cards"][0]
    pain = "Condition/pkp-chronic-01-cond-1"
    assert "2026-08-12" in card["detail"] and pain not in card["detail"]
    assert {"reference": pain, "date": "2026-08-12"}.items() <= \
        next(i for i in card["extension"]["org.example.kneecds.evidence"] if i["reference"] == pain).items()
    assert card["source"]["label"].startswith("ACR Appropriateness Criteria")
    assert card["source"]["url"].startswith("https://")


def test_the_samples_cover_every_topic_of_the_card_contract():
    contract = (SHARED / "clinical" / "card-contract.md").read_text(encoding="utf-8")
    topics = set(re.findall(r"^\| `([a-z-]+)` \|", contract, re.M)) - {"posterior-knee-pain", "knee-imaging-select",
                                                                        "knee-imaging-sign"}
    covered = {c["topic"] for _, _, _, expected in CASES for c in expected["cards"]}
    assert len(topics) == 10
    # K-14 (assessment) fires only where L-07 does (pain behind the knee, no explaining diagnosis; chronic), and the
    # contract folds it into that differential card: its advice is checked there, as rule K-14.
    assert topics - {"assessment"} <= covered, topics - covered
    assert any("K-14" in check["rule"] for check in MANIFEST["rule_checks"])
