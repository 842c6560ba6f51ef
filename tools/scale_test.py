"""`make scale-test`: the production layout of deploy/ on one machine, with one instance killed mid-run.

    .venv/bin/python -m tools.scale_test [--seconds 60] [--clients 4] [--pause 0.05] [--no-restart]

Two knee-cds instances (gunicorn -c gunicorn.conf.py, each on its own loopback port, the environment of
deploy/knee-cds.env.example) share a throwaway PostgreSQL database; nginx runs deploy/nginx.conf (TLS with a
certificate made here, request buffering, both instances upstream, retries on connection errors) as a child process
with its own prefix under a temporary directory. JWT client authentication is on: the trusted-issuer file and its key
are made here, and every call carries a fresh JWT. Client threads send hook calls (the requests of
fhir_examples/requests/, rebuilt from their sample bundles as of today) and feedback (each item unique) through
nginx. At 1/3 of the run a few long calls (0.4 s of CPU each) go out, and while the first instance is computing
them its whole process group (master and workers) is killed with SIGKILL; at 1/2 it is started again (--no-restart
leaves it dead), and nginx sends it calls again once its fail_timeout (10 s) is over.

Checks, each a FAIL that makes the exit status 1: no request failed; the client had to resend only the calls the
killed instance had read (nginx retries them on the other instance, which refuses their already used JWT: 401),
all within 10 s of the kill, and nginx retried every other call that instance held; every hook answer had the
cards fhir_examples/manifest.json promises; every feedback item acknowledged with a 200 is stored exactly once; a
JWT used on one instance is refused (401) when replayed to the other instance directly and through nginx; both
instances served calls, the survivor alone while the other was down, and the restarted one again after it.
Without PostgreSQL, or without nginx when not root (as root, Debian's nginx package is installed), it is skipped,
and that is a failure only when CI is set.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import random
import re
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import jwt
import psycopg
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from jwt.algorithms import ECAlgorithm
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from cds_service.samples import as_of, build_request, sample_resources
from tools.soak import GUNICORN, IN_CI, POSTGRES_URL, SERVICE_OF_HOOK, Server, free_port, postgres_unreachable, stored_counts

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
EXAMPLES = ROOT / "fhir_examples"
ISSUER = "https://ehr.scale-test.example"  # the EHR the trusted-issuer file trusts
KID = "scale-test-es384"
SERVER_NAME = "localhost"  # the certificate's name, and the host of KNEE_CDS_PUBLIC_BASE_URL
JWT_LIFETIME_SECONDS = 300
# Sent just before the kill, so that it hits calls the instance has read (and claimed the JWT of) but not answered.
LONG_CALLS = 4
LONG_CALL_HEAD_START_SECONDS = 0.15  # enough for nginx to pass a 1 MB body on; far less than the call's 0.4 s
ATTEMPTS = 3  # a client sends a call at most this often, each time with a fresh JWT
RETRY_PAUSE_SECONDS = 0.2
# A client retry is expected only for the calls the killed instance had read (nginx's retry of those is refused as
# a JWT replay, see deploy/nginx.conf) and the few that came in while it died: a retry later than this is a FAIL.
RETRY_WINDOW_SECONDS = 10.0
# The values of deploy/nginx.conf, and the variables of deploy/knee-cds.env.example, that differ between a deployment
# and this run.
SITE_VALUES = ("knee-cds-1.internal:8080", "knee-cds-2.internal:8080", "listen 443 ssl;", "server_name cds.example.org;",
               "/etc/ssl/certs/knee-cds.crt", "/etc/ssl/private/knee-cds.key", "/var/log/nginx/knee-cds.access.log")
INSTANCE_ENV = ("DATABASE_URL", "KNEE_CDS_HOST", "PORT", "KNEE_CDS_TRUSTED_ISSUERS", "KNEE_CDS_PUBLIC_BASE_URL")
FEEDBACK_OUTCOMES = ("accepted", "overridden")
OVERRIDE_REASON = {"reason": {"system": "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes",
                              "code": "does-not-align-preferences"}, "userComment": "scale test"}


class Skip(Exception):
    """A part the run needs is missing on this machine (a failure only in CI)."""


class SetupError(Exception):
    """The layout could not be brought up as documented (a FAIL)."""


# --- the layout's files, made for this run -----------------------------------------------------------------------------


def render(template: str, values: dict[str, str], source: str) -> str:
    """`template` with each deployment value replaced; every one must occur exactly once, so that the run can never
    use a half-rendered file, and the documented file cannot drift away from what is tested."""
    for old, new in values.items():
        if (found := template.count(old)) != 1:
            raise SetupError(f"{source}: {old!r} found {found} times, expected once (update tools/scale_test.py)")
        template = template.replace(old, new)
    return template


def instance_environment(database_url: str, port: int, issuers: Path, public_base_url: str) -> dict[str, str]:
    """deploy/knee-cds.env.example as systemd's EnvironmentFile reads it, with this run's five instance values; the
    rest of the file is used as written. Settings of the calling shell never leak in."""
    documented: dict[str, str] = {}
    for line in (DEPLOY / "knee-cds.env.example").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            documented[name.strip()] = value.strip()
    if missing := [name for name in INSTANCE_ENV if name not in documented]:
        raise SetupError(f"deploy/knee-cds.env.example: {', '.join(missing)} not set (update tools/scale_test.py)")
    documented.update(DATABASE_URL=database_url, KNEE_CDS_HOST="127.0.0.1", PORT=str(port),
                      KNEE_CDS_TRUSTED_ISSUERS=str(issuers), KNEE_CDS_PUBLIC_BASE_URL=public_base_url)
    inherited = {k: v for k, v in os.environ.items()
                 if not k.startswith(("KNEE_CDS_", "GUNICORN_")) and k not in ("DATABASE_URL", "PORT", "FORWARDED_ALLOW_IPS")}
    return {**inherited, **documented}


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1, valid for a day: nginx's, and the only one the clients trust."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)])
    now = datetime.now(UTC)
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "knee-cds.crt", directory / "knee-cds.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


@dataclass
class Ehr:
    """The CDS client: its signing key, and a fresh JWT for every call (aud = the URL called under the public base)."""

    key: ec.EllipticCurvePrivateKey
    public_base_url: str

    @classmethod
    def make(cls, public_base_url: str) -> Ehr:
        return cls(ec.generate_private_key(ec.SECP384R1()), public_base_url)

    def write_trusted_issuers(self, path: Path) -> None:
        jwk = {**json.loads(ECAlgorithm.to_jwk(self.key.public_key())), "kid": KID, "use": "sig", "alg": "ES384"}
        path.write_text(json.dumps({"issuers": [{"iss": ISSUER, "jwks": {"keys": [jwk]}}]}, indent=2))

    def token(self, path: str) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": "scale-test-client", "aud": self.public_base_url + path, "iat": now,
                  "exp": now + JWT_LIFETIME_SECONDS, "jti": str(uuid.uuid4())}
        return jwt.encode(claims, self.key, algorithm="ES384", headers={"kid": KID, "typ": "JWT"})


# --- the parts: PostgreSQL, the instances, nginx -----------------------------------------------------------------------


@contextlib.contextmanager
def throwaway_database() -> Iterator[str]:
    """A fresh database in the local PostgreSQL, so that only this run's rows are counted; dropped afterwards."""
    admin = make_url(POSTGRES_URL).set(drivername="postgresql")
    name = f"knee_scale_{uuid.uuid4().hex[:12]}"
    dsn = admin.render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class Instance(Server):
    """One knee-cds instance: gunicorn as deploy/knee-cds.service starts it, in its own process group (soak's Server,
    with the instance's environment and a readiness probe that carries a JWT)."""

    def __init__(self, name: str, env: dict[str, str], ehr: Ehr, workdir: Path):
        super().__init__(env["DATABASE_URL"], int(env["PORT"]), workdir / f"instance-{name}.log")
        # Its own temporary folder inside the run's (systemd's PrivateTmp in production): what a killed instance
        # leaves there (e.g. its metrics files) goes with the run.
        scratch = workdir / f"instance-{name}-tmp"
        scratch.mkdir()
        self.name, self.env, self.ehr = name, {**env, "TMPDIR": str(scratch)}, ehr

    def start(self, seconds: float = 60) -> float:
        began = time.monotonic()
        with self.log.open("ab") as out:
            self.process = subprocess.Popen([str(GUNICORN), "-c", "gunicorn.conf.py", "cds_service:create_app()"],
                                            cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        while time.monotonic() - began < seconds:
            if self.process.poll() is not None:
                raise SetupError(f"instance {self.name} exited with status {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                headers = {"Authorization": f"Bearer {self.ehr.token('/cds-services')}"}
                if httpx.get(f"{self.base}/cds-services", headers=headers, timeout=2).status_code == 200:
                    return time.monotonic() - began
            time.sleep(0.2)
        raise SetupError(f"instance {self.name} did not answer within {seconds:.0f} s:\n{self.log_tail()}")

    def group_alive(self) -> list[int]:
        """The processes of the instance's group still running (a killed worker can stay a zombie until PID 1
        reaps it: that is dead)."""
        alive = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                state, _parent, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
                if int(group) == self.pid and state != "Z":
                    alive.append(int(stat.parent.name))
        return alive

    def replays_refused(self) -> int:
        return self.log.read_text(errors="replace").count("jti replay")


def find_nginx() -> str:
    """Debian's nginx; installed here when missing and root (the package's own service is not started where
    policy-rc.d forbids it, as in containers; elsewhere it starts on port 80, which this run does not use)."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if found:
        return found
    if os.geteuid() != 0:
        raise Skip("nginx is not installed: sudo apt-get install nginx (Debian's package), then run again")
    print("nginx not found: apt-get install -y nginx ...", flush=True)
    quiet = {"stdout": subprocess.DEVNULL, "env": {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}}
    if subprocess.run(["apt-get", "install", "-y", "nginx"], check=False, **quiet).returncode != 0:
        subprocess.run(["apt-get", "update"], check=False, **quiet)
        subprocess.run(["apt-get", "install", "-y", "nginx"], check=False, **quiet)
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if not found:
        raise Skip("apt-get install nginx failed")
    return found


class Nginx:
    """nginx in the foreground as a child process, all its files under `prefix`: deploy/nginx.conf rendered with this
    run's ports and paths, inside a minimal main configuration standing in for Debian's /etc/nginx/nginx.conf."""

    def __init__(self, binary: str, prefix: Path, port: int, upstream_ports: tuple[int, int], cert: Path, key: Path):
        self.binary, self.prefix = binary, prefix
        self.access_log, self.error_log = prefix / "access.log", prefix / "error.log"
        site = render((DEPLOY / "nginx.conf").read_text(encoding="utf-8"), dict(zip(SITE_VALUES, (
            f"127.0.0.1:{upstream_ports[0]}", f"127.0.0.1:{upstream_ports[1]}", f"listen 127.0.0.1:{port} ssl;",
            f"server_name {SERVER_NAME};", str(cert), str(key), str(self.access_log)), strict=True)), "deploy/nginx.conf")
        (prefix / "knee-cds.conf").write_text(site)
        # As root, nginx's workers drop to an unprivileged user (they only need to read and write the temp folders
        # nginx makes for them); Debian's group for nobody is nogroup, not nginx's default "nobody".
        user = "user nobody nogroup;\n" if os.geteuid() == 0 else ""
        temp_paths = "".join(f"    {kind}_temp_path {prefix / kind};\n"
                             for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (prefix / "nginx.conf").write_text(
            f"{user}daemon off;\nworker_processes 1;\npid {prefix / 'nginx.pid'};\nerror_log {self.error_log} notice;\n"
            f"events {{\n    worker_connections 256;\n}}\nhttp {{\n{temp_paths}    include {prefix / 'knee-cds.conf'};\n}}\n")
        self.process: subprocess.Popen[bytes] | None = None

    def command(self, *extra: str) -> list[str]:
        return [self.binary, "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf"), "-e", str(self.error_log),
                *extra]

    def start(self, ehr: Ehr, tls: ssl.SSLContext, seconds: float = 15) -> None:
        checked = subprocess.run(self.command("-t", "-q"), capture_output=True, text=True, check=False)
        if checked.returncode != 0:
            raise SetupError(f"nginx -t refused the rendered deploy/nginx.conf:\n{checked.stderr}")
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        began = time.monotonic()
        while time.monotonic() - began < seconds:
            if self.process.poll() is not None:
                raise SetupError(f"nginx exited with status {self.process.returncode}:\n{self.error_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                headers = {"Authorization": f"Bearer {ehr.token('/cds-services')}"}
                if httpx.get(f"{ehr.public_base_url}/cds-services", headers=headers, verify=tls, timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise SetupError(f"nginx did not answer within {seconds:.0f} s:\n{self.error_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGQUIT)  # graceful: finish the calls in flight, then exit
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=15)

    def error_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.error_log.read_text(errors="replace").splitlines()[-lines:])
        return ""


# --- the traffic ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HookCall:
    name: str  # sample.hook
    path: str
    body: bytes
    cards: list[dict[str, str]]  # what fhir_examples/manifest.json promises: topic and indicator, in order


def hook_calls(today: datetime) -> list[HookCall]:
    """The requests of fhir_examples/requests/, rebuilt from their sample bundles as of today (the instances run on
    the real clock, which the JWTs need), with the manifest's cards for each."""
    manifest = json.loads((EXAMPLES / "manifest.json").read_text(encoding="utf-8"))["examples"]
    calls = []
    for request in sorted((EXAMPLES / "requests").glob("*.json")):
        sample, hook = request.name.split(".")[:2]
        bundle = as_of(json.loads((EXAMPLES / f"{sample}.json").read_text(encoding="utf-8")), today.date())
        body = json.dumps(build_request(sample_resources(bundle), hook)).encode()
        calls.append(HookCall(f"{sample}.{hook}", f"/cds-services/{SERVICE_OF_HOOK[hook]}", body,
                              manifest[f"{sample}.json"]["expect"][hook]["cards"]))
    return calls


@dataclass
class Tally:
    """What the client threads saw, under one lock. Times are seconds since the traffic began."""

    began: float = field(default_factory=time.monotonic)
    calls: Counter[str] = field(default_factory=Counter)  # by kind
    failed: Counter[str] = field(default_factory=Counter)  # by kind: no 200 after every attempt
    retried: int = 0  # calls that needed more than one attempt and then succeeded
    retries: list[tuple[float, str]] = field(default_factory=list)  # (when, why) of each attempt that was retried
    hook_answers: int = 0  # hook calls answered with a 200
    wrong_cards: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds per call, retries included
    acknowledged: set[str] = field(default_factory=set)  # feedback card uuids answered with a 200
    unacknowledged: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)  # the first few unexpected answers
    lock: threading.Lock = field(default_factory=threading.Lock)

    def now(self) -> float:
        return time.monotonic() - self.began

    def note(self, message: str) -> None:
        if len(self.notes) < 8:
            self.notes.append(f"at {self.now():5.1f} s: {message}")


def card_summary(answer: dict[str, object]) -> list[dict[str, str]]:
    cards = answer.get("cards")
    return [{"topic": c["source"]["topic"]["code"], "indicator": c["indicator"]}
            for c in cards if isinstance(c, dict)] if isinstance(cards, list) else []


def send(http: httpx.Client, ehr: Ehr, path: str, body: bytes, tally: Tally) -> tuple[httpx.Response | None, int]:
    """One call, sent again with a fresh JWT (the same body: feedback is stored once by its content) after a
    connection error or any answer but a 200: (the 200, or None when every attempt failed; the attempts made)."""
    for attempt in range(1, ATTEMPTS + 1):
        headers = {"Authorization": f"Bearer {ehr.token(path)}", "Content-Type": "application/json"}
        try:
            response = http.post(path, content=body, headers=headers)
            if response.status_code == 200:
                return response, attempt
            why, detail = str(response.status_code), " ".join(response.text.split())[:160]
        except httpx.TransportError as exc:
            why, detail = type(exc).__name__, str(exc)[:160]
        with tally.lock:
            tally.note(f"{path}: attempt {attempt}: {why} {detail}")
            if attempt < ATTEMPTS:
                tally.retries.append((tally.now(), why))
        time.sleep(RETRY_PAUSE_SECONDS)
    return None, ATTEMPTS


def call_and_count(http: httpx.Client, ehr: Ehr, path: str, body: bytes, tally: Tally, kind: str,
                   call: HookCall | None = None, card: str | None = None) -> None:
    began = time.monotonic()
    response, attempts = send(http, ehr, path, body, tally)
    with tally.lock:
        tally.calls[kind] += 1
        tally.latencies.append(time.monotonic() - began)
        if response is None:
            tally.failed[kind] += 1
        elif attempts > 1:
            tally.retried += 1
        if card:
            (tally.acknowledged if response is not None else tally.unacknowledged).add(card)
        if call is not None and response is not None:
            tally.hook_answers += 1
            if (cards := card_summary(response.json())) != call.cards:
                tally.wrong_cards += 1
                tally.note(f"{call.name}: cards {cards}, expected {call.cards}")


def client(ehr: Ehr, tls: ssl.SSLContext, calls: list[HookCall], stop: threading.Event, tally: Tally, seed: int,
           pause: float) -> None:
    rng = random.Random(seed)
    # One kept-alive HTTPS connection to nginx per client, as an EHR keeps one.
    with httpx.Client(base_url=ehr.public_base_url, verify=tls, timeout=30) as http:
        while not stop.is_set():
            if rng.random() < 0.6:
                call = rng.choice(calls)
                call_and_count(http, ehr, call.path, call.body, tally, "hook", call=call)
            else:
                card = str(uuid.uuid4())
                item: dict[str, object] = {"card": card, "outcome": rng.choice(FEEDBACK_OUTCOMES),
                                           "outcomeTimestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
                if item["outcome"] == "accepted":
                    item["acceptedSuggestions"] = [{"id": str(uuid.uuid4())}]
                else:
                    item["overrideReason"] = OVERRIDE_REASON
                path = f"/cds-services/{rng.choice(sorted(SERVICE_OF_HOOK.values()))}/feedback"
                call_and_count(http, ehr, path, json.dumps({"feedback": [item]}).encode(), tally, "feedback", card=card)
            time.sleep(rng.uniform(0, 2 * pause))


def long_call(today: datetime) -> HookCall:
    """The hot-calf patient-view call with 100 examination notes of 9,900 characters added (~1 MB): the service reads
    every note (rules.md G-10), about 0.4 s of CPU, so that calls sent just before the kill are still being computed
    by the instance when it dies. The notes change no card."""
    sample = "dvt-urgent-hot-calf"
    bundle = as_of(json.loads((EXAMPLES / f"{sample}.json").read_text(encoding="utf-8")), today.date())
    resources = sample_resources(bundle)
    patient = next(r["id"] for r in resources if r["resourceType"] == "Patient")
    phrases = ("the patient reports pain behind the right knee", "worse after walking", "worse on stairs",
               "since the weekend", "sleeps well", "works as a teacher")
    rng = random.Random(0)
    for n in range(100):
        resources.append({
            "resourceType": "Observation", "id": f"{patient}-long-note-{n}", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "exam"}]}],
            "code": {"text": "Examination note"}, "subject": {"reference": f"Patient/{patient}"},
            "effectiveDateTime": today.date().isoformat(),
            "valueString": ". ".join(rng.choice(phrases) for _ in range(500))[:9900]})
    manifest = json.loads((EXAMPLES / "manifest.json").read_text(encoding="utf-8"))["examples"]
    return HookCall(f"{sample}.patient-view+notes", "/cds-services/posterior-knee-pain",
                    json.dumps(build_request(resources, "patient-view")).encode(),
                    manifest[f"{sample}.json"]["expect"]["patient-view"]["cards"])


