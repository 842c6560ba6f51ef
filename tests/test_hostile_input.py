"""Hostile request bodies get a 4xx in bounded time, never a 500: nesting deep enough to exhaust Python's
stack, a prefetch Bundle with the wrong JSON types where the service walks it, and chunked bodies over the
size limit (issue 8, items 6 and 10)."""

from __future__ import annotations

import copy
import io
import json
import time
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import EnvironBuilder, run_wsgi_app

from cds_service.errors import BadRequest, JsonTooDeep
from cds_service.validation import _raise_first, load_json, make_validator

from .conftest import EXAMPLES
from .conftest import load_json as load_file

# Pain behind the right knee for 14 weeks, knee MRI selected, no knee X-ray on record: "X-ray first".
ORDER_SELECT = load_file(EXAMPLES / "requests" / "chronic-posterior-knee-pain.order-select.json")
SELECT = "/cds-services/knee-imaging-select"


def _outcome(response) -> dict[str, Any]:
    assert response.mimetype == "application/fhir+json"
    issue = response.get_json()["issue"][0]
    return {"diagnostics": issue["diagnostics"], "expression": issue.get("expression")}


def _topics(response) -> list[str]:
    return [card["source"]["topic"]["code"] for card in response.get_json()["cards"]]


# --- nesting --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [SELECT, SELECT + "/feedback"])
@pytest.mark.parametrize("body", ["[" * 10_000 + "]" * 10_000, '{"a":' * 10_000 + "1" + "}" * 10_000],
                         ids=["arrays", "objects"])
def test_json_nested_10000_levels_deep_is_a_400(client, path, body):
    started = time.monotonic()
    response = client.post(path, data=body, content_type="application/json")
    assert response.status_code == 400
    assert _outcome(response) == {"diagnostics": "Body nests deeper than 64 levels", "expression": ["$"]}
    assert time.monotonic() - started < 1


