"""Fuzz the published API (GET /openapi.json) with schemathesis, in process through the WSGI app: whatever a client
sends, valid under the document or not, the answer is never a 5xx.

`make test` runs a bounded, derandomized run (KNEE_CDS_FUZZ_CASES, 300 by default, split across the operations);
`make fuzz` sets KNEE_CDS_FUZZ_CASES=5000.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from cds_service import Settings, create_app
from cds_service.registry import SERVICES

TOTAL_CASES = int(os.environ.get("KNEE_CDS_FUZZ_CASES", "300"))
OPERATIONS = [("GET", "/cds-services")] + [
    ("POST", f"/cds-services/{service.id}{suffix}") for service in SERVICES for suffix in ("", "/feedback")
] + [("POST", "/cds-services/{id}"), ("POST", "/cds-services/{id}/feedback"), ("GET", "/rules/{ruleId}")]
# Most of the budget goes to the hook calls and feedback posts; discovery and unknown ids have little to vary.
WEIGHTS = {"/cds-services": 1, "/cds-services/{id}": 2, "/cds-services/{id}/feedback": 2, "/rules/{ruleId}": 1}
CASES = {path: max(1, TOTAL_CASES * WEIGHTS.get(path, 6) // sum(WEIGHTS.get(p, 6) for _, p in OPERATIONS))
         for _, path in OPERATIONS}


def _no_fhir_server(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("no FHIR server in the fuzz test", request=request)


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory):
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    # Every FHIR read fails at once (a generated fhirServer would otherwise mean a DNS lookup on a host that does not
    # exist): the fuzz spends its time in parsing, validation and the rules, and a missing key is the 412 path.
    app = create_app(Settings(database_url=f"sqlite:///{tmp}/f.db", now="2026-11-20"),
                     fhir_transport=httpx.MockTransport(_no_fhir_server))
    yield schemathesis.openapi.from_wsgi("/openapi.json", app)
    app.extensions["knee_cds"].close()


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_no_request_gets_a_server_error(api_schema, method: str, path: str) -> None:
    operation = api_schema[path][method]
    # Bodies valid under the document reach the rules; invalid ones exercise the parser and the validators.
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))
    statuses: list[int] = []
    started = time.perf_counter()

    @given(case=cases)
    # No shrinking: it can take minutes, and the failing body is printed whole.
    @settings(max_examples=CASES[path], derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    def call(case: schemathesis.Case) -> None:
        response = case.call()
        statuses.append(response.status_code)
        # The body in full (a curl line would hide fhirAuthorization, often the part that matters).
        assert response.status_code < 500, f"{response.status_code} for {case.formatted_path} {case.body!r}"[:3000]

    call()
    print(f"FUZZ {method} {path}: {len(statuses)} cases in {time.perf_counter() - started:.1f} s, "
          f"statuses {sorted(set(statuses))}")