def send_long_calls(ehr: Ehr, tls: ssl.SSLContext, call: HookCall, tally: Tally, count: int) -> list[threading.Thread]:
    """`count` long calls at once through nginx, each on its own connection: round robin gives the instance about
    to be killed some of them."""
    def one() -> None:
        with httpx.Client(base_url=ehr.public_base_url, verify=tls, timeout=30) as http:
            call_and_count(http, ehr, call.path, call.body, tally, "long hook", call=call)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads


# --- the run ----------------------------------------------------------------------------------------------------------


@dataclass
class Replay:
    """A JWT accepted by one instance, replayed to the other instance directly and through nginx."""

    used_on: str
    first: int
    other_instance: int
    through_nginx: int
    fresh_on_other: int  # the control: a fresh JWT on the other instance (so the 401 is the replay, nothing else)

    def ok(self) -> bool:
        return (self.first, self.other_instance, self.through_nginx, self.fresh_on_other) == (200, 401, 401, 200)


def replay_checks(instances: list[Instance], ehr: Ehr, tls: ssl.SSLContext, call: HookCall) -> list[Replay]:
    def post(base: str, token: str) -> int:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        return httpx.post(base + call.path, content=call.body, headers=headers, verify=tls, timeout=10).status_code

    checks = []
    for used, other in (instances, instances[::-1]):
        token = ehr.token(call.path)
        checks.append(Replay(used.name, post(used.base, token), post(other.base, token),
                             post(ehr.public_base_url, token), post(other.base, ehr.token(call.path))))
    return checks


