"""Every `format` the project's schemas use is checked: a value that breaks one is refused (400 for a request, no
start for a card definition), whichever optional jsonschema libraries happen to be installed."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from cds_service.knowledge import KnowledgeError, load_knowledge
from cds_service.validation import SCHEMA_FORMATS

from .conftest import ROOT, example_request

SCHEMAS = ROOT / "cds_service" / "schemas"


def _formats(node: Any, in_properties: bool = False) -> Iterator[str]:
    """The `format` keywords of a schema (a property that happens to be named "format" is not one)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "format" and isinstance(value, str) and not in_properties:
                yield value
            yield from _formats(value, key in ("properties", "patternProperties"))
    elif isinstance(node, list):
        for value in node:
            yield from _formats(value)


def test_the_checker_knows_every_format_the_schemas_use():
    used = {f for path in SCHEMAS.glob("*.json") for f in _formats(json.loads(path.read_text()))}
    assert used == set(SCHEMA_FORMATS)


@pytest.mark.parametrize(("change", "refusal"), [
    (lambda body: body.update(hookInstance="not-a-uuid"), "'not-a-uuid' is not a 'uuid'"),
    (lambda body: body.update(fhirServer="https://fhir example.org/r4"), "'https://fhir example.org/r4' is not a 'uri'"),
])
def test_a_hook_request_breaking_a_format_is_refused(client, change, refusal):
    body = example_request("bakers-cyst.json", "patient-view")
    change(body)
    response = client.post("/cds-services/posterior-knee-pain", json=body)
    assert response.status_code == 400
    assert refusal in response.get_json()["issue"][0]["diagnostics"]


def test_feedback_with_an_impossible_date_time_is_refused(client):
    # 30 February passes the FHIR instant pattern of the schema; only the date-time format refuses it.
    item = {"card": str(uuid.uuid4()), "outcome": "overridden", "outcomeTimestamp": "2026-02-30T10:00:00Z"}
    response = client.post("/cds-services/posterior-knee-pain/feedback", json={"feedback": [item]})
    assert response.status_code == 400
    assert "'2026-02-30T10:00:00Z' is not a 'date-time'" in response.get_json()["issue"][0]["diagnostics"]


def test_a_card_source_url_that_is_not_a_uri_stops_the_service(tmp_path):
    cards = tmp_path / "cards"
    shutil.copytree(ROOT / "cards", cards)
    toml = cards / "cards.toml"
    toml.write_text(toml.read_text().replace('url = "https://www.nice.org.uk/guidance/ng158"',
                                             'url = "https://www.nice.org.uk/guidance/ng 158"', 1))
    with pytest.raises(KnowledgeError, match="is not a 'uri'"):
        load_knowledge(str(cards))
