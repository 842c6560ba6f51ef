"""The developer CLI: readable cards, bundle validation, and curl-ready request bodies."""

from __future__ import annotations

import json

import pytest

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
    assert capsys.readouterr().out.strip().endswith("\n\nNo cards: nothing in the chart calls for one.")
    assert main(["evaluate", str(EXAMPLES / "hamstring-strain.json"), "--hook", "order-sign", "--now", "2026-11-20"]) == 0
    assert capsys.readouterr().out.strip().endswith(
        "\n\nNo cards: no draft order to check (the order hooks answer about draft ServiceRequests).")


# --- the CLI behaves as the service: the service's refusals, never cards it would not give ----------------------------
REQUEST = EXAMPLES / "requests" / "chronic-posterior-knee-pain.order-select.json"


def _request_file(tmp_path, change) -> str:
    body = json.loads(REQUEST.read_text())
    change(body)
    path = tmp_path / "request.json"
    path.write_text(json.dumps(body))
    return str(path)


@pytest.mark.parametrize(("change", "args", "said"), [
    (lambda b: b.update(hook="patient-veiw"), [], "(400): no service answers the hook 'patient-veiw'"),
    (lambda b: b.pop("prefetch"), [], "would fetch patient, conditions"),
    (lambda b: None, ["--hook", "patient-view"], "(400): This service answers the 'patient-view' hook, not 'order-select'"),
    (lambda b: b["context"].pop("draftOrders"), [], "(400): Invalid request at context.draftOrders"),
])
def test_a_request_the_service_would_refuse_is_refused(tmp_path, capsys, change, args, said):
    assert main(["evaluate", _request_file(tmp_path, change), *args, "--now", "2026-11-20"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and said in out.err


def test_a_now_that_is_not_a_date_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", str(EXAMPLES / "bakers-cyst.json"), "--now", "yesterday"])
    assert exit_.value.code == 2
    assert "argument --now: not an ISO date or dateTime: 'yesterday'" in capsys.readouterr().err


def test_validate_fails_on_a_resource_type_fhir_does_not_have(tmp_path, capsys):
    bundle = json.loads((EXAMPLES / "bakers-cyst.json").read_text())
    bundle["entry"].append({"resource": {"resourceType": "Banana", "id": "b1"}})
    path = tmp_path / "banana.json"
    path.write_text(json.dumps(bundle))
    assert main(["validate", str(path)]) == 1
    assert "INVALID Banana/b1: not a FHIR R4 resource type" in capsys.readouterr().out


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


def test_load_puts_every_sample_into_a_fhir_server_under_its_own_id(fhir_server, capsys):
    assert main(["load", str(EXAMPLES), "--fhir-server", fhir_server.base]) == 0
    bundles = [p for p in EXAMPLES.glob("*.json") if p.name != "manifest.json"]
    total = sum(len(json.loads(p.read_text())["entry"]) for p in bundles)
    assert capsys.readouterr().out.startswith(f"loaded {total} resources from {len(bundles)} bundle(s) into ")
    # each patient keeps its own Conditions (ids are unique across the samples)
    for sample, patient in (("bakers-cyst.json", "pkp-baker-01"), ("dvt-urgent-hot-calf.json", "pkp-dvt-urgent-01")):
        own = {e["resource"]["id"] for e in json.loads((EXAMPLES / sample).read_text())["entry"]
               if e["resource"]["resourceType"] == "Condition"}
        found = fhir_server.http.get("/Condition", params={"patient": patient}).json().get("entry", [])
        assert own and {e["resource"]["id"] for e in found} == own
    assert main(["load", str(EXAMPLES / "bakers-cyst.json"), "--fhir-server", fhir_server.base]) == 0  # again: no-op


def test_load_says_when_the_fhir_server_cannot_be_reached(capsys):
    assert main(["load", str(EXAMPLES / "bakers-cyst.json"), "--fhir-server", "http://127.0.0.1:9"]) == 1
    assert "could not be reached" in capsys.readouterr().err


def test_evaluate_output_reads_as_text(capsys):
    assert main(["evaluate", str(EXAMPLES / "chronic-posterior-knee-pain.json"), "--hook", "order-sign",
                 "--now", "2026-11-20"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "order-sign for Patient/pkp-chronic-01, as of 2026-11-20: 1 card(s)"
    assert not [line for line in lines if "**" in line]  # markdown emphasis rendered away
    prose = [line for line in lines if not line.lstrip().startswith(("Evidence:", "Source:", "[", "order-sign"))]
    assert max(len(line) for line in prose) <= 104  # wrapped at 100 under a 4-space indent
    assert "      delete: ServiceRequest/pkp-chronic-01-draft-mri-1" in lines  # what the suggestion does
    assert "      create: Knee radiographs, weight-bearing (standing AP and lateral)" in lines
    assert "    Evidence: Condition/pkp-chronic-01-cond-1 (2026-08-12; K-07)" in lines