@dataclass
class Upstreams:
    """What nginx's access log says: calls per instance in each phase, and the calls nginx itself sent again."""

    retried_by_nginx: Counter[str] = field(default_factory=Counter)  # by the status of the last try
    served: dict[str, Counter[str]] = field(default_factory=dict)  # phase -> instance port -> calls answered


LOG_LINE = re.compile(r"^(\S+) .*upstream=\[([^\]]*)\] upstream_status=\[([^\]]*)\]")


def read_access_log(path: Path, phases: list[tuple[str, datetime]]) -> Upstreams:
    """`phases`: (name, start) in order. nginx logs whole seconds: a call logged in the second a phase began is in
    neither phase, and is left out of the per-phase counts."""
    found = Upstreams(served={name: Counter() for name, _ in phases})
    boundaries = {start.replace(microsecond=0) for _, start in phases}
    for line in path.read_text(errors="replace").splitlines():
        match = LOG_LINE.match(line)
        if not match or not match.group(2):
            continue
        addresses, statuses = match.group(2).split(", "), match.group(3).split(", ")
        if len(addresses) > 1:
            found.retried_by_nginx[statuses[-1]] += 1
        when = datetime.fromisoformat(match.group(1))
        if statuses[-1] != "200" or when in boundaries:
            continue
        current = [name for name, start in phases if start <= when]
        if current:
            found.served[current[-1]][addresses[-1].rsplit(":", 1)[-1]] += 1
    return found


