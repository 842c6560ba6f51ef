"""The rule pages in a real browser: headless Chromium loads the page a card links to, from the real server
(gunicorn with gunicorn.conf.py), and renders what a clinician reads there."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from .conftest import example_request, gunicorn_server, unavailable

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        unavailable("Chromium is not installed (apt-get install chromium): the rule page browser test needs it")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory, manifest) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("rule-pages")
    with gunicorn_server(tmp, {"DATABASE_URL": f"sqlite:///{tmp / 'feedback.sqlite3'}",
                               "KNEE_CDS_NOW": manifest["reference_date"]}) as (base, _):
        yield base


def _rendered(chromium: str, url: str, profile: str) -> str:
    """The page's DOM after Chromium has loaded and rendered it."""
    done = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def test_the_page_the_urgent_dvt_card_links_to_renders_in_a_browser(chromium, server, tmp_path):
    body = example_request("dvt-urgent-hot-calf.json", "patient-view")
    card = httpx.post(f"{server}/cds-services/posterior-knee-pain", json=body, timeout=10).json()["cards"][0]
    [link] = [link["url"] for link in card["links"] if link["url"].endswith("/rules/D-01")]
    dom = _rendered(chromium, link, str(tmp_path / "profile"))
    assert "<h1>Rule D-01</h1>" in dom
    assert "<td>calf larger than the other leg by</td><td>3 cm or more</td>" in dom  # the engine's threshold
    assert "NICE NG158" in dom and "pkp-dvt-urgent-01" not in dom  # its guideline; no patient data


def test_an_unknown_rule_is_not_a_page(server):
    response = httpx.get(f"{server}/rules/D-99", headers={"Accept": "text/html"}, timeout=10)
    assert response.status_code == 404 and response.json()["resourceType"] == "OperationOutcome"
