"""No patient data in the logs (issue 8, item 4), and one JSON line per hook call that an operator can follow.

Every sample request of fhir_examples/requests/ and calls through the FHIR fallback (one with an optional key
failing, one with the Patient read failing, one with a wrong token) run with every logger at DEBUG; the whole
log output is then searched for the patients' ids, names, birth dates, texts, resource ids and the token.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import EXAMPLES, example_request, load_json, service_for

TOKEN = "log-test-token-5f1c9a"
REQUESTS = sorted((EXAMPLES / "requests").glob("*.json"))
# Elements whose string values identify the patient or say something about them.
PATIENT_ELEMENTS = {"id", "given", "family", "birthDate", "text", "div", "valueString", "conclusion", "comment",
                    "display", "line", "city", "postalCode", "value", "reference"}


def patient_strings(document: Any, key: str | None = None) -> set[str]:
    """Every string of a patient element in a request body or bundle (4 characters or more: shorter ones, like
    a "1" id, would be found in any log line)."""
    found: set[str] = set()
    if isinstance(document, dict):
        for name, value in document.items():
            found |= patient_strings(value, name)
    elif isinstance(document, list):
        for value in document:
            found |= patient_strings(value, key)
    elif isinstance(document, str) and key in PATIENT_ELEMENTS and len(document) >= 4:
        found.add(document)
    return found


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """Everything every logger writes at DEBUG and above, formatted as a handler would write it."""
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield output
    root.removeHandler(handler)
    root.setLevel(level)


def _fallback_body(fhir_server: str) -> dict[str, Any]:
    body = example_request("chronic-posterior-knee-pain.json", "order-select", fhir_server)
    del body["prefetch"]
    body["fhirAuthorization"] = {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
                                 "scope": "user/*.read", "subject": "knee-cds"}
    return body


def _call_lines(text: str) -> list[dict[str, Any]]:
    lines = [line.split(" ", 2)[2] for line in text.splitlines() if line.startswith("INFO cds_service.calls ")]
    return [json.loads(line) for line in lines]


def test_no_patient_data_reaches_the_log(client, log_output, fresh_paging_fhir_server):
    sensitive = {TOKEN}
    assert len(REQUESTS) == 5
    for path in REQUESTS:
        body = load_json(path)
        sensitive |= patient_strings(body)
        response = client.post(f"/cds-services/{service_for(body['hook'])}", json=body)
        assert response.status_code == 200, (path.name, response.get_json())

    server = fresh_paging_fhir_server
    chart = example_request("chronic-posterior-knee-pain.json", "order-select")["prefetch"]
    server.load([chart["patient"]] + [e["resource"] for key, value in chart.items() if key != "patient"
                                      for e in value.get("entry", [])])
    sensitive |= patient_strings(chart)
    server.required_token = TOKEN
    server.fail("Encounter", 500)  # optional: the call goes on without it
    fallback = client.post("/cds-services/knee-imaging-select", json=_fallback_body(server.base))
    assert fallback.status_code == 200, fallback.get_json()
    server.fail("Patient", 500)  # required: a 412, and the warning of a failed read by id
    assert client.post("/cds-services/knee-imaging-select", json=_fallback_body(server.base)).status_code == 412
    server.required_token = "another-token"
    assert client.post("/cds-services/knee-imaging-select", json=_fallback_body(server.base)).status_code == 412

    text = log_output.getvalue()
    assert "FHIR fetch for recent-encounters failed" in text  # the failures are logged ...
    assert [found for found in sorted(sensitive) if found in text] == []  # ... and nothing about the patient
    assert "patient=" not in text


def test_each_hook_call_logs_one_json_line_of_what_happened(client, log_output, fresh_paging_fhir_server):
    body = load_json(EXAMPLES / "requests" / "chronic-posterior-knee-pain.order-select.json")
    assert client.post("/cds-services/knee-imaging-select", json=body).status_code == 200
    fresh_paging_fhir_server.load([body["prefetch"]["patient"]])
    fresh_paging_fhir_server.fail("Condition", 503)
    assert client.post("/cds-services/knee-imaging-select",
                       json=_fallback_body(fresh_paging_fhir_server.base)).status_code == 412

    answered, refused = _call_lines(log_output.getvalue())
    assert set(answered) == {"event", "service", "hook", "hookInstance", "status", "latencyMs", "cardTopics",
                             "resourcesRead", "leftOut", "notRead", "missingKeys"}
    # The sample prefetches the Patient and its knee pain Condition, both read by the rules.
    assert {k: v for k, v in answered.items() if k != "latencyMs"} == {
        "event": "hook-call", "service": "knee-imaging-select", "hook": "order-select",
        "hookInstance": body["hookInstance"], "status": 200, "cardTopics": ["imaging-appropriateness"],
        "resourcesRead": 2, "leftOut": 0, "notRead": 0, "missingKeys": []}
    assert answered["latencyMs"] > 0
    assert (refused["status"], refused["cardTopics"]) == (412, [])


def test_the_filter_redacts_patient_references_in_any_logger(client, log_output):
    # A library logging a FHIR URL, with an exception carrying one too.
    library = logging.getLogger("some.library")
    try:
        raise ValueError("GET https://ehr.example.org/fhir/Patient/abc-123 failed")
    except ValueError:
        library.exception("fetching %s", "https://ehr.example.org/fhir/Observation?patient=abc-123&code=8310-5")
    text = log_output.getvalue()
    assert "abc-123" not in text
    assert "Observation?patient=[redacted]&code=8310-5" in text and "Patient/[redacted] failed" in text


def test_a_body_refused_for_its_size_is_logged_with_its_status(client, log_output):
    # Flask refuses a Content-Length over the limit itself: the log line says 413, as the client saw it.
    body = b'{"hook": "patient-view", "pad": "' + b"a" * (10 * 1024 * 1024) + b'"}'
    answer = client.post("/cds-services/posterior-knee-pain", data=body, content_type="application/json")
    assert answer.status_code == 413
    [line] = _call_lines(log_output.getvalue())
    assert line["status"] == 413


def test_the_values_of_calls_in_progress_are_redacted_whole_and_only_while_the_call_runs():
    from cds_service.logs import redact, start_redacting, stop_redacting

    secrets = start_redacting("12", "pat-12", "token.abc")
    try:
        assert redact("patient pat-12 took 120 ms, id 12, token.abc, 12.5") == \
            "patient [redacted] took 120 ms, id [redacted], [redacted], 12.5"
    finally:
        stop_redacting(secrets)
    assert redact("patient pat-12, id 12") == "patient pat-12, id 12"