@dataclass
class Run:
    seconds: float = 0.0
    clients: int = 0
    tally: Tally = field(default_factory=Tally)
    stored: Counter[str] = field(default_factory=Counter)
    replays: list[Replay] = field(default_factory=list)
    replays_logged: int = 0  # "jti replay" refusals in the instances' logs
    upstreams: Upstreams = field(default_factory=Upstreams)
    ports: dict[str, int] = field(default_factory=dict)
    killed_at: float | None = None
    restarted_at: float | None = None
    events: list[str] = field(default_factory=list)
    aborted: str | None = None

    def checks(self) -> list[tuple[str, bool, str]]:
        t = self.tally
        late = [f"{when:.1f} s ({why})" for when, why in t.retries
                if self.killed_at is None or not self.killed_at - 1 <= when <= self.killed_at + RETRY_WINDOW_SECONDS]
        lost = sum(1 for card in t.acknowledged if self.stored[card] == 0)
        duplicates = sum(1 for count in self.stored.values() if count > 1)
        never_sent = len(set(self.stored) - t.acknowledged - t.unacknowledged)
        causes = Counter(why for _, why in t.retries)
        a, b = (str(self.ports[name]) for name in ("a", "b")) if self.ports else ("", "")
        served = self.upstreams.served
        rows = [
            ("the layout came up and ran to the end", self.aborted is None, self.aborted or ""),
            ("no request failed (after client retries)", not sum(t.failed.values()), f"failed: {dict(t.failed)}"),
            (f"client retries only within {RETRY_WINDOW_SECONDS:.0f} s of the kill", not late, ", ".join(late[:5])),
            ("the client resent only calls nginx had retried and the other instance refused as a JWT replay",
             set(causes) <= {"401"} and causes["401"] == self.upstreams.retried_by_nginx["401"],
             f"client retries {dict(causes)}; nginx retries by final status {dict(self.upstreams.retried_by_nginx)}"),
            ("every hook answer had the manifest's cards", t.hook_answers > 0 and not t.wrong_cards,
             f"{t.wrong_cards} of {t.hook_answers} wrong"),
            ("acknowledged feedback stored exactly once", bool(t.acknowledged) and not lost and not duplicates,
             f"{len(t.acknowledged)} acknowledged, lost {lost}, duplicates {duplicates}"),
            ("no stored feedback that was never sent", not never_sent, f"{never_sent} rows"),
            ("a used JWT is refused by the other instance and through nginx",
             len(self.replays) == 2 and all(r.ok() for r in self.replays),
             "; ".join(f"used on {r.used_on}: {r.first}, other {r.other_instance}, nginx {r.through_nginx}, "
                       f"fresh on other {r.fresh_on_other}" for r in self.replays)),
            ("both instances served calls before the kill", bool(served.get("both up", {}).get(a)
                                                                  and served.get("both up", {}).get(b)),
             str(dict(served.get("both up", {})))),
            ("only the survivor served calls while one was down", bool(served.get("a down", {}).get(b))
             and not served.get("a down", {}).get(a), str(dict(served.get("a down", {})))),
        ]
        if self.restarted_at is not None:
            rows.append(("the restarted instance served calls again", bool(served.get("a restarted", {}).get(a)),
                         str(dict(served.get("a restarted", {})))))
        return rows

    def failed(self) -> bool:
        return not all(ok for _, ok, _ in self.checks())


