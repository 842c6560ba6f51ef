"""Server benchmark: the service against a bare Flask app, both under gunicorn with `gunicorn.conf.py`.

    .venv/bin/python -m bench.server_cpu [--resources 100] [--seconds 14] [--rounds 7] [--warmup 2] [--connections 2]

Both apps are served with the shared configuration (2 workers, preload, gc.freeze before fork; see the file) and
driven in turn by wrk (Debian package `wrk`) with a different pre-generated hook body on every request, in `--rounds`
rounds. Each round starts both apps afresh (how fast a process runs depends on where its memory landed: one start is
one sample of it), warms each up, then gives each `--seconds / --rounds` of load alone, the order alternating from
round to round, so that a slow spell of a shared machine falls on both apps, not on one of them. Reported per app:
requests per second, p50 (median of the rounds) and p99 (worst round) latency from wrk, and the server CPU per
request: utime+stime of the gunicorn master and workers (from /proc) before and after each run, over the requests
served. The ratio bare/service of CPU per request is the share of the service's cost that any Flask service pays
anyway (HTTP, JSON parse); taken between each app's median round (a slow spell or an unlucky start that falls on a
few rounds of either app is left out), it is held to the target, >= 0.4 at 100 resources, with p99 <= 50 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.charts import SERVICE_ID, TODAY, hook_body

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "gunicorn.conf.py"
LUA = Path(__file__).resolve().parent / "wrk_bodies.lua"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
APPS = {"service": "cds_service:create_app()", "bare": "bench.bare_app:create_app()"}


@dataclass(frozen=True)
class Run:
    app: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_request: float

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (its threads included, its reaped children not)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def server_pids(master: int) -> list[int]:
    """The gunicorn master and its workers."""
    workers = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # the process ended while we looked
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == master:
            workers.append(int(entry.name))
    return [master, *sorted(workers)]


def post(port: int, body: bytes) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/cds-services/{SERVICE_ID}", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@contextmanager
def gunicorn(app: str, workdir: Path, first_body: bytes, prefix: Sequence[str] = (), settings: Mapping[str, str] = {},
             start_seconds: float = 60, stop_seconds: float = 15) -> Iterator[tuple[int, int, dict]]:
    """Serve one app with the shared configuration; yields (master pid, port, the answer to the first body).

    `prefix` runs gunicorn under another program (valgrind), `settings` adds to its environment."""
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "KNEE_CDS_HOST": "127.0.0.1",
        "KNEE_CDS_NOW": TODAY.isoformat(),
        "KNEE_CDS_AUTH": "off",
        "DATABASE_URL": f"sqlite:///{workdir / f'{app}.sqlite3'}",
        **settings,
    }
    log_path = workdir / f"{app}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*prefix, str(Path(sys.executable).parent / "gunicorn"), "-c", str(CONFIG), APPS[app]],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + start_seconds
        while True:
            try:
                answer = post(port, first_body)
                break
            except urllib.error.HTTPError as exc:
                raise SystemExit(f"{app} answered {exc.code}: {exc.read()[:1000]!r}") from None
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{app} did not answer ({exc}); its log:\n{log_path.read_text()[-3000:]}") from None
                time.sleep(0.2)
        yield process.pid, port, answer
    finally:
        process.terminate()
        try:
            process.wait(timeout=stop_seconds)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)  # the session started above: gunicorn and its workers only
            process.wait()


def wrk(port: int, body_dir: Path, bodies: int, seconds: float, connections: int, threads: int) -> dict:
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        f"http://127.0.0.1:{port}/cds-services/{SERVICE_ID}",
        "--",
        str(body_dir),
        str(bodies),
        str(threads),
    ]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode:
        raise SystemExit(f"wrk failed: {completed.stderr or completed.stdout}")
    out = completed.stdout
    line = next((x for x in out.splitlines() if x.startswith("WRK-RESULT ")), None)
    if line is None:
        raise SystemExit(f"wrk printed no result:\n{out}")
    result = json.loads(line.removeprefix("WRK-RESULT "))
    if result["non_2xx"] or result["socket_errors"]:
        raise SystemExit(f"wrk saw failed requests: {result}")
    return result


@dataclass(frozen=True)
class Server:
    app: str
    master: int
    port: int


def measure(server: Server, args: argparse.Namespace, body_dir: Path, seconds: float) -> Run:
    """One run of wrk against one app, with the server CPU it cost."""
    pids = server_pids(server.master)
    before = sum(cpu_seconds(p) for p in pids)
    result = wrk(server.port, body_dir, args.bodies, seconds, args.connections, args.threads)
    time.sleep(0.5)  # let the last in-flight request finish before reading the CPU
    if server_pids(server.master) != pids:
        raise SystemExit(f"{server.app}: a gunicorn worker was replaced during the run; see its log")
    after = sum(cpu_seconds(p) for p in pids)
    return Run(
        app=server.app,
        requests=result["requests"],
        seconds=result["duration_us"] / 1e6,
        p50_ms=result["p50_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        cpu_ms_per_request=(after - before) * 1000 / result["requests"],
    )


def combined(runs: list[Run]) -> Run:
    """An app's rounds as one: requests and CPU added up, the median p50 and the worst p99."""
    requests = sum(r.requests for r in runs)
    return Run(
        app=runs[0].app,
        requests=requests,
        seconds=sum(r.seconds for r in runs),
        p50_ms=statistics.median(r.p50_ms for r in runs),
        p99_ms=max(r.p99_ms for r in runs),
        cpu_ms_per_request=sum(r.cpu_ms_per_request * r.requests for r in runs) / requests,
    )


