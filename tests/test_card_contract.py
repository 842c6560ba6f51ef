"""The public card contract (shared/clinical/card-contract.md), checked on every answer the sample
bundles produce."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from markdown_it import MarkdownIt

from cds_service.knowledge import load_knowledge
from cds_service.pipeline import decide
from cds_service.samples import build_request, split_bundle
from cds_service.samples import sample_resources as bundle_resources

from .conftest import EXAMPLES, load_json

KNOWLEDGE = load_knowledge()
MANIFEST = load_json(EXAMPLES / "manifest.json")
CPT = "http://www.ama-assn.org/go/cpt"
LOINC = "http://loinc.org"
TOPIC_SYSTEM = "http://example.org/fhir/CodeSystem/pkp-card-topic"
OVERRIDE_SYSTEM = "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes"
MODALITY_CPT = {"xray": {"73560", "73562", "73564", "73565"}, "mri": {"73721"},
                "us-knee": {"76881", "76882", "93925", "93926"}, "venous-duplex": {"93970", "93971"}}
D_DIMER_LOINC = {"48065-7", "48066-5", "48067-3", "48058-2", "71427-9", "15179-5"}
# card contract: knee right / left / side unknown, lower limb right / left / side unknown
BODY_SITES = {"6757004", "82169009", "72696002", "62175007", "32153003", "61685007"}
WELLS_CRITERIA = {"active-cancer", "paralysis-or-immobilisation", "bedridden-or-major-surgery", "deep-vein-tenderness",
                  "entire-leg-swollen", "calf-swelling-3cm", "pitting-oedema", "collateral-superficial-veins",
                  "previous-dvt", "alternative-diagnosis"}


def _answers() -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    for name in MANIFEST["examples"]:
        resources = bundle_resources(load_json(EXAMPLES / name))
        for hook in ("patient-view", "order-select", "order-sign"):
            request = build_request(resources, hook)
            response = decide(hook, request["context"], split_bundle(resources)[0], KNOWLEDGE, now).response()
            out.append((name, hook, response))
    return out


ANSWERS = _answers()
CARDS = [(f"{n}:{h}:{i}", card) for n, h, r in ANSWERS for i, card in enumerate(r["cards"])]


def _rules(card: dict[str, Any]) -> set[str]:
    return {rule for item in card["extension"]["org.example.kneecds.evidence"] for rule in item["rules"]}


def _creates(card: dict[str, Any]) -> list[dict[str, Any]]:
    return [a["resource"] for s in card.get("suggestions", []) for a in s["actions"] if a["type"] == "create"]


def _codes(resource: dict[str, Any], system: str) -> set[str]:
    return {c["code"] for c in resource["code"]["coding"] if c["system"] == system}


def test_the_samples_produce_plenty_of_cards_to_check():
    assert len(CARDS) > 150


@pytest.mark.parametrize(("name", "hook", "response"), ANSWERS, ids=[f"{n}:{h}" for n, h, _ in ANSWERS])
def test_card_counts_per_topic(name, hook, response):
    topics = Counter(c["source"]["topic"]["code"] for c in response["cards"])
    assert sum(v for k, v in topics.items() if k.startswith("dvt-")) <= 1, "at most one DVT card"
    for topic, count in topics.items():
        if topic not in ("imaging", "imaging-appropriateness"):
            assert count == 1, f"more than one {topic} card"
    imaging = [c for c in response["cards"] if c["source"]["topic"]["code"] == "imaging"]
    modalities = [_modality(c) for c in imaging]
    assert len(modalities) == len(set(modalities)), "one imaging card per modality"


def _modality(card: dict[str, Any]) -> str:
    cpt = set().union(*(_codes(r, CPT) for r in _creates(card)))
    return next(m for m, codes in MODALITY_CPT.items() if cpt & codes)


@pytest.mark.parametrize(("key", "card"), CARDS, ids=[k for k, _ in CARDS])
def test_every_card_keeps_the_contract(key, card):
    topic = card["source"]["topic"]
    assert topic["system"] == TOPIC_SYSTEM and topic["display"]
    assert card["source"]["label"]
    assert len(card["summary"]) <= 140
    assert "Why this card" in card["detail"] and "What to do" in card["detail"]
    assert all(item["rules"] for item in card["extension"]["org.example.kneecds.evidence"])
    if card["indicator"] in ("warning", "critical"):
        assert card["overrideReasons"] and all(r["system"] == OVERRIDE_SYSTEM and r["display"]
                                               for r in card["overrideReasons"])
    if "suggestions" in card:
        assert card["selectionBehavior"] in ("at-most-one", "any")
    wells = card.get("extension", {}).get("org.example.kneecds.wells")
    if wells is not None:
        assert topic["code"].startswith("dvt-")
        assert {"score", "likely", "leg"} <= set(wells) <= {"score", "likely", "leg", "criteria"}
        assert wells["likely"] is (wells["score"] >= 2)
        assert wells["leg"] in ("left", "right", "unknown") and set(wells.get("criteria", [])) <= WELLS_CRITERIA
        assert wells.get("criteria") != []  # no positive criterion: no key
    if topic["code"] in ("imaging",):
        assert _creates(card), "an imaging recommendation is orderable"


@pytest.mark.parametrize(("key", "card"), CARDS, ids=[k for k, _ in CARDS])
def test_every_suggested_order_is_an_orderable_service_request(key, card):
    for resource in _creates(card):
        assert resource["resourceType"] == "ServiceRequest"
        assert resource["status"] == "draft" and resource["intent"] == "proposal"
        assert resource["subject"]["reference"].startswith("Patient/")
        loinc = _codes(resource, LOINC)
        if loinc & D_DIMER_LOINC:
            continue
        assert _codes(resource, CPT) and loinc, "imaging orders carry a CPT and a LOINC code"
        sites = [[c["code"] for c in site["coding"]] for site in resource["bodySite"]]
        assert sites and all(len(codes) == 1 for codes in sites), "one pre-coordinated code per body site"
        assert all(codes[0] in BODY_SITES for codes in sites), sites


@pytest.mark.parametrize(("key", "card"), CARDS, ids=[k for k, _ in CARDS])
def test_dvt_is_only_ever_tested_by_duplex_or_d_dimer(key, card):
    if not card["source"]["topic"]["code"].startswith("dvt-"):
        return
    for resource in _creates(card):
        cpt, loinc = _codes(resource, CPT), _codes(resource, LOINC)
        assert cpt <= MODALITY_CPT["venous-duplex"] and (cpt or loinc & D_DIMER_LOINC), resource["code"]


def test_the_popliteal_artery_study_uses_the_arterial_duplex_codes():
    artery = [card for _, card in CARDS if "K-13" in _rules(card) and card["source"]["topic"]["code"] == "imaging"]
    assert artery
    for card in artery:
        for resource in _creates(card):
            assert _codes(resource, CPT) <= {"93925", "93926"}


RED_FLAG_NAMES = {row["name"] for row in KNOWLEDGE.cards["red_flags"]}
RED_FLAG_CARDS = [(key, card) for key, card in CARDS if card["source"]["topic"]["code"] == "red-flag"]


def test_the_samples_raise_every_red_flag():
    listed = {name for _, card in RED_FLAG_CARDS for name in RED_FLAG_NAMES if f"**{name}**" in card["detail"]}
    assert listed == RED_FLAG_NAMES


@pytest.mark.parametrize(("key", "card"), RED_FLAG_CARDS, ids=[k for k, _ in RED_FLAG_CARDS])
def test_a_red_flag_summary_names_each_flag_on_the_card_and_what_to_do(key, card):
    # Many EHRs show only the summary: "Red flag ... (see details)" told a clinician nothing.
    flags = [name for name in RED_FLAG_NAMES if f"**{name}**" in card["detail"]]
    assert flags and all(name in card["summary"] for name in flags), card["summary"]
    urgencies = [row["urgency"] for row in KNOWLEDGE.cards["red_flags"] if row["name"] in flags]
    assert card["summary"].endswith(urgencies[0] if len(flags) == 1 else "assess each today, as below")



# --- read in seconds (card contract, amended 2026-11-26) -------------------------------------------------------------
REFERENCE = re.compile(r"\b(?:Patient|Condition|Observation|Procedure|MedicationRequest|Encounter|DiagnosticReport|"
                       r"ServiceRequest)/[A-Za-z0-9\-.]+")
RULE_ID = re.compile(r"\b(?:[GWDRPKLN]|RF)-\d{2}\b")
DATUM = re.compile(r"[^\n:;]+? \(\d{4}-\d{2}-\d{2}\)")  # a datum in plain words with its date


@pytest.mark.parametrize(("key", "card"), CARDS, ids=[k for k, _ in CARDS])
def test_a_card_is_read_in_seconds(key, card):
    prose = card["summary"] + "\n" + card["detail"]
    assert len(card["detail"]) < 1200, len(card["detail"])
    assert not REFERENCE.search(prose), REFERENCE.search(prose).group()  # references go to the evidence extension
    assert not RULE_ID.search(prose), RULE_ID.search(prose).group()  # ... and so do rule ids
    assert not [c for c in WELLS_CRITERIA if c in prose]  # criterion ids are for machines (the Wells extension)
    data = [d.strip().lstrip("- ") for d in DATUM.findall(card["detail"])]
    assert len(data) == len(set(data)), [d for d in data if data.count(d) > 1]  # each datum once


@pytest.mark.parametrize(("key", "card"), CARDS, ids=[k for k, _ in CARDS])
def test_every_card_cites_its_evidence_for_machines(key, card):
    items = card["extension"]["org.example.kneecds.evidence"]
    assert items and all(set(item) <= {"reference", "date", "rules"} and item["rules"] for item in items)
    references = [item["reference"] for item in items if "reference" in item]
    assert len(references) == len(set(references))


@pytest.mark.parametrize(("key", "card"), CARDS, ids=[k for k, _ in CARDS])
def test_markdown_renders_as_written(key, card):
    # CommonMark: a paragraph written straight after a list item (no blank line) renders inside that item.
    source = card["detail"].split("\n")
    tokens = MarkdownIt("commonmark").parse(card["detail"])
    depth = 0
    for token in tokens:
        depth += token.type == "list_item_open"
        depth -= token.type == "list_item_close"
        if token.type == "inline" and depth and token.map:
            start, end = token.map
            continued = [line for line in source[start + 1:end] if line and not line.startswith(" ")]
            assert not continued, f"rendered inside a list item: {continued}"
    assert "<li>" in MarkdownIt("commonmark").render(card["detail"]) or "\n- " not in card["detail"]


def test_a_d_dimer_and_the_cyst_ultrasound_may_both_be_ordered():
    [card] = [c for key, c in CARDS if key.startswith("duplex-ordered-wells-0-bakers-cyst.json:order-select")
              and c["source"]["topic"]["code"] == "imaging-appropriateness"]
    assert [s["label"] for s in card["suggestions"]] == ["Add a D-dimer test",
                                                         "Order ultrasound of the popliteal fossa for the cyst"]
    assert card["selectionBehavior"] == "any"
