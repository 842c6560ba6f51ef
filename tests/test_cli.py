"""The developer CLI: readable cards, bundle validation, and curl-ready request bodies."""

from __future__ import annotations

import json

from cds_service.cli import main

from .conftest import EXAMPLES


def test_evaluate_prints_readable_cards_with_their_trigger(capsys):
    assert main(["evaluate", str(EXAMPLES / "chronic-posterior-knee-pain.json"), "--hook", "order-sign",
                 "--now", "2026-11-20"]) == 0
    out = capsys.readouterr().out
    assert "[WARNING] imaging-appropriateness:" in out
    assert "2026-08-12" in out
    assert "Suggestion: Order weight-bearing knee X-ray instead of the MRI" in out


def test_evaluate_says_so_when_there_are_no_cards(capsys):
    assert main(["evaluate", str(EXAMPLES / "no-knee-pain.json"), "--now", "2026-11-20"]) == 0
    assert capsys.readouterr().out.strip() == "No cards."


def test_evaluate_accepts_a_cds_hooks_request_body(tmp_path, capsys):
    assert main(["request", str(EXAMPLES / "chronic-posterior-knee-pain.json"), "--hook", "order-select"]) == 0
    request_file = tmp_path / "request.json"
    request_file.write_text(capsys.readouterr().out)
    assert main(["evaluate", str(request_file), "--now", "2026-11-20", "--json"]) == 0
    cards = json.loads(capsys.readouterr().out)["cards"]
    assert [c["source"]["topic"]["code"] for c in cards] == ["imaging-appropriateness"]


def test_validate_reports_invalid_resources_and_fails(tmp_path, capsys):
    bundle = json.loads((EXAMPLES / "bakers-cyst.json").read_text())
    bundle["entry"][1]["resource"]["onsetDateTime"] = "2026-09-31"  # no such day
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bundle))
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert "INVALID Condition/pkp-baker-01-cond-1: onsetDateTime" in out


def test_validate_passes_every_shipped_example(capsys):
    for path in EXAMPLES.glob("*.json"):
        if path.name != "manifest.json":
            assert main(["validate", str(path)]) == 0, capsys.readouterr().out


def test_the_request_command_builds_a_body_the_service_accepts(client, capsys):
    main(["request", str(EXAMPLES / "chronic-posterior-knee-pain.json"), "--hook", "patient-view"])
    body = json.loads(capsys.readouterr().out)
    response = client.post("/cds-services/posterior-knee-pain", json=body)
    assert response.status_code == 200
    assert [c["source"]["topic"]["code"] for c in response.get_json()["cards"]] == ["imaging", "differential"]
