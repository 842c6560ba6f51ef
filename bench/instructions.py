"""Instruction benchmark: the service against the bare Flask app in machine instructions per request, under gunicorn.

    .venv/bin/python -m bench.instructions [--requests 20] [--resources 100]

The same comparison as `bench.server_cpu`, counted instead of timed: each app runs under gunicorn with
`gunicorn.conf.py` and one worker, inside valgrind's callgrind (Debian package `valgrind`), which counts the
instructions the worker executes (its threads included, the kernel's work for it not) while it answers
`--requests` hook calls, each with a body of its own, one after another. The count is the same from run to run
whatever else the machine is doing, where CPU time on a shared virtual machine moves by a third: use it to see
what a change costs. Time per instruction differs between the two apps (the service's Python and pydantic code
runs fewer instructions per cycle than a JSON parser), so this ratio is higher than the CPU ratio
`bench.server_cpu` holds to its target. About half a minute (the apps run ~50 times slower under valgrind).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.charts import hook_body
from bench.server_cpu import APPS, gunicorn, machine, post, server_pids

START_SECONDS = 600  # importing the service under valgrind takes ~10 s here; a slow machine, much longer


def callgrind(pid: int, action: str) -> None:
    """Send a command to the callgrind run of a process (a forked one is found after a few seconds)."""
    deadline = time.monotonic() + 60
    while True:
        done = subprocess.run(["callgrind_control", action, str(pid)], capture_output=True, text=True)
        if done.returncode == 0 and "not detected" not in done.stdout + done.stderr:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"callgrind_control {action} {pid}: {done.stdout}{done.stderr}")
        time.sleep(1)


def count(app: str, bodies: list[bytes], workdir: Path) -> int:
    """Instructions the app's only worker executes while it answers the bodies after the first three."""
    out = workdir / f"{app}.callgrind"
    # --trace-children: without it callgrind_control does not find the forked worker
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--trace-children=yes",
                f"--callgrind-out-file={out}.%p"]
    settings = {"KNEE_CDS_WORKERS": "1", "KNEE_CDS_TIMEOUT": str(START_SECONDS)}
    with gunicorn(app, workdir, bodies[0], prefix=valgrind, settings=settings, start_seconds=START_SECONDS,
                  stop_seconds=120) as (master, port, _):
        for body in bodies[1:3]:  # warm: the first calls import and build what later calls reuse
            post(port, body)
        worker = server_pids(master)[-1]
        callgrind(worker, "--instr=on")
        for body in bodies[3:]:
            post(port, body)
        callgrind(worker, "--instr=off")
        callgrind(worker, "--dump")
    totals = [int(line.split()[1]) for dump in workdir.glob(f"{out.name}.{worker}.*")
              for line in dump.read_text().splitlines() if line.startswith("totals:")]
    if not totals:
        raise SystemExit(f"callgrind wrote no counts for {app}; see {workdir / f'{app}.log'}")
    return sum(totals)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20, help="hook calls counted per app (default 20)")
    parser.add_argument("--resources", type=int, default=100, help="resources in each chart (default 100)")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is not installed (Debian/Ubuntu: apt-get install valgrind)")
    print(f"# {machine()}", flush=True)
    bodies = [hook_body(args.resources, f"i{i:05d}") for i in range(args.requests + 3)]
    per_request = {}
    with tempfile.TemporaryDirectory(prefix="knee-cds-instructions-") as tmp:
        for app in APPS:
            per_request[app] = count(app, bodies, Path(tmp)) / args.requests
    print(f"# gunicorn -c gunicorn.conf.py, 1 worker, under callgrind; {args.requests} calls of {args.resources} "
          f"resources ({len(bodies[0]) / 1024:.0f} KB), one after another")
    for app, instructions in per_request.items():
        print(f"{app:8} {instructions / 1e6:8.2f} M instructions per request")
    print(f"ratio bare/service of instructions per request: {per_request['bare'] / per_request['service']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
