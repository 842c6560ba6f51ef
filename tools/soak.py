"""`make soak`: a bounded load-and-kill run of the real server, gunicorn as production starts it.

    .venv/bin/python -m tools.soak [--seconds 90] [--database sqlite|postgresql|both]

For each database: start gunicorn on a free port, send mixed traffic (hook calls, discovery, feedback) from several
threads, kill -9 one worker at 1/3 of the run and the whole server (master and workers) at 2/3, restart it on the
same port and database, and keep the traffic going. Afterwards every feedback item acknowledged with a 200 must be
stored exactly once. Exit 1 if an acknowledged item is lost or stored twice, or any answer is a 5xx. If PostgreSQL
cannot be reached it is skipped, and that is a failure only when CI is set.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx
from sqlalchemy import create_engine, func, select, text

from cds_service.store import feedback_table, make_engine

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).with_name("gunicorn")
POSTGRES_URL = os.environ.get("KNEE_CDS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = bool(os.environ.get("CI"))
CLIENTS = 6
SERVICE_OF_HOOK = {"patient-view": "posterior-knee-pain", "order-select": "knee-imaging-select",
                   "order-sign": "knee-imaging-sign"}
# Encoded once: serialising the large prefetch in every client thread would take CPU from the server.
HOOK_CALLS = [(f"/cds-services/{SERVICE_OF_HOOK[p.name.split('.')[-2]]}", p.read_bytes())
              for p in sorted((ROOT / "fhir_examples" / "requests").glob("*.json"))]
FEEDBACK_PATH = "/cds-services/posterior-knee-pain/feedback"
OVERRIDE_REASON = {"reason": {"system": "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes",
                              "code": "does-not-align-preferences"}, "userComment": "soak"}
KINDS, WEIGHTS = ("hook", "discovery", "feedback"), (5, 2, 3)


@dataclass
class Tally:
    """What the client threads saw, under one lock."""

    sent: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)  # "2xx", "4xx", "5xx"
    errors_while_down: int = 0
    errors_while_up: int = 0  # e.g. the request a killed worker was serving
    acknowledged: set[str] = field(default_factory=set)
    unacknowledged: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)  # the first few unexpected answers and errors
    lock: threading.Lock = field(default_factory=threading.Lock)
    began: float = field(default_factory=time.monotonic)  # reset when the traffic starts

    def note(self, message: str) -> None:
        if len(self.notes) < 5:
            self.notes.append(f"{self.at()} {message}")

    def at(self) -> str:
        return f"at {time.monotonic() - self.began:4.1f} s:"


@dataclass
class Result:
    seconds: float = 0.0
    seconds_down: float = 0.0
    tally: Tally = field(default_factory=Tally)
    stored: Counter[str] = field(default_factory=Counter)  # card uuid -> rows
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    events: list[str] = field(default_factory=list)
    aborted: str | None = None  # the kill-and-restart schedule could not be followed

    def lost(self) -> int:
        return sum(1 for card in self.tally.acknowledged if self.stored[card] == 0)

    def duplicates(self) -> int:
        return sum(1 for count in self.stored.values() if count > 1)

    def never_sent(self) -> int:
        """Rows of uuids no client sent: the run's database was not fresh."""
        return len(set(self.stored) - self.tally.acknowledged - self.tally.unacknowledged)

    def failed(self) -> bool:
        return bool(self.aborted or self.lost() or self.duplicates() or self.never_sent() or self.tally.statuses["5xx"])


