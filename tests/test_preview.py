"""The card preview page's server side (Flask's test client): off unless KNEE_CDS_PREVIEW, a page that loads only its
own scripts and styles, the samples list, and the request bodies it builds (samples moved to the picked day).
The page itself, in a real browser, is tests/test_preview_browser.py."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cds_service import Settings, create_app

from .conftest import EXAMPLES, load_json

DAY_PICKED = "2027-03-01"  # 101 days after the samples' reference date, 2026-11-20
HOT_CALF = "dvt-urgent-hot-calf"


def _app(tmp_path: Path, **settings: Any) -> Flask:
    return create_app(Settings(database_url=f"sqlite:///{tmp_path / 'feedback.sqlite3'}", **settings))


@pytest.fixture
def preview(tmp_path: Path) -> Iterator[FlaskClient]:
    """The service with the preview on, its clock on DAY_PICKED (not the samples' day, so that moving shows)."""
    app = _app(tmp_path, preview=True, now=DAY_PICKED)
    yield app.test_client()
    app.extensions["knee_cds"].close()


def _build(client: FlaskClient, **asked: Any) -> tuple[int, dict[str, Any]]:
    response = client.post("/preview/request", json=asked)
    return response.status_code, response.get_json()


def _resources(request: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for value in request["prefetch"].values():
        if isinstance(value, dict) and value.get("resourceType") == "Bundle":
            found += [entry["resource"] for entry in value["entry"]]
        elif isinstance(value, dict):
            found.append(value)
    return found


def _observation_days(request: dict[str, Any]) -> set[str]:
    return {r["effectiveDateTime"] for r in _resources(request) if r["resourceType"] == "Observation"}


def _cancer_onset(request: dict[str, Any]) -> str:
    [cancer] = [r for r in _resources(request) if r.get("code", {}).get("text") == "Breast cancer, on treatment"]
    return cancer["onsetDateTime"]


@pytest.mark.parametrize(("method", "path"), [("GET", "/preview"), ("GET", "/preview/samples"),
                                              ("GET", "/preview/static/preview.js"), ("POST", "/preview/request")])
def test_without_the_setting_there_is_no_preview(tmp_path, method, path):
    app = _app(tmp_path, now=DAY_PICKED)
    response = app.test_client().open(path, method=method, json={"sample": HOT_CALF, "hook": "patient-view"})
    assert response.status_code == 404
    assert response.get_json()["resourceType"] == "OperationOutcome"
    app.extensions["knee_cds"].close()


class _PageParts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.links: list[dict[str, str | None]] = []
        self.inline_code: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script":
            self.scripts.append(found)
            self._in_script = True
        if tag == "link":
            self.links.append(found)
        if tag == "style" or "style" in found or any(name.startswith("on") for name in found):
            self.inline_code.append(f"<{tag} {found}>")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_code.append(data)


def test_the_page_loads_only_its_own_scripts_and_styles_under_a_strict_policy(preview):
    response = preview.get("/preview")
    assert response.status_code == 200 and response.mimetype == "text/html"
    policy = dict(part.strip().split(" ", 1) for part in response.headers["Content-Security-Policy"].split(";"))
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    page = _PageParts()
    page.feed(response.get_data(as_text=True))
    assert page.inline_code == []  # nothing the policy would have to allow inline
    assets = [s["src"] for s in page.scripts] + [link["href"] for link in page.links]
    assert {"/preview/static/preview.js", "/preview/static/preview.css"} <= set(assets)
    for asset in assets:
        assert asset.startswith("/preview/static/")  # no CDN, no web font
        assert preview.get(asset).status_code == 200
    style = preview.get("/preview/static/preview.css").get_data(as_text=True)
    assert "@import" not in style and "url(" not in style and "@font-face" not in style


def test_the_preview_is_not_part_of_the_published_api(preview):
    assert not [path for path in preview.get("/openapi.json").get_json()["paths"] if path.startswith("/preview")]


def test_the_samples_are_listed_with_the_hooks_the_manifest_names(preview, manifest):
    listed = preview.get("/preview/samples").get_json()
    assert listed["today"] == DAY_PICKED  # the service's clock
    assert {(s["hook"], s["id"]) for s in listed["services"]} == {
        ("patient-view", "posterior-knee-pain"), ("order-select", "knee-imaging-select"),
        ("order-sign", "knee-imaging-sign")}
    samples = {s["name"]: s for s in listed["samples"]}
    assert len(samples) == len(manifest["examples"])
    assert samples[HOT_CALF]["hooks"] == ["patient-view"]
    assert samples["chronic-posterior-knee-pain"]["hooks"] == ["patient-view", "order-select", "order-sign"]
    assert samples[HOT_CALF]["referenceDate"] == "2026-11-20"


def test_a_sample_is_moved_to_the_picked_day_and_gives_its_cards_on_that_day(preview, manifest):
    status, built = _build(preview, sample=HOT_CALF, hook="patient-view", date=DAY_PICKED)
    assert status == 200
    assert (built["service"], built["referenceDate"], built["asOf"], built["shiftDays"]) == (
        "posterior-knee-pain", "2026-11-20", DAY_PICKED, 101)
    request = built["request"]
    assert request["hook"] == "patient-view" and request["context"]["patientId"] == "pkp-dvt-urgent-01"
    assert _observation_days(request) == {DAY_PICKED}  # the calf findings were made on the reference day
    assert _cancer_onset(request) == "2026-08-13"  # 2026-05-04, 101 days later
    cards = preview.post("/cds-services/posterior-knee-pain", json=request).get_json()["cards"]
    expected = manifest["examples"][f"{HOT_CALF}.json"]["expect"]["patient-view"]["cards"]
    assert [(c["source"]["topic"]["code"], c["indicator"]) for c in cards] == [
        (card["topic"], card["indicator"]) for card in expected]


def test_without_a_day_the_sample_is_moved_to_today_by_the_services_clock(preview):
    status, built = _build(preview, sample=HOT_CALF, hook="patient-view")
    assert status == 200 and built["asOf"] == DAY_PICKED
    assert _observation_days(built["request"]) == {DAY_PICKED}


def test_an_order_hook_sample_carries_its_draft_orders(preview):
    status, built = _build(preview, sample="chronic-posterior-knee-pain", hook="order-select", date=DAY_PICKED)
    assert status == 200 and built["service"] == "knee-imaging-select"
    drafts = [entry["resource"] for entry in built["request"]["context"]["draftOrders"]["entry"]]
    assert drafts and all(d["resourceType"] == "ServiceRequest" and d["status"] == "draft" for d in drafts)
    assert built["request"]["context"]["selections"] == [f"ServiceRequest/{d['id']}" for d in drafts]


def test_a_pasted_request_body_is_sent_as_it_is(preview):
    body = load_json(EXAMPLES / "requests" / f"{HOT_CALF}.patient-view.json")
    status, built = _build(preview, document=body, hook="patient-view", date=DAY_PICKED)
    assert status == 200 and built["sentAsIs"] is True
    assert built["request"] == body and built["service"] == "posterior-knee-pain"


def test_a_pasted_bundle_is_moved_only_when_tagged_as_a_sample(preview):
    tagged = load_json(EXAMPLES / f"{HOT_CALF}.json")
    untagged = copy.deepcopy(tagged)
    del untagged["meta"]
    status, built = _build(preview, document=tagged, hook="patient-view", date=DAY_PICKED)
    assert status == 200 and built["shiftDays"] == 101 and _observation_days(built["request"]) == {DAY_PICKED}
    status, built = _build(preview, document=untagged, hook="patient-view", date=DAY_PICKED)
    assert status == 200 and "referenceDate" not in built
    assert _observation_days(built["request"]) == {"2026-11-20"}  # as written


@pytest.mark.parametrize(("asked", "status", "expression"), [
    ({"sample": "no-such-sample", "hook": "patient-view"}, 404, "sample"),
    ({"sample": "../fhir_examples/manifest", "hook": "patient-view"}, 404, "sample"),
    ({"sample": ["dvt-urgent-hot-calf"], "hook": "patient-view"}, 404, "sample"),
    ({"sample": HOT_CALF, "hook": "patient-veiw"}, 400, "hook"),
    ({"sample": HOT_CALF, "hook": "patient-view", "date": "2026-02-30"}, 400, "date"),
    ({"sample": HOT_CALF, "hook": "patient-view", "date": "tomorrow"}, 400, "date"),
    ({"hook": "patient-view"}, 400, "document"),
    ({"document": {"resourceType": "Patient", "id": "p"}, "hook": "patient-view"}, 400, "document"),
    ({"document": {"resourceType": "Bundle", "entry": [{"resource": "Patient/p"}]}, "hook": "patient-view"},
     400, "document.entry"),
    ({"document": {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Observation", "code": ["x"]}}]},
      "hook": "patient-view"}, 400, "document.entry"),
    ({"document": {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "ServiceRequest",
                                                                     "status": "draft"}}]},
      "hook": "order-select"}, 400, "document.entry"),
    ({"document": {"resourceType": "Bundle", "timestamp": "2026-13-45T00:00:00Z",
                   "meta": {"tag": [{"system": "http://example.org/fhir/CodeSystem/pkp-sample", "code": "sample"}]}},
      "hook": "patient-view"}, 400, "document"),
], ids=["unknown", "path", "not-a-name", "hook", "no-such-day", "not-a-day", "nothing", "not-a-bundle",
        "not-a-resource", "code-not-fhir", "draft-without-id", "timestamp-not-a-day"])
def test_what_cannot_be_built_is_refused_with_an_operation_outcome(preview, asked, status, expression):
    answered, outcome = _build(preview, **asked)
    assert answered == status
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["expression"] == [expression]


def test_a_body_that_is_not_json_is_refused(preview):
    response = preview.post("/preview/request", data="{", content_type="application/json")
    assert response.status_code == 400 and response.get_json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("meta", ["x", ["x"], {"tag": 5}])
def test_a_pasted_bundle_with_a_meta_of_another_shape_is_built_as_written(preview, meta):
    bundle = {"resourceType": "Bundle", "meta": meta, "entry": [{"resource": {"resourceType": "Patient", "id": "p"}}]}
    answered, built = _build(preview, document=bundle, hook="patient-view")
    assert answered == 200 and "referenceDate" not in built
    assert built["request"]["context"]["patientId"] == "p"
