"""GET /rules/{rule-id} explains a rule from the definitions the engine uses; cards link to the rules behind them,
and advice that rests on no guideline cites its own rule page, never the clinic web page the scope came from."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from cds_service.facts.dvt import CALF_DIFFERENCE_CM
from cds_service.rules.base import WELLS_LIKELY

from .conftest import EXAMPLES, example_request, service_for
from .test_examples import CASES, IDS, _post


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_a_rule_page_is_html_for_people(client):
    response = client.get("/rules/D-02")
    assert response.status_code == 200 and response.mimetype == "text/html"
    parser = _Text()
    parser.feed(response.get_data(as_text=True))
    text = " ".join(parser.text)
    assert "Rule D-02" in text and "Deep vein thrombosis: likely" in text and "NICE NG158" in text
    assert f"{WELLS_LIKELY} or more" in text  # the engine's own threshold


def test_a_rule_page_is_json_for_machines(client):
    page = client.get("/rules/W-06", headers={"Accept": "application/json"}).get_json()
    assert page["id"] == "W-06"
    assert {"what": "calf larger than the other leg by", "value": f"{CALF_DIFFERENCE_CM:g} cm or more"} in \
        page["thresholds"]
    assert page["sources"][0]["url"] == "https://www.nice.org.uk/guidance/ng158"


def test_an_unknown_rule_is_a_404_operation_outcome(client):
    response = client.get("/rules/X-99")
    assert response.status_code == 404
    assert response.get_json()["issue"][0]["code"] == "not-found"


def test_the_urgent_dvt_card_links_to_its_rule_page(client):
    body = example_request("dvt-urgent-hot-calf.json", "patient-view")
    card = client.post(f"/cds-services/{service_for('patient-view')}", json=body).get_json()["cards"][0]
    assert card["source"]["topic"]["code"] == "dvt-urgent"
    links = {link["url"]: link for link in card["links"]}
    assert links["http://localhost/rules/D-01"]["type"] == "absolute"
    assert client.get("/rules/D-01").status_code == 200  # the link answers


@pytest.mark.parametrize(("name", "hook", "today", "expected"), CASES, ids=IDS)
def test_no_card_cites_the_clinic_page_and_every_link_is_a_rule_page(tmp_path, name, hook, today, expected):
    for card in _post(tmp_path, name, hook, today)["cards"]:
        assert "sportdoctorlondon" not in str(card["source"])
        for link in card.get("links", []):
            assert link["type"] == "absolute" and link["url"].startswith("http://localhost/rules/")
        if card["source"]["topic"]["code"] in ("differential", "assessment"):
            rule = card["source"]["url"].rsplit("/", 1)[1]
            assert card["source"] == {**card["source"], "label": f"knee-cds rule {rule}"}


def test_the_readme_keeps_the_clinic_page_as_the_scope_source():
    readme = (EXAMPLES.parent / "README.md").read_text(encoding="utf-8")
    assert "sportdoctorlondon.com/pain-behind-knee" in readme
