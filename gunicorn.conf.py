"""Gunicorn settings of the service, shared by `knee-cds serve` (and so `make run`) and the benchmark
(`bench/server_cpu.py`).

    gunicorn -c gunicorn.conf.py 'cds_service:create_app()'

`knee-cds serve` finds this file next to the `cds_service` package of the source checkout an editable install
(`pip install -e .`) runs from.

Anything given on the command line wins over this file, e.g. `--access-logfile -` to log every request.
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gunicorn.arbiter import Arbiter
    from gunicorn.workers.base import Worker


def _whole_number(name: str, default: int) -> int:
    raw = os.environ.get(name) or str(default)
    if not raw.isdigit() or int(raw) < 1:
        raise SystemExit(f"{name} must be a whole number of 1 or more, not {raw!r}")
    return int(raw)


_host = os.environ.get("KNEE_CDS_HOST", "127.0.0.1").strip("[]")
bind = f"[{_host}]:{os.environ.get('PORT', '8080')}" if ":" in _host else f"{_host}:{os.environ.get('PORT', '8080')}"
# One per core: a hook call is CPU work (two on the 2-core machine the benchmark ran on).
workers = _whole_number("KNEE_CDS_WORKERS", 2)
# A worker silent for this long is killed and replaced. A hook call takes milliseconds (its FHIR fetches at most
# KNEE_CDS_FHIR_DEADLINE_SECONDS, database calls 2 s each), so gunicorn's default of 30 s only catches a hung worker.
timeout = _whole_number("KNEE_CDS_TIMEOUT", 30)
# gunicorn's threaded worker, changed to read each request whole in its event loop before its thread runs
# it (cds_service/serving.py): slow clients, even hundreds sending a byte a second, hold no thread.
worker_class = "cds_service.serving.BufferingThreadWorker"
# One thread per worker: a hook call is CPU work (the GIL lets one thread of a process compute at a time), and a
# worker with a call running takes no new connection, so calls spread over the workers as with sync workers.
# Waiting on a FHIR server is bounded by KNEE_CDS_FHIR_DEADLINE_SECONDS.
threads = 1
# No keep-alive: a kept-alive connection stays with the worker that accepted it, so two busy EHR connections could
# share one worker (and one core) while the other idles (the benchmark's 2 connections: 199 req/s with keep-alive,
# 342 without). Each call is a new connection, accepted by a worker whose thread is free. A proxy in front keeps
# its own keep-alive to the EHR.
keepalive = 0
# The app (card definitions, value sets, schemas, FHIR models) is built once in the master and shared
# by the workers through fork.
preload_app = True
# Off by default: a log line per hook call costs CPU and says nothing the EHR's own log does not.
accesslog = None
# No runtime control socket (gunicorn >= 25.1): the service needs none, and every instance on a machine
# (make run, the tests, the benchmark) would otherwise claim the same $HOME/.gunicorn/gunicorn.ctl.
control_socket_disable = True


# Collect the youngest generation after 50,000 net new container objects instead of 700: a hook call
# allocates tens of thousands of dicts and lists that live until its answer is sent, and at 700 the
# collections keep re-scanning them (a 5,000-resource call: ~141 ms of CPU at 700, ~103 ms at 50,000).
GC_YOUNGEST_THRESHOLD = 50_000


def on_starting(server: Arbiter) -> None:
    # Metrics in prometheus_client's multi-process mode: each worker writes its counts to files in this directory
    # and /metrics adds up all of them. A fresh, empty directory per server start (files left by an earlier run would
    # be counted again), set before the first worker forks. prometheus_client picks its mode when first imported, so
    # the app never imports it before this (cds_service/metrics.py); imported here once, the workers inherit it
    # through the fork instead of each importing it on its first call. Made under TMPDIR; removed by on_exit.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="knee-cds-metrics-")
    import prometheus_client  # noqa: F401


def child_exit(server: Arbiter, worker: Worker) -> None:
    # A dead worker's counters stay in its files (a scrape still adds them up); its live gauges, if any, are removed.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Arbiter) -> None:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        shutil.rmtree(directory, ignore_errors=True)


def pre_fork(server: Arbiter, worker: Worker) -> None:
    # Move the preloaded heap into the permanent generation right before each fork (the first ones and
    # any respawn): the workers' collections never re-scan it, so a hook call's GC cost depends on the
    # call's own objects only, and the shared pages are not dirtied by GC bookkeeping.
    gc.freeze()


def post_fork(server: Arbiter, worker: Worker) -> None:
    gc.set_threshold(GC_YOUNGEST_THRESHOLD, *gc.get_threshold()[1:])