def run(seconds: float, clients: int, pause: float, restart: bool) -> Run:
    result = Run(clients=clients)
    nginx_binary = find_nginx()
    if reason := postgres_unreachable():
        raise Skip(f"PostgreSQL not reachable at {POSTGRES_URL} ({reason})")
    with tempfile.TemporaryDirectory(prefix="knee-cds-scale-") as tmp, throwaway_database() as database_url:
        workdir = Path(tmp)
        workdir.chmod(0o755)  # nginx's unprivileged workers write their temp files below it
        distinct: set[int] = set()
        while len(distinct) < 3:
            distinct.add(free_port())
        nginx_port, port_a, port_b = sorted(distinct)
        ports = result.ports = {"a": port_a, "b": port_b}
        ehr = Ehr.make(f"https://{SERVER_NAME}:{nginx_port}")
        ehr.write_trusted_issuers(workdir / "trusted-issuers.json")
        cert, key = self_signed_certificate(workdir)
        tls = ssl.create_default_context(cafile=str(cert))
        instances = [Instance(name, instance_environment(database_url, port, workdir / "trusted-issuers.json",
                                                         ehr.public_base_url), ehr, workdir)
                     for name, port in ports.items()]
        nginx = Nginx(nginx_binary, workdir, nginx_port, (ports["a"], ports["b"]), cert, key)
        calls, slow = hook_calls(datetime.now(UTC)), long_call(datetime.now(UTC))
        stop, tally = threading.Event(), result.tally
        threads = [threading.Thread(target=client, args=(ehr, tls, calls, stop, tally, n, pause), daemon=True)
                   for n in range(clients)]
        phases: list[tuple[str, datetime]] = []
        began = time.monotonic()
        try:
            for instance in instances:
                ready = instance.start()
                instance.settle()
                result.events.append(f"instance {instance.name} on :{instance.port} answered in {ready:.1f} s; "
                                     f"master {instance.pid}, workers {instance.workers()}")
            nginx.start(ehr, tls)
            result.events.append(f"nginx on https://{SERVER_NAME}:{nginx_port} (master {nginx.process.pid})")
            result.replays = replay_checks(instances, ehr, tls, calls[0])
            phases.append(("both up", datetime.now().astimezone()))
            began = tally.began = time.monotonic()
            for thread in threads:
                thread.start()
            time.sleep(seconds / 3)
            victim = instances[0]
            threads += send_long_calls(ehr, tls, slow, tally, LONG_CALLS)
            time.sleep(LONG_CALL_HEAD_START_SECONDS)
            phases.append(("a down", datetime.now().astimezone()))
            result.killed_at = tally.now()
            victim.crash()  # SIGKILL to master and workers; returns once the port is free
            if survivors := victim.group_alive():
                raise SetupError(f"instance {victim.name}'s processes {survivors} survived SIGKILL")
            result.events.append(f"at {result.killed_at:5.1f} s: instance a (master {victim.pid} and its workers) "
                                 "killed with SIGKILL")
            time.sleep(max(0.0, began + seconds / 2 - time.monotonic()))
            if restart:
                ready = victim.start()
                result.restarted_at = tally.now()
                phases.append(("a restarted", datetime.now().astimezone()))
                result.events.append(f"at {result.restarted_at:5.1f} s: instance a restarted, answering in {ready:.1f} s")
            time.sleep(max(1.0, began + seconds - time.monotonic()))
        except (SetupError, OSError, subprocess.SubprocessError, httpx.HTTPError) as exc:
            result.aborted = f"{type(exc).__name__}: {exc}"
        finally:
            stop.set()
            for thread in threads:
                if thread.is_alive():
                    thread.join(timeout=60)
            result.seconds = time.monotonic() - began
            nginx.stop()
            for instance in instances:
                instance.stop()
            if phases:
                result.upstreams = read_access_log(nginx.access_log, phases)
            result.replays_logged = sum(instance.replays_refused() for instance in instances)
            try:
                result.stored = stored_counts(database_url)
            except SQLAlchemyError as exc:  # e.g. no instance ever came up to create the tables
                result.events.append(f"feedback rows not counted: {type(exc).__name__}")
            if result.failed():
                for instance in instances:
                    result.events.append(f"instance {instance.name} log tail:\n{instance.log_tail(15)}")
                result.events.append(f"nginx error log tail:\n{nginx.error_tail()}")
    return result


