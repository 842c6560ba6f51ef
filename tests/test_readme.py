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


def test_the_curl_examples_files_exist_and_are_accepted(client):
    for match in re.finditer(r"--data @([^-\s]\S*)\s*\\\s*\n\s*http://127\.0\.0\.1:8080(\S+)", _readme()):
        path, endpoint = ROOT / match.group(1), match.group(2)
        response = client.post(endpoint, json=json.loads(path.read_text()))
        assert response.status_code == 200, (path, response.get_json())
        assert response.get_json()["cards"], "the README promises a card for this example"


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


def test_the_piped_request_examples_are_accepted(client, settings, capsys, monkeypatch):
    from cds_service.cli import main

    # The CLI and the service share one clock, as a plain `make run` and the CLI share the real one.
    monkeypatch.setenv("KNEE_CDS_NOW", settings.now)

    piped = re.findall(r"knee-cds request (\S+) --hook (\S+) \|\n.*--data @- \\\n\s*http://127\.0\.0\.1:8080(\S+)",
                       _readme())
    assert piped
    for path, hook, endpoint in piped:
        main(["request", str(ROOT / path), "--hook", hook])
        response = client.post(endpoint, json=json.loads(capsys.readouterr().out))
        assert response.status_code == 200 and response.get_json()["cards"]