class Server:
    """gunicorn in its own process group, started as `make run` starts it."""

    def __init__(self, database_url: str, port: int, log: Path):
        self.database_url, self.port, self.log = database_url, port, log
        self.base = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, seconds: float = 60) -> float:
        env = {**os.environ, "PORT": str(self.port), "KNEE_CDS_HOST": "127.0.0.1", "DATABASE_URL": self.database_url}
        began = time.monotonic()
        with self.log.open("ab") as out:
            self.process = subprocess.Popen([str(GUNICORN), "-c", "gunicorn.conf.py", "cds_service:create_app()"],
                                            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        while time.monotonic() - began < seconds:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with status {self.process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base}/cds-services", timeout=2).status_code == 200:
                    return time.monotonic() - began
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not answer within {seconds:.0f} s")

    def settle(self, quiet: float = 1.0, seconds: float = 10) -> None:
        """Wait until the set of workers has not changed for `quiet` seconds: the first worker answers while the
        master may still be forking the others, and the count comes from gunicorn.conf.py, not from here."""
        deadline, last, since = time.monotonic() + seconds, self.workers(), time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - since < quiet:
            time.sleep(0.1)
            if (now := self.workers()) != last:
                last, since = now, time.monotonic()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def workers(self) -> list[int]:
        """The master's children, from every one of its threads (whatever the worker class)."""
        pids = []
        for children in Path(f"/proc/{self.pid}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                pids += [int(pid) for pid in children.read_text().split()]
        return sorted(pids)

    def rss_mb(self) -> float:
        total_kb = 0
        for pid in self.workers():
            with contextlib.suppress(OSError):
                line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmRSS:"))
                total_kb += int(line.split()[1])
        return total_kb / 1024

    def kill_worker(self) -> str:
        """kill -9 one worker; the master must fork a replacement."""
        before = self.workers()
        if not before:
            alive = self.process is not None and self.process.poll() is None
            raise RuntimeError(f"no worker to kill (master {'alive' if alive else 'gone'})")
        victim = before[0]
        os.kill(victim, signal.SIGKILL)
        began = time.monotonic()
        while time.monotonic() - began < 15:  # the master notices and forks a replacement
            now = self.workers()
            if victim not in now and len(now) >= len(before):
                return f"worker {victim} killed (-9); replaced in {time.monotonic() - began:.1f} s"
            time.sleep(0.1)
        raise RuntimeError(f"worker {victim} killed (-9) and not replaced within 15 s")

    def crash(self) -> None:
        """SIGKILL to the whole group, as when the host process dies; wait until the port is free again."""
        os.killpg(self.pid, signal.SIGKILL)
        self.wait()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(("127.0.0.1", self.port))
                    return
                except OSError:  # a dying worker still holds the listening socket
                    time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=35)  # gunicorn's graceful timeout is 30 s
        except subprocess.TimeoutExpired:
            os.killpg(self.pid, signal.SIGKILL)
            self.wait()

    def wait(self) -> None:
        assert self.process is not None
        self.process.wait(timeout=15)

    def log_tail(self, lines: int = 30) -> str:
        # Without the INFO line the service logs for every answered hook call: they would fill the tail.
        kept = [line for line in self.log.read_text(errors="replace").splitlines() if '"status":200' not in line]
        return "\n".join(kept[-lines:])


def client(base: str, stop: threading.Event, down: threading.Event, tally: Tally, seed: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=base, timeout=15) as http:
        while not stop.is_set():
            kind = rng.choices(KINDS, WEIGHTS)[0]
            card = None
            if kind == "hook":
                path, body = rng.choice(HOOK_CALLS)
                request = http.build_request("POST", path, content=body, headers={"Content-Type": "application/json"})
            elif kind == "discovery":
                request = http.build_request("GET", "/cds-services")
            else:
                card = str(uuid.uuid4())
                item: dict[str, object] = {"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-11-20T10:00:00Z"}
                if rng.random() < 0.5:
                    item.update(outcome="accepted", acceptedSuggestions=[{"id": str(uuid.uuid4())}])
                elif rng.random() < 0.5:
                    item["overrideReason"] = OVERRIDE_REASON
                request = http.build_request("POST", FEEDBACK_PATH, json={"feedback": [item]})
            try:
                response = http.send(request)
            except httpx.TransportError as exc:  # not retried: the next feedback item has a fresh uuid
                with tally.lock:
                    tally.sent[kind] += 1
                    if card:
                        tally.unacknowledged.add(card)
                    if down.is_set():
                        tally.errors_while_down += 1
                    else:
                        tally.errors_while_up += 1
                        tally.note(f"{kind}: {type(exc).__name__} while up")
                time.sleep(0.05)  # refusals are instant: do not spin while the server is down
                continue
            with tally.lock:
                tally.sent[kind] += 1
                tally.statuses[f"{response.status_code // 100}xx"] += 1
                if response.status_code != 200:
                    tally.note(f"{kind}: {response.status_code} {response.text[:200]}")
                if card:
                    (tally.acknowledged if response.status_code == 200 else tally.unacknowledged).add(card)


def stored_counts(database_url: str) -> Counter[str]:
    engine = make_engine(database_url)  # the service's own engine settings and table definition
    try:
        query = select(feedback_table.c.card_uuid, func.count()).group_by(feedback_table.c.card_uuid)
        with engine.connect() as connection:
            return Counter({card: int(count) for card, count in connection.execute(query)})
    finally:
        engine.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def soak(database_url: str, seconds: float, workdir: Path) -> Result:
    server = Server(database_url, free_port(), workdir / "gunicorn.log")
    result, stop, down = Result(), threading.Event(), threading.Event()
    tally, events = result.tally, result.events
    threads = [threading.Thread(target=client, args=(server.base, stop, down, tally, n), daemon=True)
               for n in range(CLIENTS)]
    began = time.monotonic()
    try:
        ready = server.start()
        server.settle()
        events.append(f"answered in {ready:.1f} s; master {server.pid}, workers {server.workers()}")
        result.rss_start_mb = server.rss_mb()
        began = tally.began = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(seconds / 3)
        events.append(f"{tally.at()} {server.kill_worker()}")
        time.sleep(max(0.0, began + 2 * seconds / 3 - time.monotonic()))
        down.set()  # before the kill, so that every error of the outage counts as "while down"
        went_down, killed_at, master = time.monotonic(), tally.at(), server.pid
        server.crash()
        ready = server.start()
        down.clear()
        result.seconds_down = time.monotonic() - went_down
        server.settle()
        events.append(f"{killed_at} master {master} and its workers killed (-9); restarted, answering in {ready:.1f} s;"
                      f" master {server.pid}, workers {server.workers()}")
        time.sleep(max(1.0, began + seconds - time.monotonic()))  # some traffic for the restarted server, always
        result.rss_end_mb = server.rss_mb()
    except Exception as exc:  # noqa: BLE001 - reported with the server's log, and the rows are still counted
        result.aborted = f"{type(exc).__name__}: {exc}"
    finally:
        stop.set()
        for thread in threads:
            if thread.is_alive():
                thread.join(timeout=30)
        result.seconds = time.monotonic() - began
        server.stop()
    result.stored = stored_counts(database_url)
    if result.failed():
        events.append("server log tail:\n" + server.log_tail())
    return result


def postgres_unreachable() -> str | None:
    engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("select 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "no PostgreSQL here"
        return type(exc).__name__
    finally:
        engine.dispose()
    return None


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """A fresh schema, so that only this run's rows are counted; dropped afterwards."""
    schema = f"soak_{uuid.uuid4().hex[:12]}"
    engine = create_engine(POSTGRES_URL)
    with engine.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        separator = "&" if "?" in POSTGRES_URL else "?"
        yield f"{POSTGRES_URL}{separator}options={quote(f'-c search_path={schema}')}"
    finally:
        with engine.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


def run(database: str, seconds: float) -> Result:
    with tempfile.TemporaryDirectory(prefix="knee-cds-soak-") as tmp:
        if database == "sqlite":
            return soak(f"sqlite:///{tmp}/feedback.sqlite3", seconds, Path(tmp))
        with postgres_schema() as url:
            return soak(url, seconds, Path(tmp))


def report(results: dict[str, Result]) -> None:
    def row(label: str, value: Callable[[Result], object]) -> None:
        print(f"{label:<44}" + "".join(f"{value(r)!s:>16}" for r in results.values()))

    print(f"{'':<44}" + "".join(f"{name:>16}" for name in results))
    row("seconds (server down)", lambda r: f"{r.seconds:.0f} ({r.seconds_down:.1f})")
    for kind in KINDS:
        row(f"requests: {kind}", lambda r, kind=kind: r.tally.sent[kind])
    for status in ("2xx", "4xx", "5xx"):
        row(status + (" (must be 0)" if status == "5xx" else ""), lambda r, status=status: r.tally.statuses[status])
    row("connection errors while down", lambda r: r.tally.errors_while_down)
    row("connection errors while up", lambda r: r.tally.errors_while_up)
    row("feedback acknowledged", lambda r: len(r.tally.acknowledged))
    row("acknowledged and stored", lambda r: sum(1 for c in r.tally.acknowledged if r.stored[c]))
    row("lost (must be 0)", Result.lost)
    row("duplicates (must be 0)", Result.duplicates)
    row("stored, not acknowledged", lambda r: sum(1 for c in r.tally.unacknowledged if r.stored[c]))
    row("stored, never sent (must be 0)", Result.never_sent)
    row("workers' RSS MB, start -> end (restarted)", lambda r: f"{r.rss_start_mb:.0f} -> {r.rss_end_mb:.0f}")
    row("verdict", lambda r: "FAIL" if r.failed() else "ok")
    for name, result in results.items():
        for line in result.events + result.tally.notes + ([f"ABORTED: {result.aborted}"] if result.aborted else []):
            print(f"  {name}: {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=90, help="traffic per database (default 90)")
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    args = parser.parse_args(argv)
    results: dict[str, Result] = {}
    failed = False
    for database in ("sqlite", "postgresql") if args.database == "both" else (args.database,):
        if database == "postgresql" and (reason := postgres_unreachable()):
            print(f"postgresql skipped: not reachable at {POSTGRES_URL} ({reason})" + (" - required in CI" if IN_CI else ""))
            failed = failed or IN_CI
            continue
        print(f"{database}: {args.seconds:.0f} s of traffic from {CLIENTS} clients ...", flush=True)
        results[database] = run(database, args.seconds)
    if results:
        report(results)
    return 1 if failed or any(r.failed() for r in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
