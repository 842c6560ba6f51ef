"""`make fhir-server`: the test FHIR server on its own, every sample loaded as of today, ready for the CDS Hooks
Sandbox and `make run`."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys

import httpx

from .conftest import FHIR_SERVER_DIR, ROOT, free_port, unavailable


def test_the_developer_fhir_server_serves_every_sample_as_of_today():
    if shutil.which("node") is None or not (FHIR_SERVER_DIR / "node_modules").is_dir():
        unavailable("Node.js and tests/fhir_server/node_modules are needed (make test runs npm ci)")
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tools.fhir_server", "--port", str(port)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().startswith("loaded ")
        assert process.stdout.readline().startswith(f"FHIR server with the samples at http://127.0.0.1:{port}")
        sample = json.loads((ROOT / "fhir_examples" / "dvt-urgent-hot-calf.json").read_text())
        own = {e["resource"]["id"] for e in sample["entry"] if e["resource"]["resourceType"] == "Condition"}
        found = httpx.get(f"http://127.0.0.1:{port}/Condition", params={"patient": "pkp-dvt-urgent-01"}).json()
        assert {e["resource"]["id"] for e in found["entry"]} == own
        # a browser (the Sandbox) may read it: CORS preflight answered
        preflight = httpx.options(f"http://127.0.0.1:{port}/Condition", headers={
            "Origin": "https://sandbox.cds-hooks.org", "Access-Control-Request-Method": "POST"})
        assert preflight.headers.get("access-control-allow-origin") == "*"
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)
