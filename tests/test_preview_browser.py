"""The card preview page in a real browser: headless Chromium (the system's, driven by Playwright for Python; no
browser is downloaded) against the real server (gunicorn with gunicorn.conf.py, KNEE_CDS_PREVIEW=1). The page calls
the real hook and feedback endpoints from the browser, so what it shows is what an EHR gets."""

from __future__ import annotations

import json
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from .conftest import EXAMPLES, gunicorn_server, load_json, unavailable
from .test_rule_pages_browser import CHROMIUM_FLAGS

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

SERVICE_TODAY = "2027-06-15"  # the server's clock: 207 days after the samples' reference date, 2026-11-20
HOT_CALF = "dvt-urgent-hot-calf"
# The hot-calf card as README.md shows it (its summary, and its first finding, dated on the day the page picked).
HOT_CALF_SUMMARY = "Hot, swollen, tender right calf: assess for DVT today and scan the leg veins now"
HOT_CALF_FINDING = f"Calf warmth: Calf hot to touch, right ({SERVICE_TODAY})"
DISAGREES = "Recipient disagrees with recommendation because of issues with the evidence"  # cards/cards.toml


@dataclass(frozen=True)
class Server:
    url: str  # http://127.0.0.1:<port>
    database: Path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        unavailable("Chromium is not installed (apt-get install chromium): the preview page browser test needs it")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright for Python is not installed (pip install -e '.[dev]'): the preview page test needs it")
    with sync_playwright() as playwright:
        # The system Chromium, never a downloaded one; Playwright adds its own --headless.
        launched = playwright.chromium.launch(executable_path=path,
                                              args=[flag for flag in CHROMIUM_FLAGS if flag != "--headless"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("preview")
    database = tmp / "feedback.sqlite3"
    with gunicorn_server(tmp, {"DATABASE_URL": f"sqlite:///{database}", "KNEE_CDS_NOW": SERVICE_TODAY,
                               "KNEE_CDS_PREVIEW": "1"}) as (url, _):
        yield Server(url, database)


@pytest.fixture
def page(browser) -> Iterator[Page]:
    context = browser.new_context()
    opened = context.new_page()
    opened.set_default_timeout(20_000)
    errors: list[str] = []
    # Chromium logs every non-2xx answer as "Failed to load resource"; the refusals are what some tests show.
    opened.on("console", lambda message: errors.append(message.text)
              if message.type == "error" and not message.text.startswith("Failed to load resource") else None)
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    # A script or style the Content-Security-Policy blocked, or a script error, would show only here.
    assert errors == []


def _open(page: Page, url: str) -> None:
    page.goto(f"{url}/preview")
    page.wait_for_selector("body[data-ready=true]")


def _run_sample(page: Page, sample: str, hook: str) -> None:
    page.select_option("#sample", sample)
    page.select_option("#hook", hook)
    page.click("#run")
    page.wait_for_selector("#cards > *")


def _cards(page: Page) -> Locator:
    return page.locator("#cards article.card")


def _stored(database: Path, card_uuid: str) -> list[tuple[str, str | None, str | None]]:
    with sqlite3.connect(database) as connection:
        return connection.execute("select outcome, accepted_suggestions, override_code from cds_feedback"
                                  " where card_uuid = ?", (card_uuid,)).fetchall()


def _rgb(colour: str) -> tuple[int, ...]:
    return tuple(int(part) for part in colour.removeprefix("rgb(").removesuffix(")").split(", ")[:3])


def test_the_hot_calf_sample_shows_its_critical_card_with_its_suggestion(page, server, manifest):
    _open(page, server.url)
    assert page.input_value("#day") == SERVICE_TODAY  # today by the service's clock
    page.select_option("#sample", HOT_CALF)
    assert page.locator("#hook option").all_text_contents() == ["patient-view"]  # the hooks the manifest names
    _run_sample(page, HOT_CALF, "patient-view")

    expected = manifest["examples"][f"{HOT_CALF}.json"]["expect"]["patient-view"]["cards"]
    cards = _cards(page)
    assert [cards.nth(i).get_attribute("data-indicator") for i in range(cards.count())] == [
        card["indicator"] for card in expected]
    critical = cards.nth(0)
    assert critical.locator(".indicator").text_content() == "critical"
    assert critical.locator(".summary").text_content() == HOT_CALF_SUMMARY
    stripe = _rgb(critical.evaluate("card => getComputedStyle(card).borderLeftColor"))
    assert stripe[0] > 2 * stripe[1] and stripe[0] > 2 * stripe[2]  # red, as an EHR marks a critical card
    assert stripe != _rgb(cards.nth(1).evaluate("card => getComputedStyle(card).borderLeftColor"))

    detail = critical.locator(".detail")
    assert "Why this card:" in detail.locator("strong").all_text_contents()
    assert HOT_CALF_FINDING in detail.locator("li").all_text_contents()  # the sample moved to the day picked
    assert detail.locator("em").last.text_content() == f"Evaluated on {SERVICE_TODAY}."
    assert "**" not in detail.inner_text()
    source = critical.locator(".source a")
    assert source.text_content().startswith("NICE NG158")
    assert source.get_attribute("href").startswith("https://www.nice.org.uk/")
    assert critical.locator(".links a", has_text="D-01").get_attribute("href") == f"{server.url}/rules/D-01"

    suggestion = critical.locator("button.suggestion")
    assert "proximal leg vein ultrasound (venous duplex)" in suggestion.text_content()
    [action] = critical.locator(".actions li").all_text_contents()
    assert action.startswith("create") and "ServiceRequest" in action
    assert DISAGREES in critical.locator("select.override-reason option").all_text_contents()
    assert "moved by 207 days" in page.text_content("#status")


def _hot_calf_critical_card(page: Page, server: Server) -> tuple[dict[str, Any], Locator]:
    """The hot-calf sample run on the page: the critical card as the service sent it, and as the page shows it."""
    _open(page, server.url)
    with page.expect_response(f"{server.url}/cds-services/posterior-knee-pain") as hook_call:
        _run_sample(page, HOT_CALF, "patient-view")
    return hook_call.value.json()["cards"][0], _cards(page).nth(0)


def test_accepting_the_suggestion_posts_feedback_the_service_stores(page, server):
    card, critical = _hot_calf_critical_card(page, server)
    with page.expect_request(f"{server.url}/cds-services/posterior-knee-pain/feedback") as posted:
        critical.locator("button.suggestion").click()
    [item] = json.loads(posted.value.post_data)["feedback"]
    assert (item["card"], item["outcome"], item["acceptedSuggestions"]) == (
        card["uuid"], "accepted", [{"id": card["suggestions"][0]["uuid"]}])
    feedback = critical.locator(".feedback")
    feedback.filter(has_text="HTTP 200").wait_for()
    assert "feedback accepted by the service" in feedback.text_content()
    assert critical.locator("button.suggestion").is_disabled()  # acted on
    [(outcome, accepted, _)] = _stored(server.database, card["uuid"])
    assert outcome == "accepted" and card["suggestions"][0]["uuid"] in accepted


def test_dismissing_with_a_reason_posts_overridden_feedback(page, server):
    card, critical = _hot_calf_critical_card(page, server)
    critical.locator("select.override-reason").select_option(label=DISAGREES)
    with page.expect_request(f"{server.url}/cds-services/posterior-knee-pain/feedback") as posted:
        critical.locator("button.dismiss").click()
    [item] = json.loads(posted.value.post_data)["feedback"]
    assert item["outcome"] == "overridden" and item["overrideReason"]["reason"]["code"] == "recipient-disagrees-evidence"
    critical.locator(".feedback").filter(has_text="HTTP 200").wait_for()
    assert "feedback accepted by the service" in critical.locator(".feedback").text_content()
    assert _stored(server.database, card["uuid"]) == [("overridden", None, "recipient-disagrees-evidence")]


def test_a_refused_call_is_decision_support_unavailable_never_no_cards(page, server):
    body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/example", "patientId": "pkp-dvt-urgent-01"}}  # no prefetch, no fhirServer
    refusal = httpx.post(f"{server.url}/cds-services/posterior-knee-pain", json=body, timeout=10)
    assert refusal.status_code == 412
    _open(page, server.url)
    page.fill("#pasted", json.dumps(body))
    page.click("#run")
    shown = page.locator("#cards .unavailable")
    shown.wait_for()
    assert shown.locator("strong").text_content() == "Decision support unavailable"
    assert f"HTTP 412: {refusal.json()['issue'][0]['diagnostics']}" in shown.text_content()
    assert page.locator("#cards .no-cards").count() == 0


def test_an_empty_card_list_says_no_cards(page, server, manifest):
    # The X-ray on record makes the MRI appropriate: the manifest expects no card at order-select.
    assert manifest["examples"]["chronic-pain-xray-on-record.json"]["expect"]["order-select"]["cards"] == []
    _open(page, server.url)
    _run_sample(page, "chronic-pain-xray-on-record", "order-select")
    assert page.text_content("#cards") == "No cards"


def test_markup_in_patient_data_is_shown_as_text(page, server):
    bundle: dict[str, Any] = load_json(EXAMPLES / f"{HOT_CALF}.json")
    hostile = 'Breast cancer <img src="x" onerror="document.title=\'hacked\'">, on treatment'
    for entry in bundle["entry"]:
        if entry["resource"].get("code", {}).get("text") == "Breast cancer, on treatment":
            entry["resource"]["code"]["text"] = hostile
    _open(page, server.url)
    page.fill("#pasted", json.dumps(bundle))
    page.select_option("#hook", "patient-view")
    page.click("#run")
    critical = _cards(page).nth(0)
    critical.wait_for()
    assert any(hostile in item for item in critical.locator(".detail li").all_text_contents())
    assert page.locator("#cards img").count() == 0 and page.title() != "hacked"


def test_the_markdown_subset_renders_and_nothing_else_does(page, server):
    _open(page, server.url)
    rendered = page.evaluate("""async (text) => {
        const { renderMarkdown } = await import('/preview/static/markdown.js');
        const box = document.createElement('div');
        box.append(renderMarkdown(text));
        return {
          strong: [...box.querySelectorAll('p > strong')].map((e) => e.textContent),
          items: [...box.querySelectorAll('ul > li')].map((e) => e.textContent),
          links: [...box.querySelectorAll('a')].map((e) => [e.textContent, e.getAttribute('href')]),
          emphasis: [...box.querySelectorAll('em')].map((e) => e.textContent),
          paragraphs: box.querySelectorAll('p').length,
          elements: [...new Set([...box.querySelectorAll('*')].map((e) => e.tagName))].sort(),
        };
    }""", "**What to do:**\nScan the leg\nveins now.\n\n- one <script>alert(1)</script>\n  continued\n"
          "- see [NICE](https://www.nice.org.uk/guidance/ng158) not [this](javascript:alert(1))\n\n"
          "# not a heading\n\n*Evaluated on 2027-06-15.*")
    assert rendered["strong"] == ["What to do:"]
    assert rendered["items"] == ["one <script>alert(1)</script>\ncontinued",
                                 "see NICE not [this](javascript:alert(1))"]
    assert rendered["links"] == [["NICE", "https://www.nice.org.uk/guidance/ng158"]]
    assert rendered["emphasis"] == ["Evaluated on 2027-06-15."]
    assert rendered["paragraphs"] == 3
    assert rendered["elements"] == ["A", "EM", "LI", "P", "STRONG", "UL"]


def test_the_page_calls_a_service_of_another_origin_through_cors(page, server):
    # The page from http://localhost, the service at http://127.0.0.1: another origin, so the browser sends the CORS
    # preflight and reads the answer only if the service allows it.
    _open(page, server.url.replace("127.0.0.1", "localhost"))
    page.fill("#base-url", server.url)
    with page.expect_response(f"{server.url}/cds-services/posterior-knee-pain") as hook_call:
        _run_sample(page, HOT_CALF, "patient-view")
    assert hook_call.value.status == 200
    assert _cards(page).nth(0).locator(".summary").text_content() == HOT_CALF_SUMMARY
