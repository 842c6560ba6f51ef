"""Properties that must hold for any record, checked with generated variations of the sample bundles."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_service.chart import build_index
from cds_service.knowledge import load_knowledge
from cds_service.pipeline import decide
from cds_service.samples import build_request, split_bundle
from cds_service.samples import sample_resources as bundle_resources

from .conftest import EXAMPLES, load_json

KNOWLEDGE = load_knowledge()
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
MANIFEST = load_json(EXAMPLES / "manifest.json")
NAMES = sorted(MANIFEST["examples"])
BUNDLES = {name: bundle_resources(load_json(EXAMPLES / name)) for name in NAMES}
PKP = "http://example.org/fhir/CodeSystem/pkp-finding"


def respond(resources: list[dict[str, Any]], hook: str = "patient-view") -> dict[str, Any]:
    request = build_request(resources, hook, hook_instance="00000000-0000-4000-8000-000000000000")
    return decide(hook, request["context"], split_bundle(resources)[0], KNOWLEDGE, NOW).response()


def without_uuids(response: dict[str, Any]) -> str:
    """The response as a clinician and an integrator see it: cards and what was left out or missing, not the count
    of resources no rule reads (which grows with every resource added)."""
    response = copy.deepcopy(response)
    quality = response.get("extension", {}).get("org.example.kneecds.data-quality", {})
    quality.pop("notRead", None)
    if "extension" in response and not quality:
        del response["extension"]
    text = json.dumps(response, sort_keys=True)
    for card in response["cards"]:
        text = text.replace(card["uuid"], "")
        for suggestion in card.get("suggestions", []):
            text = text.replace(suggestion["uuid"], "")
    return text


def wells_of(response: dict[str, Any]) -> int:
    return next(c["extension"]["org.example.kneecds.wells"]["score"] for c in response["cards"] if "extension" in c)


# --- adding a Wells criterion never lowers the score ----------------------------------------------

BASE = BUNDLES["dvt-unlikely-calf-pain.json"]
PID = BASE[0]["id"]


def _finding(code: str, value: Any = True) -> dict[str, Any]:
    resource = {"resourceType": "Observation", "id": f"add-{code}", "status": "final",
                "code": {"coding": [{"system": PKP, "code": code}]}, "subject": {"reference": f"Patient/{PID}"},
                "effectiveDateTime": "2026-11-19"}
    if value is True:
        resource["valueBoolean"] = True
    else:
        resource["valueQuantity"] = {"value": value, "unit": "cm", "system": "http://unitsofmeasure.org", "code": "cm"}
    return resource


def _condition(rid: str, code: str, onset: str) -> dict[str, Any]:
    return {"resourceType": "Condition", "id": rid, "subject": {"reference": f"Patient/{PID}"},
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": code}]},
            "onsetDateTime": onset}


CRITERIA = {
    "active-cancer": _condition("add-cancer", "C34.90", "2026-06-01"),
    "paralysis": _condition("add-paraplegia", "G82.20", "2020-01-01"),
    "previous-dvt": _condition("add-dvt-history", "Z86.718", "2019-01-01"),
    "surgery": {"resourceType": "Procedure", "id": "add-surgery", "status": "completed",
                "subject": {"reference": f"Patient/{PID}"}, "performedDateTime": "2026-10-20",
                "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "27130"}],
                         "text": "Total hip arthroplasty"}},
    "tenderness": _finding("deep-vein-tenderness"),
    "leg-swollen": _finding("entire-leg-swollen"),
    "calf-3cm": _finding("calf-circumference-difference", 3.4),
    "pitting": _finding("pitting-oedema-symptomatic-leg"),
    "collaterals": _finding("collateral-superficial-veins"),
}
ALTERNATIVE = _finding("wells-alternative-diagnosis")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(present=st.sets(st.sampled_from(sorted(CRITERIA))), added=st.sampled_from(sorted(CRITERIA)),
       alternative=st.booleans())
def test_adding_a_wells_criterion_never_lowers_the_score(present, added, alternative):
    extra = [ALTERNATIVE] if alternative else []
    before = respond(BASE + extra + [CRITERIA[k] for k in sorted(present)])
    after = respond(BASE + extra + [CRITERIA[k] for k in sorted(present | {added})])
    assert wells_of(after) >= wells_of(before)
    if added not in present:
        assert wells_of(after) == wells_of(before) + 1


# --- removing all posterior-knee evidence leaves no cards -----------------------------------------

_LEG_SIGN_FINDINGS = {"calf-warmth", "deep-vein-tenderness", "entire-leg-swollen", "pitting-oedema-symptomatic-leg",
                      "collateral-superficial-veins", "calf-circumference-difference", "wells-dvt-score"}


def _is_posterior_evidence(resource: dict[str, Any]) -> bool:
    """Knee pain, posterior diagnoses, and leg signs (which open the DVT safety gate on their own)."""
    rtype = resource["resourceType"]
    if rtype == "ServiceRequest":
        return True  # a draft duplex order is itself a sign that DVT is suspected (G-09 c)
    if rtype not in ("Condition", "Observation"):
        return False
    names = {"knee-pain", "posterior-knee-diagnosis", "calf-leg-signs", "ruptured-bakers-cyst", "dvt"}
    entries = build_index([resource], [], KNOWLEDGE, NOW.date(), UTC).of(rtype)  # the value sets a hook call reads
    if entries and entries[0].concepts & names:
        return True
    codes = {c.get("code") for c in resource.get("code", {}).get("coding", []) if c.get("system") == PKP}
    text = json.dumps(resource).lower()
    return bool(codes & _LEG_SIGN_FINDINGS) or "calf" in text or "swelling of limb" in text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(NAMES), data=st.data())
def test_removing_all_posterior_knee_evidence_yields_no_cards(name, data):
    kept = [r for r in BUNDLES[name] if not _is_posterior_evidence(r)]
    others = [r for r in kept if r["resourceType"] != "Patient"]
    dropped = data.draw(st.sets(st.sampled_from(range(len(others))) if others else st.nothing()))
    kept = [kept[0]] + [r for i, r in enumerate(others) if i not in dropped]
    assert respond(kept)["cards"] == []


# --- entered-in-error resources never change the output ------------------------------------------

_DONORS = [r for name in NAMES for r in BUNDLES[name]
           if r["resourceType"] in ("Condition", "Observation", "Procedure", "MedicationRequest", "DiagnosticReport")]


def _entered_in_error(resource: dict[str, Any], pid: str, n: int) -> dict[str, Any]:
    copied = copy.deepcopy(resource)
    copied["id"] = f"eie-{n}"
    copied["subject"] = {"reference": f"Patient/{pid}"}
    if copied["resourceType"] == "Condition":
        copied["verificationStatus"] = {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "entered-in-error"}]}
    else:
        copied["status"] = "entered-in-error"
    return copied


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(NAMES), donors=st.lists(st.sampled_from(range(len(_DONORS))), max_size=6),
       hook=st.sampled_from(["patient-view", "order-sign"]))
def test_entered_in_error_resources_never_change_the_output(name, donors, hook):
    record = BUNDLES[name]
    pid = record[0]["id"]
    polluted = record + [_entered_in_error(_DONORS[i], pid, n) for n, i in enumerate(donors)]
    assert without_uuids(respond(polluted, hook)) == without_uuids(respond(record, hook))