def machine() -> str:
    """What the figures were measured on: CPU, load before the run, Python, the code's revision."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), platform.processor())
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    git = ["git", "-C", str(ROOT)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout
    return (
        f"{os.cpu_count()} CPU ({model}), load average {load}; Python {platform.python_version()}; "
        f"knee-cds {commit or 'unknown revision'}{' with uncommitted changes' if dirty.strip() else ''}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=100, help="resources in each chart (default 100)")
    parser.add_argument("--seconds", type=float, default=14, help="measured wrk time per app, all rounds (default 14)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds the measured time is split into (default 7)")
    parser.add_argument("--warmup", type=float, default=2, help="unmeasured wrk run of each start (default 2)")
    parser.add_argument("--connections", type=int, default=2, help="wrk connections (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1: leaves the CPUs to the server)")
    parser.add_argument("--bodies", type=int, default=500, help="distinct request bodies rotated through (default 500)")
    args = parser.parse_args(argv)
    # a terminated benchmark still stops the gunicorn it started (it runs in a session of its own)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian/Ubuntu: apt-get install wrk)")

    print(f"# {machine()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="knee-cds-bench-") as tmp:
        workdir = Path(tmp)
        body_dir = workdir / "bodies"
        body_dir.mkdir()
        for i in range(args.bodies):
            (body_dir / f"body-{i:04d}.json").write_bytes(hook_body(args.resources, f"r{i:05d}"))
        first_body = hook_body(args.resources, "warm-up")
        size_kb = len(first_body) / 1024
        answers: dict[str, dict] = {}
        rounds: list[dict[str, Run]] = []
        for i in range(args.rounds):
            # Both apps started afresh each round: how fast a process runs depends on where its memory landed, and
            # one start is one sample of that (the service measured 2.2 ms per request in one start, 2.8 ms in the
            # next, each steady within itself).
            with ExitStack() as stack:
                servers = {}
                for app in APPS:
                    master, port, answers[app] = stack.enter_context(gunicorn(app, workdir, first_body))
                    servers[app] = Server(app, master, port)
                for server in servers.values():  # every worker warm: its imports done, its caches filled
                    wrk(server.port, body_dir, args.bodies, args.warmup, args.connections, args.threads)
                order = list(servers.values()) if i % 2 == 0 else list(reversed(servers.values()))
                rounds.append({s.app: measure(s, args, body_dir, args.seconds / args.rounds) for s in order})
        service = combined([r["service"] for r in rounds])
        bare = combined([r["bare"] for r in rounds])

    topics = ", ".join(f"{c['indicator']} {c['source'].get('topic', {}).get('code', '?')}"
                       for c in answers["service"]["cards"])
    print(
        f"# chart: {args.resources} resources, {size_kb:.0f} KB per body, {args.bodies} distinct bodies; "
        f"the service answers: {topics or 'no cards'}"
    )
    print(
        f"# gunicorn -c gunicorn.conf.py; wrk -t{args.threads} -c{args.connections}, "
        f"{args.rounds} rounds, each starting both apps afresh: {args.warmup:g} s warm-up, then "
        f"{args.seconds / args.rounds:g} s per app in turn"
    )
    print(f"{'app':8} {'requests':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'server CPU ms/req':>18}")
    for run in (service, bare):
        print(
            f"{run.app:8} {run.requests:8d} {run.requests_per_second:8.1f} {run.p50_ms:8.2f} {run.p99_ms:8.2f} "
            f"{run.cpu_ms_per_request:18.3f}"
        )
    for app in APPS:
        print(f"{app} CPU ms/req by round: {', '.join(f'{r[app].cpu_ms_per_request:.3f}' for r in rounds)}")
    # Each app's median round: a slow spell of the machine that falls on a few rounds of either app is left out.
    ratio = statistics.median(r["bare"].cpu_ms_per_request for r in rounds) / statistics.median(
        r["service"].cpu_ms_per_request for r in rounds)
    print(f"ratio bare/service of the median server CPU per request: {ratio:.3f} "
          f"(target >= 0.4: {'met' if ratio >= 0.4 else 'MISSED'})")
    print(f"service p99: {service.p99_ms:.1f} ms (target <= 50 ms: {'met' if service.p99_ms <= 50 else 'MISSED'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