def test_json_opened_10000_levels_deep_and_never_closed_is_a_400(client):
    response = client.post(SELECT, data="[" * 10_000, content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["issue"][0]["diagnostics"].startswith("Body is not valid JSON")


def test_64_levels_are_read_and_65_are_refused():
    assert load_json(b"[" * 64 + b"]" * 64) == json.loads("[" * 64 + "]" * 64)
    with pytest.raises(JsonTooDeep):
        load_json(b"[" * 65 + b"]" * 65)
    # Each level may be an object or an array, and the deepest point counts, wherever it is.
    assert load_json(b'[{"a": [1]}, ' + b'{"b":' * 63 + b"2" + b"}" * 63 + b"]") is not None
    with pytest.raises(JsonTooDeep):
        load_json(b'[{"a": [1]}, ' + b'{"b":' * 64 + b"2" + b"}" * 64 + b"]")


def test_brackets_and_escaped_quotes_inside_strings_are_text_not_nesting():
    text = '"' + "[{" * 100 + '"'
    escaped_quote = r'"a \" [[[[ \\"'
    assert load_json(json.dumps({"note": "[{" * 100, "quoted": 'say "[[[[" twice\\'}).encode()) == {
        "note": "[{" * 100, "quoted": 'say "[[[[" twice\\'}
    assert load_json(f"[{text}, {escaped_quote}]".encode()) == ["[{" * 100, 'a " [[[[ \\']


def test_a_recursion_error_while_checking_a_schema_is_a_400_not_a_500():
    # The depth limit keeps the request schemas' walk shallow; this self-referencing schema shows the guard behind it.
    nested: list[Any] = []
    for _ in range(5_000):
        nested = [nested]
    with pytest.raises(BadRequest) as refused:
        _raise_first(make_validator({"$schema": "https://json-schema.org/draft/2020-12/schema",
                                     "type": "array", "items": {"$ref": "#"}}), nested, ("context",))
    assert refused.value.expression == "context"


def _extension(levels: int) -> dict[str, Any]:
    extension: dict[str, Any] = {"url": "http://example.org/leaf", "valueString": "leaf"}
    for _ in range(levels):
        extension = {"url": "http://example.org/branch", "extension": [extension]}
    return extension


def _with_condition_extension(levels: int) -> dict[str, Any]:
    body = copy.deepcopy(ORDER_SELECT)
    body["prefetch"]["conditions"]["entry"][0]["resource"]["extension"] = [_extension(levels)]
    return body


def test_a_fhir_extension_nested_120_deep_is_a_400_not_a_500(client):
    response = client.post(SELECT, json=_with_condition_extension(120))
    assert response.status_code == 400
    assert _outcome(response)["expression"] == ["$"]


def test_a_fhir_extension_nested_25_deep_still_gets_its_card(client):
    response = client.post(SELECT, json=_with_condition_extension(25))
    assert response.status_code == 200
    assert _topics(response) == ["imaging-appropriateness"]


# --- prefetch Bundle shape -----------------------------------------------------------------------------


@pytest.mark.parametrize("element", ["entry", "link"])
@pytest.mark.parametrize("value", [7, True, 1.5, "entries", {"resource": {}}], ids=repr)
def test_a_prefetch_bundle_whose_entry_or_link_is_not_a_list_is_a_400_naming_it(client, element, value):
    body = copy.deepcopy(ORDER_SELECT)
    body["prefetch"]["conditions"][element] = value
    response = client.post(SELECT, json=body)
    assert response.status_code == 400
    assert _outcome(response)["expression"] == [f"prefetch.conditions.{element}"]


@pytest.mark.parametrize(("element", "value", "path"), [
    ("entry", [7], "prefetch.procedures.entry[0]"),
    ("entry", [{"resource": "Procedure/1"}], "prefetch.procedures.entry[0].resource"),
    ("link", [False], "prefetch.procedures.link[0]"),
    ("link", [{"relation": "next", "url": 3.5}], "prefetch.procedures.link[0].url"),
    ("link", [{"relation": ["next"], "url": "https://fhir.example.org/Procedure?page=2"}],
     "prefetch.procedures.link[0].relation"),
])
def test_a_prefetch_bundle_entry_or_link_of_the_wrong_type_is_a_400_naming_it(client, element, value, path):
    body = copy.deepcopy(ORDER_SELECT)
    body["prefetch"]["procedures"][element] = value
    response = client.post(SELECT, json=body)
    assert response.status_code == 400
    assert _outcome(response)["expression"] == [path]


# --- chunked bodies ------------------------------------------------------------------------------------


def _post_chunked(app: Flask, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """A POST as gunicorn hands over a chunked body: no Content-Length, the stream ends where the body does."""
    environ = EnvironBuilder(path=path, method="POST", content_type="application/json",
                             headers={"Transfer-Encoding": "chunked"}, input_stream=io.BytesIO(body)).get_environ()
    del environ["CONTENT_LENGTH"]
    environ["wsgi.input_terminated"] = True
    app_iter, status, _headers = run_wsgi_app(app, environ, buffered=True)
    return int(status.split()[0]), json.loads(b"".join(app_iter))


def test_a_chunked_body_over_10_mb_is_a_413(app):
    body = b'{"hook": "order-select", "note": "' + b"a" * (10 * 1024 * 1024) + b'"}'
    status, outcome = _post_chunked(app, SELECT, body)
    assert status == 413
    assert outcome["issue"][0]["code"] == "too-long"
    assert outcome["issue"][0]["diagnostics"] == "Body is larger than the 10 MB limit"


def test_a_body_shorter_than_its_content_length_is_a_400_even_when_it_is_json(app):
    # A client that stops sending mid-body must not have the JSON prefix that arrived taken for its request.
    body = json.dumps(ORDER_SELECT).encode()
    environ = EnvironBuilder(path=SELECT, method="POST", content_type="application/json",
                             input_stream=io.BytesIO(body)).get_environ()
    environ["CONTENT_LENGTH"] = str(len(body) + 10)
    app_iter, status, _headers = run_wsgi_app(app, environ, buffered=True)
    outcome = json.loads(b"".join(app_iter))
    assert status.startswith("400")
    assert outcome["issue"][0]["diagnostics"] == f"Body ended after {len(body)} of its {len(body) + 10} bytes " \
        "(Content-Length)"


def test_a_chunked_body_under_the_limit_is_answered(app):
    status, answer = _post_chunked(app, SELECT, json.dumps(ORDER_SELECT).encode())
    assert status == 200
    assert [card["source"]["topic"]["code"] for card in answer["cards"]] == ["imaging-appropriateness"]
