"""Discovery lists exactly the registry's three services, with usable prefetch templates."""

from __future__ import annotations

import re

from cds_service.knowledge import load_knowledge
from cds_service.registry import resolve_services

EXPECTED = {
    "posterior-knee-pain": "patient-view",
    "knee-imaging-select": "order-select",
    "knee-imaging-sign": "order-sign",
}


def test_discovery_lists_the_three_services_with_their_hooks(client):
    response = client.get("/cds-services")
    assert response.status_code == 200
    services = response.get_json()["services"]
    assert {s["id"]: s["hook"] for s in services} == EXPECTED
    for service in services:
        assert service["title"] and service["description"] and service["usageRequirements"]


def test_discovery_is_generated_from_the_registry(client):
    services = client.get("/cds-services").get_json()["services"]
    assert services == [s.discovery_entry() for s in resolve_services(load_knowledge().terminology)]


def test_code_filters_come_from_the_value_sets_the_rules_read(client):
    prefetch = client.get("/cds-services").get_json()["services"][0]["prefetch"]
    observations = prefetch["observations"]
    # a D-dimer LOINC code, an exam finding of the local code system, a leg-sign SNOMED code
    for code in ("48065-7", "calf-warmth", "300954003"):
        assert code in observations.split("code=")[1].split("&")[0].split(",")
    # the latest-only vitals have their own newest-first keys
    assert "39156-5" not in observations
    assert prefetch["latest-bmi"] == "Observation?patient={{context.patientId}}&code=39156-5&_sort=-date&_count=3"
    assert prefetch["exam-findings"] == \
        "Observation?patient={{context.patientId}}&category=exam&_sort=-date&_count=100"
    assert prefetch["recent-temperatures"] == \
        "Observation?patient={{context.patientId}}&code=8310-5&_sort=-date&_count=100"
    assert "73721" in prefetch["procedures"] and "73721" in prefetch["reports"]  # knee MRI (CPT)


def test_prefetch_templates_use_only_standard_context_tokens(client):
    for service in client.get("/cds-services").get_json()["services"]:
        keys = set(service["prefetch"])
        assert {"patient", "conditions", "observations"} <= keys
        for template in service["prefetch"].values():
            tokens = re.findall(r"\{\{([^}]*)\}\}", template)
            assert tokens == ["context.patientId"], template
        assert service["prefetch"]["patient"] == "Patient/{{context.patientId}}"


def test_usage_requirements_name_required_and_optional_data(client):
    service = client.get("/cds-services").get_json()["services"][0]
    assert "412" in service["usageRequirements"]
    assert "procedures" in service["usageRequirements"]
