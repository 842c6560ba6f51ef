"""The developer CLI: readable cards, the sample table, bundle validation, curl-ready request bodies, `serve`, and
user errors as one line."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import uuid
from pathlib import Path

import httpx
import pytest

from cds_service.cli import main

from .conftest import EXAMPLES, ROOT, free_port, wait_for_http


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
    (lambda b: b["prefetch"].update(patient=FAILED_PREFETCH), [],
     "(412): Required data 'patient' (age (Ottawa, Wells applicability)) is not available: the client reported an "
     "error prefetching it"),
    (lambda b: b["prefetch"]["patient"].update(id="someone-else"), [],
     "(400): Prefetched Patient.id does not match context.patientId"),
])
def test_a_request_the_service_would_refuse_is_refused(tmp_path, capsys, change, args, said):
    assert main(["evaluate", _request_file(tmp_path, change), *args, "--now", "2026-11-20"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and said in out.err


FAILED_PREFETCH = {"resourceType": "OperationOutcome",
                   "issue": [{"severity": "error", "code": "exception", "diagnostics": "timeout"}]}


def test_optional_data_the_client_could_not_prefetch_is_listed_as_the_service_lists_it(tmp_path, capsys, client):
    def change(body):
        body["prefetch"]["recent-encounters"] = FAILED_PREFETCH

    path = _request_file(tmp_path, change)
    assert main(["evaluate", path, "--now", "2026-11-20", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    service = client.post("/cds-services/knee-imaging-select", json=json.loads(Path(path).read_text())).get_json()
    missing = cli["extension"]["org.example.kneecds.data-quality"]["missing"]
    assert missing == [{"key": "recent-encounters", "reason": "the client reported an error prefetching it"}]
    assert missing == service["extension"]["org.example.kneecds.data-quality"]["missing"]
    assert [c["summary"] for c in cli["cards"]] == [c["summary"] for c in service["cards"]]


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
    assert _run(capsys, ["load", str(EXAMPLES / "bakers-cyst.json"), "--fhir-server", "http://127.0.0.1:9"]) == \
        (1, "knee-cds: http://127.0.0.1:9 could not be reached: ConnectError\n")


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


# --- start-up, --version, --brief --------------------------------------------------------------------------------------
KNEE_CDS = Path(sys.executable).parent / "knee-cds"  # the console script of the editable install


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(KNEE_CDS), *args], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env=env)


def test_version_is_the_package_version():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    result = _cli("--version")
    assert (result.returncode, result.stdout) == (0, f"knee-cds {version}\n")


def test_help_starts_without_loading_the_service():
    # A blow-up guard, not the target (~0.1 s; README): every call pays the start-up, even --help.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = _cli("--help")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert result.returncode == 0 and "evaluate" in result.stdout
    assert cpu < 1.0, f"knee-cds --help took {cpu:.2f} s of CPU"


def test_brief_prints_one_line_per_card(capsys):
    assert main(["evaluate", str(EXAMPLES / "dvt-urgent-hot-calf.json"), "--brief", "--now", "2026-11-20"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2  # the manifest: dvt-urgent (critical), differential (info)
    assert lines[0].startswith("CRITICAL dvt-urgent: Hot, swollen, tender right calf")
    assert lines[1].startswith("INFO     differential: ")


# --- a folder of samples against its manifest -----------------------------------------------------------------------
def _table(out: str) -> list[list[str]]:
    """The rows of the sample table: sample, hook, cards, manifest."""
    lines = out.split("\n\n")[0].splitlines()
    assert re.split(r"\s{2,}", lines[0]) == ["sample", "hook", "cards", "manifest"]
    return [re.split(r"\s{2,}", line.strip(), maxsplit=3) for line in lines[1:]]


def test_the_sample_folder_matches_its_manifest_within_seconds():
    started = time.monotonic()
    result = _cli("evaluate", str(EXAMPLES))
    seconds = time.monotonic() - started
    rows = _table(result.stdout)
    manifest = json.loads((EXAMPLES / "manifest.json").read_text())["examples"]
    assert {(sample + ".json", hook) for sample, hook, _, _ in rows} == \
        {(name, hook) for name, spec in manifest.items() for hook in spec["expect"]}
    assert [row for row in rows if row[3] != "✓"] == []
    assert result.returncode == 0
    assert seconds < 60, f"{seconds:.1f} s"  # 0.6 s (README); the issue asks for under 30 s, this is a blow-up guard


def test_a_manifest_that_differs_gives_a_row_that_says_how_and_exit_status_1(tmp_path, capsys):
    manifest = json.loads((EXAMPLES / "manifest.json").read_text())
    examples = {name: manifest["examples"][name] for name in ("dvt-urgent-hot-calf.json", "bakers-cyst.json",
                                                               "wells-resolved-dvt.json")}
    examples["dvt-urgent-hot-calf.json"]["expect"]["patient-view"]["cards"][0] = \
        {"topic": "dvt-likely", "indicator": "warning"}
    examples["wells-resolved-dvt.json"]["expect"]["patient-view"]["wells"]["score"] = 2
    for name in [*examples, "no-knee-pain.json"]:  # the last one is not in the manifest
        shutil.copy(EXAMPLES / name, tmp_path / name)
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "examples": examples}))
    assert main(["evaluate", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert _table(out) == [
        ["bakers-cyst", "patient-view", "imaging/info, imaging/info", "✓"],
        ["dvt-urgent-hot-calf", "patient-view", "dvt-urgent/critical, differential/info",
         "✗ missing dvt-likely/warning; extra dvt-urgent/critical"],
        ["no-knee-pain", "-", "-", "✗ not in the manifest"],
        ["wells-resolved-dvt", "patient-view", "dvt-unlikely/info, differential/info",
         "✗ Wells 1 right [previous-dvt], manifest Wells 2 right [previous-dvt]"],
    ]
    assert "4 row(s), 3 not as the manifest says" in out


# --- every user error: one line, no traceback, a non-zero exit status -------------------------------------------------
def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    """Exit status and stderr as the interpreter gives them (a SystemExit message goes to stderr with status 1)."""
    try:
        status, message = main(argv), ""
    except SystemExit as exit_:
        status, message = (1, f"{exit_.code}\n") if isinstance(exit_.code, str) else (exit_.code, "")
    return status, capsys.readouterr().err + message


@pytest.mark.parametrize(("args", "status", "said"), [
    (["evaluate", "{bundle}", "--now", "yesterday"], 2, "argument --now: not an ISO date or dateTime: 'yesterday'"),
    (["evaluate", "{bundle}", "--hook", "patient-veiw"], 2, "argument --hook: invalid choice: 'patient-veiw'"),
    (["evaluate", "{tmp}/missing.json"], 1, "cannot read {tmp}/missing.json: [Errno 2] No such file or directory"),
    (["evaluate", "{tmp}/not-json.json"], 1, "cannot read {tmp}/not-json.json: Expecting property name"),
    (["evaluate", "{tmp}/patient.json"], 1, "expected a FHIR Bundle, not Patient"),
    (["evaluate", "{tmp}/list.json"], 1, "{tmp}/list.json is not a JSON object"),
    (["evaluate", "{tmp}/bad-entry.json"], 1, "resource 1 of the Bundle is not a FHIR resource"),
    (["evaluate", "{tmp}/empty"], 1, "{tmp}/empty holds no sample bundles (*.json)"),
    (["evaluate", "{tmp}/no-manifest"], 1, "{tmp}/no-manifest has no manifest.json"),
    (["evaluate", "{tmp}/no-manifest", "--json"], 1, "--json and --brief are for one file"),
    (["evaluate", "{bundle}", "--json", "--brief"], 2, "argument --brief: not allowed with argument --json"),
    (["validate", "{tmp}/no-manifest"], 1, "{tmp}/no-manifest is a folder; this command reads one JSON file"),
    (["request", "{tmp}/patient.json"], 1, "expected a FHIR Bundle, not Patient"),
    (["load", "{tmp}/empty", "--fhir-server", "http://127.0.0.1:9"], 1, "{tmp}/empty holds no sample bundles"),
    (["load", "{bundle}", "--fhir-server", "ftp://example.org"], 1, "--fhir-server ftp://example.org is not an http"),
    (["request", "{tmp}/draft-without-id.json", "--hook", "order-select"], 1,
     "{tmp}/draft-without-id.json: a resource is not shaped as FHIR says (ValueError: a draft ServiceRequest needs an id"),
    (["load", "{tmp}/draft-without-id.json", "--fhir-server", "http://127.0.0.1:9"], 1,
     "a ServiceRequest without an id cannot be loaded"),
    (["evaluate", "{tmp}/hook-list.json"], 2, "no service answers the hook ['patient-view']"),
    (["serve", "--port", "http"], 2, "argument --port: not a TCP port: 'http'"),
    (["frobnicate"], 2, "argument command: invalid choice: 'frobnicate'"),
])
def test_a_user_error_is_one_line_and_a_non_zero_exit_status(tmp_path, capsys, args, status, said):
    (tmp_path / "not-json.json").write_text("{")
    (tmp_path / "patient.json").write_text('{"resourceType": "Patient", "id": "p1"}')
    (tmp_path / "list.json").write_text("[]")
    (tmp_path / "bad-entry.json").write_text('{"resourceType": "Bundle", "entry": [{"resource": "Patient/p1"}]}')
    (tmp_path / "draft-without-id.json").write_text(json.dumps({"resourceType": "Bundle", "entry": [
        {"resource": {"resourceType": "Patient", "id": "p1"}},
        {"resource": {"resourceType": "ServiceRequest", "status": "draft", "intent": "order",
                      "subject": {"reference": "Patient/p1"}, "code": {"text": "MRI knee"}}}]}))
    (tmp_path / "hook-list.json").write_text(json.dumps({"hook": ["patient-view"], "hookInstance": str(uuid.uuid4()),
                                                         "context": {"userId": "Practitioner/x", "patientId": "p1"}}))
    (tmp_path / "empty").mkdir()
    (tmp_path / "no-manifest").mkdir()
    shutil.copy(EXAMPLES / "bakers-cyst.json", tmp_path / "no-manifest")
    argv = [a.format(tmp=tmp_path, bundle=EXAMPLES / "bakers-cyst.json") for a in args]
    code, err = _run(capsys, argv)
    assert code == status
    assert said.format(tmp=tmp_path) in err
    assert err.count("\n") == 1 and err.startswith("knee-cds")


@pytest.mark.parametrize(("variable", "value", "said"), [
    ("KNEE_CDS_NOW", "yesterday", "KNEE_CDS_NOW is not an ISO date or dateTime: 'yesterday'"),
    ("KNEE_CDS_TIMEZONE", "Mars/Olympus", "KNEE_CDS_TIMEZONE is not an IANA time zone name: 'Mars/Olympus'"),
])
def test_an_unusable_setting_is_one_line(capsys, monkeypatch, variable, value, said):
    monkeypatch.setenv(variable, value)
    assert _run(capsys, ["evaluate", str(EXAMPLES / "bakers-cyst.json")]) == (1, f"knee-cds: {said}\n")


def test_a_report_on_a_database_url_that_is_not_one_is_one_line(capsys, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "notaurl")
    assert _run(capsys, ["report"]) == (1, "knee-cds: report: DATABASE_URL is not a database URL: 'notaurl'\n")


def test_a_report_on_a_database_that_does_not_answer_is_one_line(capsys, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://knee@127.0.0.1:9/none")  # nothing listens on port 9
    assert _run(capsys, ["report"]) == (1, "knee-cds: report: The database is unavailable\n")


def test_the_installed_command_prints_no_traceback():
    result = _cli("evaluate", "missing.json")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "knee-cds: cannot read missing.json: [Errno 2] No such file or directory: 'missing.json'\n"
    result = _cli("evaluate", str(EXAMPLES / "bakers-cyst.json"), "--now", "yesterday")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


# --- serve ---------------------------------------------------------------------------------------------------------------
def test_serve_runs_the_service_with_the_development_settings(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("KNEE_CDS_PREVIEW", "KNEE_CDS_FHIR_ALLOW_HTTP",
                                                             "KNEE_CDS_FHIR_ALLOWED_HOSTS", "PORT", "KNEE_CDS_HOST")}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'feedback.sqlite3'}"
    with open(tmp_path / "serve.log", "w") as log:
        server = subprocess.Popen([str(KNEE_CDS), "serve", "--port", str(port)], cwd=tmp_path, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        services = wait_for_http(f"{base}/cds-services", seconds=60).json()["services"]
        assert {s["id"] for s in services} == {"posterior-knee-pain", "knee-imaging-select", "knee-imaging-sign"}
        assert httpx.get(f"{base}/preview").status_code == 200  # KNEE_CDS_PREVIEW, as make run sets it
        # A local FHIR server over http may be named (make run's KNEE_CDS_FHIR_ALLOW_HTTP and ALLOWED_HOSTS): the
        # service tries it, rather than refusing the URL. Nothing listens there, so required data is missing: 412.
        body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()), "fhirServer": f"http://127.0.0.1:{free_port()}",
                "context": {"userId": "Practitioner/example", "patientId": "pkp-baker-01"}}
        answer = httpx.post(f"{base}/cds-services/posterior-knee-pain", json=body, timeout=10)
        assert answer.status_code == 412
        assert "could not be reached" in answer.json()["issue"][0]["diagnostics"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        assert server.wait(timeout=30) == 0  # gunicorn itself (serve replaced its process): a clean shutdown


def test_serve_says_so_when_the_port_is_taken(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert _run(capsys, ["serve", "--port", str(port)]) == \
            (1, f"knee-cds: cannot listen on 127.0.0.1:{port}: Address already in use (--host, --port)\n")
