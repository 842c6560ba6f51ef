"""Override analytics (issue 11, item 4): on a database filled by hook calls and feedback, the report (what
`knee-cds report` prints) and GET /analytics show, per card topic and per rule, the numbers this test posted
(counted by hand below); feedback on a card never issued is stored and reported as such; the page is served only
when switched on and, under client JWTs, only to the readers a setting names."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import pytest

from cds_service import Settings, cli, create_app
from cds_service.analytics import report_text
from cds_service.errors import ConfigurationError

from .conftest import example_request
from .ops_kit import ClientKeys

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)  # KNEE_CDS_NOW=2026-11-20
BASE = "https://cds.example.org"
SAFETY = "https://safety.example.org"  # the clinical safety officer's tool, a trusted issuer
EHR = "https://ehr.example.org"  # a CDS client, trusted for hook calls: not a reader
TS = "2026-11-20T10:00:00Z"




def _by_topic(cards: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {card["source"]["topic"]["code"]: card for card in cards}


def _overridden(card: dict[str, Any], reason: dict[str, str] | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": TS}
    if reason is not None:
        item["overrideReason"] = {"reason": reason, "userComment": "discussed with the patient"}
    return item


def _accepted(card: dict[str, Any]) -> dict[str, Any]:
    return {"card": card["uuid"], "outcome": "accepted", "outcomeTimestamp": TS,
            "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}]}


UNKNOWN_CARD = str(uuid.UUID(int=0x5AFE))  # a uuid this service never issued


def _post_the_scenario(app) -> None:
    """Three hot calves (dvt-urgent D-01/RF-01 with a suggestion, and a differential each), two knee MRI orders
    without an X-ray (imaging-appropriateness K-07 with a suggestion), and feedback on five of these cards plus two
    items on a card never issued."""
    client = app.test_client()
    calves = [_by_topic(client.post("/cds-services/posterior-knee-pain", json=example_request(
        "dvt-urgent-hot-calf.json", "patient-view")).get_json()["cards"]) for _ in range(3)]
    mris = [_by_topic(client.post("/cds-services/knee-imaging-select", json=example_request(
        "chronic-posterior-knee-pain.json", "order-select")).get_json()["cards"]) for _ in range(2)]
    u1, u2, u3 = (calf["dvt-urgent"] for calf in calves)
    a1, a2 = (mri["imaging-appropriateness"] for mri in mris)
    # Posted before the card log's writer has committed the cards: the report joins them when it is made.
    calf_feedback = [_overridden(u1, u1["overrideReasons"][0]),  # cds-not-applicable
                     _overridden(u2, u2["overrideReasons"][2]),  # does-not-align-preferences
                     _accepted(u3)]
    assert client.post("/cds-services/posterior-knee-pain/feedback", json={"feedback": calf_feedback}).status_code == 200
    mri_feedback = {"feedback": [_accepted(a1), _overridden(a2)]}
    assert client.post("/cds-services/knee-imaging-select/feedback", json=mri_feedback).status_code == 200
    # Resent (an EHR retrying): stored once, counted once.
    assert client.post("/cds-services/knee-imaging-select/feedback", json=mri_feedback).get_json()["duplicates"] == 2
    never_issued = {"feedback": [{"card": UNKNOWN_CARD, "outcome": "overridden", "outcomeTimestamp": TS},
                                 {"card": UNKNOWN_CARD, "outcome": "accepted", "outcomeTimestamp": TS,
                                  "acceptedSuggestions": [{"id": str(uuid.uuid4())}]}]}
    assert client.post("/cds-services/posterior-knee-pain/feedback", json=never_issued).get_json() == {
        "stored": 2, "duplicates": 0}
    assert app.extensions["knee_cds"].card_log.flush(10)


# Counted by hand from the scenario: name -> shown, accepted, overridden, suggestions accepted, override reasons.
EXPECTED = {
    "dvt-urgent": ("3", "1", "2", "1 of 3 (33%)", "cds-not-applicable: 1; does-not-align-preferences: 1"),
    "imaging-appropriateness": ("2", "1", "1", "1 of 2 (50%)", "none given: 1"),
    "differential": ("3", "0", "0", "no suggestions", ""),
}
EXPECTED_RULES = {"D-01": EXPECTED["dvt-urgent"], "RF-01": EXPECTED["dvt-urgent"],
                  "K-07": EXPECTED["imaging-appropriateness"]}


def _text_row(report: str, name: str) -> tuple[str, ...]:
    """The report's row for a topic or rule, with its reason lines, in the shape of EXPECTED."""
    lines = report.splitlines()
    at = next(i for i, line in enumerate(lines) if line.split()[:1] == [name])
    words = lines[at].split()
    reasons = []
    for line in lines[at + 1:]:
        if not line.strip().startswith("overridden, "):
            break
        head, count = line.strip().removeprefix("overridden, ").rsplit(": ", 1)
        reasons.append(f"{head.split(' (')[0]}: {count}")
    return (*words[1:4], " ".join(words[4:]), "; ".join(reasons))


