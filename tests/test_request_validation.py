"""Every CDS Hooks request the spec artifacts show is accepted; every broken one is a clear 400/404/415."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import httpx
import pytest
from fhir.resources.R4B.operationoutcome import OperationOutcome
from hypothesis import given, settings
from hypothesis import strategies as st

from cds_service import create_app
from cds_service.validation import Validators, load_schema

from .conftest import ARTIFACTS, load_json, service_for

HOOKS = ("patient-view", "order-select", "order-sign")


def json_blocks(text: str) -> list[dict]:
    """The ```json blocks of a spec page; fragments like `"context": {...}` are wrapped in braces."""
    blocks = []
    for block in re.findall(r"```json\n(.*?)```", text, re.S):
        block = block.strip()
        blocks.append(json.loads(block if block.startswith("{") else "{" + block + "}"))
    return blocks


def _artifact_requests() -> list[tuple[str, dict]]:
    found = []
    for path in sorted((ARTIFACTS / "examples").glob("*/*.json")):
        document = load_json(path)
        if isinstance(document, dict) and document.get("hook") in HOOKS and "context" in document:
            found.append((path.name, document))
    spec = (ARTIFACTS / "spec-text" / "cds-hooks-2.0.1-index.md").read_text(encoding="utf-8")
    for i, document in enumerate(json_blocks(spec)):
        if document.get("hook") in HOOKS and "patientId" in document.get("context", {}):
            found.append((f"spec-index-block-{i}", document))
    return found


def _hook_context_examples() -> list[tuple[str, str, dict]]:
    found = []
    for hook in HOOKS:
        text = (ARTIFACTS / "spec-text" / f"hook-{hook}-library-1.0.1.md").read_text(encoding="utf-8")
        for i, block in enumerate(json_blocks(text)):
            found.append((f"{hook}-{i}", hook, block["context"]))
    return found


ARTIFACT_REQUESTS = _artifact_requests()
CONTEXT_EXAMPLES = _hook_context_examples()


def test_the_artifacts_hold_examples_for_all_three_hooks():
    hooks = {doc["hook"] for _, doc in ARTIFACT_REQUESTS} | {hook for _, hook, _ in CONTEXT_EXAMPLES}
    assert hooks == set(HOOKS)
    assert len(ARTIFACT_REQUESTS) >= 3


@pytest.mark.parametrize(("name", "request_body"), ARTIFACT_REQUESTS, ids=[n for n, _ in ARTIFACT_REQUESTS])
def test_every_artifact_request_passes_the_schemas(name, request_body):
    validators = Validators.load()
    assert not list(validators.request.iter_errors(request_body))
    assert not list(validators.contexts[request_body["hook"]].iter_errors(request_body["context"]))


@pytest.mark.parametrize(("name", "hook", "context"), CONTEXT_EXAMPLES, ids=[n for n, _, _ in CONTEXT_EXAMPLES])
def test_every_hook_definition_context_example_passes(name, hook, context):
    assert not list(Validators.load().contexts[hook].iter_errors(context))


def _unreachable_fhir(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("no route to host", request=request)


@pytest.mark.parametrize(("name", "request_body"), ARTIFACT_REQUESTS, ids=[n for n, _ in ARTIFACT_REQUESTS])
def test_artifact_requests_are_accepted_and_end_in_412_when_their_fhir_server_is_unreachable(
    settings, name, request_body
):
    # The examples prefetch nothing this service asks for and name a FHIR server that does not
    # answer here: the request is valid (not 400) and the data cannot be had (412).
    app = create_app(settings, fhir_transport=httpx.MockTransport(_unreachable_fhir))
    response = app.test_client().post(f"/cds-services/{service_for(request_body['hook'])}", json=request_body)
    assert response.status_code == 412, response.get_json()
    assert response.get_json()["issue"][0]["code"] == "incomplete"


def _required_paths(body: dict) -> list[tuple[str, ...]]:
    request_schema = load_schema("request.schema.json")
    context_schema = load_schema(f"context-{body['hook']}.schema.json")
    paths = [(k,) for k in request_schema["required"]]
    paths += [("context", k) for k in context_schema["required"]]
    if "fhirAuthorization" in body:
        paths.append(("fhirServer",))
        fa_required = request_schema["properties"]["fhirAuthorization"]["required"]
        paths += [("fhirAuthorization", k) for k in fa_required]
    if "draftOrders" in body["context"]:
        paths.append(("context", "draftOrders", "resourceType"))
    return paths


DROP_CASES = [
    (name, path) for name, body in ARTIFACT_REQUESTS for path in _required_paths(body)
]


@pytest.mark.parametrize(("name", "path"), DROP_CASES, ids=[f"{n}:{'.'.join(p)}" for n, p in DROP_CASES])
def test_dropping_any_required_field_is_a_400_naming_it(client, name, path):
    body = copy.deepcopy(dict(ARTIFACT_REQUESTS)[name])
    target = body
    for part in path[:-1]:
        target = target[part]
    del target[path[-1]]
    response = client.post(f"/cds-services/{service_for(dict(ARTIFACT_REQUESTS)[name]['hook'])}", json=body)
    assert response.status_code == 400
    issue = response.get_json()["issue"][0]
    assert issue["expression"] == [".".join(path)]


def test_the_spec_extension_example_without_patient_id_is_rejected(client):
    spec = (ARTIFACTS / "spec-text" / "cds-hooks-2.0.1-index.md").read_text(encoding="utf-8")
    body = next(d for d in json_blocks(spec) if d.get("hook") == "patient-view" and "extension" in d)
    response = client.post("/cds-services/posterior-knee-pain", json=body)
    assert response.status_code == 400
    assert response.get_json()["issue"][0]["expression"] == ["context.patientId"]


def test_a_draft_orders_bundle_without_type_is_accepted(client):
    body = dict(ARTIFACT_REQUESTS)["scenario-01-outbound-request.json"]
    assert "type" not in body["context"]["draftOrders"]
    assert not list(Validators.load().contexts["order-select"].iter_errors(body["context"]))


def test_a_draft_order_entry_without_resource_type_is_a_400_naming_the_entry(client):
    body = copy.deepcopy(dict(ARTIFACT_REQUESTS)["scenario-01-outbound-request.json"])
    del body["context"]["draftOrders"]["entry"][0]["resource"]["resourceType"]
    response = client.post("/cds-services/knee-imaging-select", json=body)
    assert response.status_code == 400
    assert response.get_json()["issue"][0]["expression"] == ["context.draftOrders.entry[0].resource.resourceType"]


def test_a_request_for_another_hook_is_a_400(client):
    body = dict(ARTIFACT_REQUESTS)["Binary-CDSHooksRequestPV.json"]
    response = client.post("/cds-services/knee-imaging-sign", json=body)
    assert response.status_code == 400
    assert response.get_json()["issue"][0]["expression"] == ["hook"]


def test_hook_instance_must_be_a_uuid(client):
    body = copy.deepcopy(dict(ARTIFACT_REQUESTS)["Binary-CDSHooksRequestPV.json"])
    body["hookInstance"] = "not-a-uuid"
    response = client.post("/cds-services/posterior-knee-pain", json=body)
    assert response.status_code == 400
    assert response.get_json()["issue"][0]["expression"] == ["hookInstance"]


def test_malformed_json_is_a_400(client):
    response = client.post("/cds-services/posterior-knee-pain", data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert "not valid JSON" in response.get_json()["issue"][0]["diagnostics"]


def test_a_json_array_body_is_a_400_not_a_500(client):
    response = client.post("/cds-services/posterior-knee-pain", json=[1, 2])
    assert response.status_code == 400


def test_wrong_content_type_is_a_415(client):
    response = client.post("/cds-services/posterior-knee-pain", data="hook=patient-view",
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert response.get_json()["issue"][0]["code"] == "not-supported"


def test_unknown_service_is_a_404(client):
    response = client.post("/cds-services/no-such-service", json={})
    assert response.status_code == 404
    assert response.get_json()["issue"][0]["code"] == "not-found"


def test_unknown_route_and_wrong_method_answer_with_the_same_error_shape(client):
    cases = ((client.get("/nothing-here"), 404), (client.get("/cds-services/posterior-knee-pain"), 405))
    for response, status in cases:
        assert response.status_code == status
        OperationOutcome.model_validate(response.get_json())


ERROR_CASES = [
    ("malformed json", dict(data="{", content_type="application/json"), 400),
    ("schema violation", dict(json={"hook": "patient-view"}), 400),
    ("wrong content type", dict(data="x", content_type="text/plain"), 415),
]


@pytest.mark.parametrize(("label", "kwargs", "status"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_every_error_body_is_a_fhir_operation_outcome_without_internals(client, label, kwargs, status):
    response = client.post("/cds-services/posterior-knee-pain", **kwargs)
    assert response.status_code == status
    assert response.mimetype == "application/fhir+json"
    body = response.get_json()
    outcome = OperationOutcome.model_validate(body)
    issue = outcome.issue[0]
    assert issue.severity == "error" and issue.code and issue.diagnostics
    assert "Traceback" not in response.get_data(as_text=True)


def test_an_unexpected_failure_is_a_500_operation_outcome_without_a_trace(settings):
    def exploding(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("secret internal detail")

    app = create_app(settings, fhir_transport=httpx.MockTransport(exploding))
    body = dict(ARTIFACT_REQUESTS)["Binary-CDSHooksRequestPV.json"]
    response = app.test_client().post("/cds-services/posterior-knee-pain", json=body)
    assert response.status_code == 500
    text = response.get_data(as_text=True)
    assert "secret internal detail" not in text and "Traceback" not in text
    OperationOutcome.model_validate(response.get_json())


def test_schemas_in_the_package_are_valid_draft_2020_12():
    from jsonschema import Draft202012Validator

    folder = Path(__file__).resolve().parent.parent / "cds_service" / "schemas"
    for path in folder.glob("*.json"):
        Draft202012Validator.check_schema(load_json(path))


# --- the fast yes (jsonschema-rs) says yes only where jsonschema does --------------------------------

_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                     max_leaves=8)
_VALIDATORS = Validators.load()
_TRICKY = st.sampled_from([
    "", "p", "p\n", "p ", "Practitioner/1", "Practitioner/1\n", "Patient/٣", "PractitionerRole/a.b-c", "x" * 65,
    "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea", "D1577C69-DFBE-44AD-BA6D-3E05E953B2EA", "d1577c69dfbe44adba6d3e05e953b2ea",
    "{d1577c69-dfbe-44ad-ba6d-3e05e953b2ea}", "urn:uuid:d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
    "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea\n", "https://ehr.example.org/fhir", "http://x", "https://ehr example.org",
    "https://ehr.example.org/fhir\n", "https://[::1]:8080/r4", "https://ehr.example.org/ü", "ftp://x", "https://",
    "Bearer", "bearer", "tok\u00e9n", "tok en", "Bundle", "Patient", "bundle", "\ud800",
])
_VALUE = st.one_of(_TRICKY, st.text(max_size=12), st.integers(min_value=-2, max_value=2), st.floats(allow_nan=False),
                   st.none(), st.booleans())
_RESOURCE = st.fixed_dictionaries({"resourceType": _VALUE}, optional={"id": _VALUE, "entry": _JSON, "link": _JSON})
_VALID = {
    "hook": "order-select", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
    "fhirServer": "https://ehr.example.org/fhir",
    "fhirAuthorization": {"access_token": "t", "token_type": "Bearer", "expires_in": 300, "scope": "patient/*.read",
                          "subject": "app", "patient": "p"},
    "context": {"userId": "Practitioner/1", "patientId": "p", "encounterId": "e", "selections": ["ServiceRequest/s"],
                "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "ServiceRequest",
                                                                                  "id": "s"}}]}},
    "prefetch": {"patient": {"resourceType": "Patient", "id": "p"}, "conditions": None,
                 "observations": {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Observation"}}],
                                  "link": [{"relation": "self", "url": "https://ehr.example.org/fhir/Observation"}]}},
}
_PLACES = [("hook",), ("hookInstance",), ("fhirServer",), ("fhirAuthorization",), ("fhirAuthorization", "access_token"),
           ("fhirAuthorization", "token_type"), ("fhirAuthorization", "expires_in"), ("fhirAuthorization", "scope"),
           ("context",), ("context", "userId"), ("context", "patientId"), ("context", "encounterId"),
           ("context", "draftOrders"), ("context", "draftOrders", "resourceType"), ("context", "draftOrders", "entry"),
           ("prefetch",), ("prefetch", "patient"), ("prefetch", "conditions"), ("prefetch", "observations"),
           ("prefetch", "observations", "entry"), ("prefetch", "observations", "link"), ("extension",)]


@st.composite
def _request(draw: st.DrawFn) -> dict:
    """A valid order-select request with one to three elements replaced (or removed) by tricky values."""
    body = copy.deepcopy(_VALID)
    for place in draw(st.lists(st.sampled_from(_PLACES), min_size=1, max_size=3)):
        parent = body
        for key in place[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if isinstance(parent, dict):
            if draw(st.booleans()) and place[-1] in parent:
                del parent[place[-1]]
            else:
                parent[place[-1]] = draw(st.one_of(_VALUE, _RESOURCE, _JSON))
    return body


def _jsonschema_accepts(body: dict, hook: str) -> bool:
    prefetch = body.get("prefetch") if isinstance(body.get("prefetch"), dict) else {}
    return (_VALIDATORS.request.is_valid(body) and all(_VALIDATORS.prefetch_value.is_valid(v) for v in prefetch.values())
            and _VALIDATORS.contexts[hook].is_valid(body["context"]))


@settings(max_examples=400)
@given(_request())
def test_jsonschema_rs_accepts_a_request_only_when_jsonschema_does(body):
    if _VALIDATORS.accepts_request(body) and isinstance(body.get("context"), dict) \
            and _VALIDATORS.accepts_context["order-select"](body["context"]):
        assert _jsonschema_accepts(body, "order-select")


def test_jsonschema_rs_accepts_the_valid_requests_so_the_fast_path_is_taken():
    # Were every request refused by it, the service would still be right, only slow: the spec's requests pass it.
    for name, body in [*ARTIFACT_REQUESTS, ("the base of the test above", _VALID)]:
        assert _jsonschema_accepts(body, body["hook"]), name
        assert _VALIDATORS.accepts_request(body), name
        assert _VALIDATORS.accepts_context[body["hook"]](body["context"]), name


@pytest.mark.parametrize(("value", "path"), [
    ([1, 2], "prefetch.conditions"),
    ({"entry": []}, "prefetch.conditions.resourceType"),
    ({"resourceType": "bundle"}, "prefetch.conditions.resourceType"),
])
def test_a_malformed_prefetch_value_is_a_400_naming_its_key(client, value, path):
    body = {"hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
            "context": {"userId": "Practitioner/1", "patientId": "p"}, "prefetch": {"conditions": value}}
    response = client.post("/cds-services/posterior-knee-pain", json=body)
    assert response.status_code == 400
    assert response.get_json()["issue"][0]["expression"] == [path]
