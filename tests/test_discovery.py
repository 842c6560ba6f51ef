"""Discovery lists exactly the registry's three services, with usable prefetch templates."""

from __future__ import annotations

import re

from cds_service.registry import SERVICES

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
    assert services == [s.discovery_entry() for s in SERVICES]


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
