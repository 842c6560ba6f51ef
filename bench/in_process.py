"""In-process benchmark: one hook call through the Flask test client at 10, 100, 1,000 and 5,000 resources.

    .venv/bin/python -m bench.in_process [--sizes 10,100,1000,5000]
    .venv/bin/python -m bench.in_process --profile 100        (cProfile of the 100-resource call)

A call is the whole request path without the network: JSON parse, schema check, prefetch, parse, facts,
rules, cards, JSON answer. Every iteration posts a body of its own (a token in the patient id, every
resource id and one value). Reported per size: p50/p95 wall time and p50 CPU time of the process; then
the 5,000-resource call as a multiple of `json.loads` of the same bodies timed in the same loop (target
<= 5x) and time(5,000)/time(1,000), which is 5 when the cost grows linearly. Both ratios use CPU time,
which other programs on the machine do not inflate. The process's GC is set up by gunicorn.conf.py's own
fork hooks, as in a gunicorn worker.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import runpy
import site
import statistics
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from flask.testing import FlaskClient

from bench.charts import SERVICE_ID, TODAY, hook_body
from bench.server_cpu import machine
from cds_service import Settings, create_app

ITERATIONS = {10: 200, 100: 200, 1000: 30, 5000: 12}
PATH = f"/cds-services/{SERVICE_ID}"
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Timing:
    wall_ms: float
    cpu_ms: float


def percentile(sorted_ms: list[float], share: float) -> float:
    """Nearest-rank percentile of sorted samples."""
    return sorted_ms[max(0, round(share * len(sorted_ms)) - 1)]


def timed(action) -> Timing:
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    return Timing((time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000)


def call(client: FlaskClient, body: bytes) -> Timing:
    """One hook call, timed."""
    responses = []
    timing = timed(lambda: responses.append(client.post(PATH, data=body, content_type="application/json")))
    if responses[0].status_code != 200:
        raise SystemExit(f"hook call failed: {responses[0].status_code} {responses[0].get_data(as_text=True)[:500]}")
    return timing


def bodies(resources: int, count: int) -> list[bytes]:
    # bytes only: the bench's own data must not add GC-tracked objects to the measured process
    return [hook_body(resources, f"p{resources}-{i:04d}") for i in range(count)]


def service_client(tmp: str) -> FlaskClient:
    """The service as a gunicorn worker has it: preloaded, then the config's pre_fork and post_fork hooks."""
    app = create_app(Settings(database_url=f"sqlite:///{tmp}/feedback.sqlite3", now=TODAY.isoformat(), log_level="ERROR"))
    config = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    config["pre_fork"](None, None)
    config["post_fork"](None, None)
    return app.test_client()


def benchmark(sizes: list[int], warmup: int) -> None:
    largest = max(sizes)
    cpu_p50: dict[int, float] = {}
    loads_p50: dict[int, float] = {}
    print(f"# {machine()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="knee-cds-bench-") as tmp:
        client = service_client(tmp)
        for body in bodies(10, warmup):
            call(client, body)
        print(
            f"{'resources':>9} {'body KB':>8} {'calls':>6} {'p50 ms':>8} {'p95 ms':>8} {'CPU p50 ms':>10} "
            f"{'CPU us/resource':>15}"
        )
        for size in sizes:
            samples = bodies(size, ITERATIONS.get(size, 20))
            timings = []
            loads_cpu = []
            for body in samples:
                loads_cpu.append(timed(lambda body=body: json.loads(body)).cpu_ms)
                timings.append(call(client, body))
            wall = sorted(t.wall_ms for t in timings)
            cpu_p50[size] = statistics.median(t.cpu_ms for t in timings)
            loads_p50[size] = statistics.median(loads_cpu)
            print(
                f"{size:9d} {len(samples[0]) / 1024:8.0f} {len(timings):6d} {statistics.median(wall):8.2f} "
                f"{percentile(wall, 0.95):8.2f} {cpu_p50[size]:10.2f} {cpu_p50[size] * 1000 / size:15.1f}"
            )
    multiple = cpu_p50[largest] / loads_p50[largest]
    print(
        f"json.loads of the {largest:,}-resource bodies: CPU p50 {loads_p50[largest]:.2f} ms; the hook call is "
        f"{multiple:.1f}x that (target <= 5x: {'met' if multiple <= 5 else 'MISSED'})"
    )
    if 1000 in cpu_p50 and largest > 1000:
        # json.loads itself grows faster than linearly with the body (cache misses on megabytes of objects); the
        # service's own work is the call less the parse of its body.
        own = {n: cpu_p50[n] - loads_p50[n] for n in (1000, largest)}
        print(
            f"CPU time({largest:,}) / time(1,000) = {cpu_p50[largest] / cpu_p50[1000]:.2f}; json.loads alone "
            f"{loads_p50[largest] / loads_p50[1000]:.2f}; the call less its json.loads {own[largest] / own[1000]:.2f} "
            f"(linear growth: {largest / 1000:g})"
        )


def profile(size: int, calls: int, top: int) -> None:
    with tempfile.TemporaryDirectory(prefix="knee-cds-bench-") as tmp:
        client = service_client(tmp)
        samples = bodies(size, calls + 5)
        for body in samples[:5]:
            call(client, body)
        profiler = cProfile.Profile()
        profiler.enable()
        for body in samples[5:]:
            call(client, body)
        profiler.disable()
    print(f"cProfile of {calls} hook calls ({SERVICE_ID}, {size} resources, Flask test client); times are totals")
    for order in ("cumulative", "tottime"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(top)
        print(f"\n=== top {top} by {order} ===")
        report = out.getvalue()
        for prefix in sorted({*site.getsitepackages(), sysconfig.get_paths()["stdlib"], str(ROOT)}, key=len, reverse=True):
            report = report.replace(prefix + "/", "")  # short paths: cds_service/chart.py, flask/app.py, json/decoder.py
        print(report.strip("\n"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000,5000", help="chart sizes, comma-separated")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured 10-resource calls first (default 20)")
    parser.add_argument("--profile", type=int, metavar="RESOURCES", help="profile calls at this size instead")
    parser.add_argument("--calls", type=int, default=100, help="calls profiled (default 100)")
    parser.add_argument("--top", type=int, default=25, help="functions listed per ordering (default 25)")
    args = parser.parse_args(argv)
    if args.profile:
        profile(args.profile, args.calls, args.top)
    else:
        benchmark(sorted(int(s) for s in args.sizes.split(",")), args.warmup)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
