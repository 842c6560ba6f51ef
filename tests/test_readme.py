"""The README's first screen stays honest: the two commands, a curl example that works, every setting."""

from __future__ import annotations

import json
import re

from cds_service.settings import describe

from .conftest import ROOT


def _readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_names_the_two_commands_and_a_curl_example():
    first_screen = _readme()[:2500]
    assert "make run" in first_screen and "make test" in first_screen
    assert "curl" in first_screen


def test_every_setting_is_documented():
    text = _readme()
    for env, _default, _description in describe():
        assert f"`{env}`" in text, env


def test_no_curl_example_reads_a_committed_request_file():
    # Committed request bodies carry fixed dates: against a plain `make run` they give other cards as time passes.
    assert not re.findall(r"--data @(?!-)\S+", _readme())


def test_make_targets_exist():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^run:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_the_card_shown_in_the_readme_is_what_the_service_writes(client):
    from .conftest import example_request

    body = example_request("dvt-urgent-hot-calf.json", "patient-view")
    card = client.post("/cds-services/posterior-knee-pain", json=body).get_json()["cards"][0]
    quoted = "\n".join(line[2:] if line.startswith("> ") else "" for line in _readme().splitlines()
                       if line.startswith(">"))
    assert f"**{card['summary']}**\n\n{card['detail']}" in quoted


PIPED = re.compile(r"knee-cds request (\S+) --hook (\S+) \|\n.*--data @- \\\n\s*http://127\.0\.0\.1:8080(\S+)"
                   r"  # gives: (.+)\n")
A_YEAR_AHEAD = "2027-11-26"


def test_the_first_screen_tries_the_service_with_piped_requests():
    first_screen = _readme()[:2500]
    assert "KNEE_CDS_NOW" not in first_screen  # a plain `make run`, on the real clock
    assert len(PIPED.findall(first_screen)) >= 2


def test_the_piped_request_examples_give_the_cards_they_name_a_year_from_now(tmp_path, capsys, monkeypatch):
    from cds_service import Settings, create_app
    from cds_service.cli import main

    # A plain `make run` and the CLI share the real clock: here both are a year ahead of the samples' dates.
    monkeypatch.setenv("KNEE_CDS_NOW", A_YEAR_AHEAD)
    service = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'f.db'}", now=A_YEAR_AHEAD)).test_client()
    examples = PIPED.findall(_readme())
    assert len(examples) >= 3
    for path, hook, endpoint, gives in examples:
        assert main(["request", str(ROOT / path), "--hook", hook]) == 0
        response = service.post(endpoint, json=json.loads(capsys.readouterr().out))
        assert response.status_code == 200, (path, response.get_json())
        named = [tuple(re.fullmatch(r"(\S+) \((\w+)\)", card).groups()) for card in gives.split(", ")]
        cards = [(c["source"]["topic"]["code"], c["indicator"]) for c in response.get_json()["cards"]]
        assert cards == named, (path, hook)