def percentile(values: list[float], fraction: float) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[round(fraction * 100) - 1]


def report(result: Run) -> None:
    t, nginx = result.tally, result.upstreams.retried_by_nginx
    requests = sum(t.calls.values())
    stored_once = sum(1 for card in t.acknowledged if result.stored[card] == 1)
    rows = [
        ("duration of traffic", f"{result.seconds:.1f} s ({result.clients} clients; instance a killed at "
         f"{result.killed_at or 0:.1f} s" + (f", restarted at {result.restarted_at:.1f} s)" if result.restarted_at
                                             else ", not restarted)")),
        ("requests (hook calls + feedback + long calls)", f"{requests} ({t.calls['hook']} + {t.calls['feedback']} + "
         f"{t.calls['long hook']}), {requests / result.seconds if result.seconds else 0:.0f}/s"),
        ("failed (no 200 after every attempt)", str(sum(t.failed.values()))),
        ("retried by the client (then 200)", f"{t.retried} (attempts retried: {len(t.retries)}: "
         f"{dict(Counter(why for _, why in t.retries))})"),
        ("retried by nginx on the other instance", f"{sum(nginx.values())} (then 200, unseen by the client: "
         f"{nginx['200']}; then 401, the JWT used by the killed instance: {nginx['401']}; other: "
         f"{sum(nginx.values()) - nginx['200'] - nginx['401']})"),
        ("hook answers with other cards than the manifest's", str(t.wrong_cards)),
        ("feedback acknowledged / stored once", f"{len(t.acknowledged)} / {stored_once}"),
        ("feedback duplicates (rows > 1 per item)", str(sum(1 for c in result.stored.values() if c > 1))),
        ("JWT replays refused", f"{sum((r.other_instance == 401) + (r.through_nginx == 401) for r in result.replays)} "
         f"of {2 * len(result.replays)} replay checks; {result.replays_logged} 'jti replay' refusals in the instances' logs"),
        ("latency per call, retries included: p50 / p99", f"{1000 * percentile(t.latencies, 0.5):.1f} / "
         f"{1000 * percentile(t.latencies, 0.99):.1f} ms"),
        ("calls answered per instance port, by phase",
         "; ".join(f"{phase}: {dict(counts)}" for phase, counts in result.upstreams.served.items())),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    print()
    for label, ok, detail in result.checks():
        print(f"{'ok  ' if ok else 'FAIL'}  {label}" + ("" if ok or not detail else f": {detail}"))
    for line in result.events + t.notes:
        print(f"  {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools.scale_test", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60, help="traffic through nginx (default 60)")
    parser.add_argument("--clients", type=int, default=4, help="client threads (default 4)")
    parser.add_argument("--pause", type=float, default=0.05,
                        help="mean pause of a client between calls, in seconds (default 0.05: a moderate load)")
    parser.add_argument("--no-restart", dest="restart", action="store_false",
                        help="leave the killed instance dead for the rest of the run")
    args = parser.parse_args(argv)
    print(f"scale test: 2 instances + nginx, {args.seconds:.0f} s of traffic from {args.clients} clients ...", flush=True)
    try:
        result = run(args.seconds, args.clients, args.pause, args.restart)
    except Skip as exc:
        print(f"scale test skipped: {exc}" + (" - required in CI" if IN_CI else ""))
        return 1 if IN_CI else 0
    except SetupError as exc:  # the deploy/ files and this tool disagree: nothing was started
        print(f"FAIL: {exc}")
        return 1
    report(result)
    return 1 if result.failed() else 0


if __name__ == "__main__":
    sys.exit(main())
