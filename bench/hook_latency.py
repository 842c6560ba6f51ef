"""Hook latency benchmark: patient-view and order-sign with full prefetch, in process, on a chronic-pain
record with an MRI order and on a hot-calf record with cancer (the DVT pathway).

    .venv/bin/python bench/hook_latency.py [iterations]

CDS Hooks asks services to answer in about 500 ms; this reports p50/p95/max of the service's own
work (schema check, parse, facts, rules, cards) so regressions show up before an EHR notices.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from cds_service import Settings, create_app
from cds_service.cli import build_request, bundle_resources

ROOT = Path(__file__).resolve().parent.parent


def main(iterations: int = 200) -> None:
    import json

    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(database_url=f"sqlite:///{tmp}/b.db", now="2026-11-20", log_level="ERROR"))
        client = app.test_client()
        for example, hook, service in (("chronic-posterior-knee-pain", "patient-view", "posterior-knee-pain"),
                                       ("chronic-posterior-knee-pain", "order-sign", "knee-imaging-sign"),
                                       ("dvt-urgent-hot-calf", "patient-view", "posterior-knee-pain")):
            bundle = json.loads((ROOT / "fhir_examples" / f"{example}.json").read_text())
            body = build_request(bundle_resources(bundle), hook)
            timings = []
            for _ in range(iterations):
                started = time.perf_counter()
                response = client.post(f"/cds-services/{service}", json=body)
                timings.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200
            timings.sort()
            p95 = timings[int(len(timings) * 0.95) - 1]
            print(f"{example:28s} {hook:13s} n={iterations} p50={statistics.median(timings):.2f} ms p95={p95:.2f} ms "
                  f"max={timings[-1]:.2f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