class _Tables(HTMLParser):
    """Every table row of a page, as the text of its cells."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _html_rows(page: str) -> dict[str, tuple[str, ...]]:
    parser = _Tables()
    parser.feed(page)
    return {row[0]: tuple(row[1:]) for row in parser.rows if row and row[0] not in ("topic", "rule")}


def test_the_report_and_the_page_show_what_clinicians_did_per_topic_and_rule(database, make_app, monkeypatch, capsys):
    app = make_app(database, analytics=True)
    _post_the_scenario(app)

    monkeypatch.setenv("DATABASE_URL", database)  # `knee-cds report` reads the service's own settings
    monkeypatch.setenv("KNEE_CDS_NOW", NOW.isoformat())
    assert cli.main(["report"]) == 0
    report = capsys.readouterr().out
    for name, expected in {**EXPECTED, **EXPECTED_RULES}.items():
        assert _text_row(report, name) == expected, name
    assert "Feedback on cards the card log does not hold: 2 item(s) naming 1 card(s)" in report

    page = app.test_client().get("/analytics")
    assert page.status_code == 200 and page.mimetype == "text/html"
    rows = _html_rows(page.get_data(as_text=True))
    for name, expected in {**EXPECTED, **EXPECTED_RULES}.items():
        assert rows[name] == expected, name
    assert "2 feedback item(s) name 1 card(s) the card log does not hold" in page.get_data(as_text=True)


def test_feedback_on_a_card_never_issued_is_stored_and_reported_as_unknown(tmp_path, make_app):
    url = f"sqlite:///{tmp_path / 'f.sqlite3'}"
    app = make_app(url)
    item = {"card": UNKNOWN_CARD, "outcome": "overridden", "outcomeTimestamp": TS}
    response = app.test_client().post("/cds-services/posterior-knee-pain/feedback", json={"feedback": [item]})
    assert response.get_json() == {"stored": 1, "duplicates": 0}
    assert [row["outcome"] for row in app.extensions["knee_cds"].store.rows(UNKNOWN_CARD)] == ["overridden"]
    assert "Feedback on cards the card log does not hold: 1 item(s) naming 1 card(s)" in report_text(url, NOW)


def test_the_page_is_one_document_with_inline_charts_under_a_strict_policy(tmp_path, make_app):
    app = make_app(f"sqlite:///{tmp_path / 'f.sqlite3'}", analytics=True)
    _post_the_scenario(app)
    response = app.test_client().get("/analytics")
    page = response.get_data(as_text=True)
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert "<script" not in page and "style" not in page and "http" not in page.replace(
        "http://www.w3.org/2000/svg", "")  # nothing to load, nothing to run
    assert page.count("<svg") == 3  # a chart per topic
    assert "<title id='chart-dvt-urgent'>dvt-urgent: 3 shown, 1 accepted, 2 overridden" in page


def test_text_from_the_ehr_is_escaped_on_the_page(tmp_path, make_app):
    app = make_app(f"sqlite:///{tmp_path / 'f.sqlite3'}", analytics=True)
    client = app.test_client()
    card = _by_topic(client.post("/cds-services/posterior-knee-pain", json=example_request(
        "dvt-urgent-hot-calf.json", "patient-view")).get_json()["cards"])["dvt-urgent"]
    hostile = {"code": "<b>x</b>", "display": "<script>alert(1)</script>"}
    client.post("/cds-services/posterior-knee-pain/feedback", json={"feedback": [_overridden(card, hostile)]})
    assert app.extensions["knee_cds"].card_log.flush(10)
    page = client.get("/analytics").get_data(as_text=True)
    assert "<script" not in page and "<b>" not in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page


def test_an_empty_database_reports_that_nothing_was_logged(tmp_path, make_app):
    make_app(f"sqlite:///{tmp_path / 'f.sqlite3'}")  # the service made the database and has served nothing yet
    assert "no cards logged and no feedback yet" in report_text(f"sqlite:///{tmp_path / 'f.sqlite3'}", NOW)


def test_a_report_on_a_sqlite_file_that_does_not_exist_creates_none(tmp_path):
    with pytest.raises(ConfigurationError, match="no SQLite database at"):
        report_text(f"sqlite:///{tmp_path / 'typo.sqlite3'}", NOW)
    assert not list(tmp_path.iterdir())


# --- who may read /analytics -------------------------------------------------------------------------------------------


def test_the_page_is_off_unless_switched_on(tmp_path, make_app):
    response = make_app(f"sqlite:///{tmp_path / 'f.sqlite3'}").test_client().get("/analytics")
    assert response.status_code == 404


@pytest.fixture
def keys(tmp_path) -> ClientKeys:
    return ClientKeys(tmp_path, issuers=(EHR, SAFETY))


def _jwt_app(make_app, tmp_path, keys: ClientKeys, readers: str | None):
    return make_app(f"sqlite:///{tmp_path / 'f.sqlite3'}", analytics=True, auth="jwt",
                    trusted_issuers=str(keys.issuers_file), public_base_url=BASE, analytics_readers=readers)


def _read(app, token: str | None):
    return app.test_client().get("/analytics", headers={"Authorization": f"Bearer {token}"} if token else {})


def test_under_client_jwts_the_page_is_never_served_without_named_readers(tmp_path, make_app, keys):
    app = _jwt_app(make_app, tmp_path, keys, readers=None)
    assert _read(app, keys.token(f"{BASE}/analytics", NOW, iss=SAFETY)).status_code == 404


def test_under_client_jwts_only_a_named_reader_reads_the_page(tmp_path, make_app, keys):
    app = _jwt_app(make_app, tmp_path, keys, readers=SAFETY)
    assert _read(app, keys.token(f"{BASE}/analytics", NOW, iss=SAFETY)).status_code == 200
    assert _read(app, None).status_code == 401
    assert _read(app, keys.token(f"{BASE}/cds-services", NOW, iss=SAFETY)).status_code == 401  # aud of another URL
    # A CDS client the service trusts for hook calls, not a reader: the answer to a URL the service does not have.
    refused = _read(app, keys.token(f"{BASE}/analytics", NOW, iss=EHR))
    no_such_url = app.test_client().get("/no-such-page")
    assert (refused.status_code, refused.get_json()) == (404, no_such_url.get_json())


def test_a_reader_can_be_one_subject_of_an_issuer(tmp_path, make_app, keys):
    app = _jwt_app(make_app, tmp_path, keys, readers=f"{SAFETY}|officer-1, {EHR}|quality-team")
    assert _read(app, keys.token(f"{BASE}/analytics", NOW, iss=SAFETY, sub="officer-1")).status_code == 200
    assert _read(app, keys.token(f"{BASE}/analytics", NOW, iss=EHR, sub="quality-team")).status_code == 200
    assert _read(app, keys.token(f"{BASE}/analytics", NOW, iss=SAFETY, sub="someone-else")).status_code == 404
    assert _read(app, keys.token(f"{BASE}/analytics", NOW, iss=SAFETY)).status_code == 404  # no sub


def test_a_malformed_reader_list_stops_the_service(tmp_path, keys):
    with pytest.raises(ConfigurationError, match="KNEE_CDS_ANALYTICS_READERS"):
        create_app(Settings(database_url=f"sqlite:///{tmp_path / 'f.sqlite3'}", analytics=True, auth="jwt",
                            trusted_issuers=str(keys.issuers_file), public_base_url=BASE,
                            analytics_readers=f"{SAFETY}|"))
