"""Client authentication (CDS Hooks 2.0 "Trusting CDS Clients") with real JWTs signed by keys generated
here. Token times are judged by the app's clock, injected here; JWK Sets are served through the app's
injected HTTP transport (and once over real HTTP on the loopback), never from the internet."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from cds_service import Settings, create_app
from cds_service.errors import ConfigurationError

from .conftest import example_request

ISS = "https://ehr.example.org"
ALLOWED_JKU = "https://ehr.example.org/.well-known/jwks.json"
REMOTE_ISS = "https://remote.example.org"
REMOTE_JWKS_URL = "https://remote.example.org/jwks.json"
BASE = "http://localhost"
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)  # what KNEE_CDS_NOW=2026-11-20 means: midday UTC
T = int(NOW.timestamp())


def _jwk(private_key, kid: str) -> dict:
    algorithm = ECAlgorithm if isinstance(private_key, ec.EllipticCurvePrivateKey) else RSAAlgorithm
    public = json.loads(algorithm.to_jwk(private_key.public_key()))
    return {**public, "kid": kid, "use": "sig"}


@pytest.fixture(scope="module")
def keys():
    return {"ec": ec.generate_private_key(ec.SECP384R1()), "rsa": rsa.generate_private_key(65537, 2048),
            "other": ec.generate_private_key(ec.SECP384R1())}


class JwksEndpoints(httpx.MockTransport):
    """Answers every URL with the same JWK Set (so it would serve the key to any jku); records what was
    asked and how often the transport was closed."""

    def __init__(self, jwks: dict):
        self.asked: list[str] = []
        self.closed = 0

        def answer(request: httpx.Request) -> httpx.Response:
            self.asked.append(str(request.url))
            return httpx.Response(200, json=jwks)

        super().__init__(answer)

    def close(self) -> None:
        self.closed += 1


@pytest.fixture
def jwks_endpoints(keys):
    return JwksEndpoints({"keys": [_jwk(keys["rsa"], "rsa-1")]})


@pytest.fixture
def issuers_file(tmp_path, keys):
    issuers = {"issuers": [
        {"iss": ISS, "jwks": {"keys": [_jwk(keys["ec"], "ec-1")]}, "jku": [ALLOWED_JKU]},
        {"iss": REMOTE_ISS, "jwks_url": REMOTE_JWKS_URL},
    ]}
    path = tmp_path / "issuers.json"
    path.write_text(json.dumps(issuers))
    return path


@pytest.fixture
def settings(tmp_path, issuers_file):
    return Settings(database_url=f"sqlite:///{tmp_path / 'a.db'}", now="2026-11-20", auth="jwt",
                    trusted_issuers=str(issuers_file))


@pytest.fixture
def make_app(settings, jwks_endpoints):
    """Apps on the JWK Set transport; the clock is KNEE_CDS_NOW's unless a test injects its own."""
    made = []

    def make(clock=None, transport=jwks_endpoints):
        application = create_app(settings, fhir_transport=transport, clock=clock)
        made.append(application)
        return application

    yield make
    for application in made:
        application.extensions["knee_cds"].close()


@pytest.fixture
def app(make_app):
    return make_app()


def token(key, kid="ec-1", alg="ES384", aud=f"{BASE}/cds-services", iss=ISS, iat=T, exp=T + 300, jti=None,
          **headers) -> str:
    claims = {"iss": iss, "aud": aud, "iat": iat, "exp": exp, "jti": jti or str(uuid.uuid4())}
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid, "typ": "JWT", **headers})


def _get(app, tok: str | None, path="/cds-services"):
    headers = {"Authorization": f"Bearer {tok}"} if tok else {}
    return app.test_client().get(path, headers=headers)


def _diagnostics(response) -> str:
    return response.get_json()["issue"][0]["diagnostics"]


def test_a_valid_client_jwt_is_accepted(app, keys):
    # Signed at KNEE_CDS_NOW (six days before the machine's date): the fixed clock judges it, not the machine's.
    assert _get(app, token(keys["ec"])).status_code == 200


def test_a_hook_call_needs_the_jwt_for_that_endpoint(app, keys):
    body = example_request("chronic-posterior-knee-pain.json", "patient-view")
    client = app.test_client()
    right = token(keys["ec"], aud=f"{BASE}/cds-services/posterior-knee-pain")
    wrong = token(keys["ec"], aud=f"{BASE}/cds-services")  # discovery's audience
    ok = client.post("/cds-services/posterior-knee-pain", json=body, headers={"Authorization": f"Bearer {right}"})
    bad = client.post("/cds-services/posterior-knee-pain", json=body, headers={"Authorization": f"Bearer {wrong}"})
    assert ok.status_code == 200 and ok.get_json()["cards"]
    assert bad.status_code == 401


def test_feedback_needs_the_jwt_too(app, keys):
    body = {"feedback": [{"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-11-20T10:00:00Z"}]}
    client = app.test_client()
    assert client.post("/cds-services/posterior-knee-pain/feedback", json=body).status_code == 401
    tok = token(keys["ec"], aud=f"{BASE}/cds-services/posterior-knee-pain/feedback")
    response = client.post("/cds-services/posterior-knee-pain/feedback", json=body,
                           headers={"Authorization": f"Bearer {tok}"})
    assert response.status_code == 200


@pytest.mark.parametrize("case", ["missing", "expired", "unknown-issuer", "other-key", "unknown-kid", "garbage",
                                  "exp-not-a-number"])
def test_bad_tokens_are_401_operation_outcomes(app, keys, case):
    tok = {
        "missing": None,
        "expired": token(keys["ec"], iat=T - 600, exp=T - 120),
        "unknown-issuer": token(keys["ec"], iss="https://evil.example.org"),
        "other-key": token(keys["other"]),
        "unknown-kid": token(keys["ec"], kid="nope"),
        "garbage": "not.a.jwt",
        "exp-not-a-number": token(keys["ec"], exp=float("nan")),  # NaN compares as "never expires"
    }[case]
    response = _get(app, tok)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.get_json()["issue"][0]["code"] == "login"


def test_symmetric_and_unsigned_tokens_are_refused(app, keys):
    claims = {"iss": ISS, "aud": f"{BASE}/cds-services", "iat": T, "exp": T + 60, "jti": "x"}
    hmac = jwt.encode(claims, "shared-secret-of-32-bytes-or-more!!", algorithm="HS256", headers={"kid": "ec-1"})
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": "ec-1"})
    for tok in (hmac, unsigned):
        response = _get(app, tok)
        assert response.status_code == 401
        assert "not accepted" in _diagnostics(response)


def test_a_replayed_jti_is_refused(app, keys):
    tok = token(keys["ec"], jti="once")
    assert _get(app, tok).status_code == 200
    assert _get(app, tok).status_code == 401


# rules: leeway 30 s; a token issued more than 30 s ahead of the service's clock is refused (RFC 7519 iat,
# CDS Hooks 2.0 "Trusting CDS Clients"), one expired more than 30 s ago too (exp).
IAT_TABLE = [(29, 200), (30, 200), (31, 401)]  # iat - now, in seconds
EXP_TABLE = [(-31, 401), (-30, 401), (-29, 200)]  # exp - now, in seconds


@pytest.mark.parametrize(("ahead", "status"), IAT_TABLE, ids=[f"iat=now{a:+d}s" for a, _ in IAT_TABLE])
def test_a_token_issued_in_the_future_beyond_the_leeway_is_refused(make_app, keys, ahead, status):
    now = NOW + timedelta(days=3)  # an injected clock, neither KNEE_CDS_NOW nor the machine's
    app = make_app(clock=lambda: now)
    at = int(now.timestamp())
    response = _get(app, token(keys["ec"], iat=at + ahead, exp=at + 300))
    assert response.status_code == status
    if status == 401:
        assert "future" in _diagnostics(response)


@pytest.mark.parametrize(("after", "status"), EXP_TABLE, ids=[f"exp=now{a:+d}s" for a, _ in EXP_TABLE])
def test_a_token_expired_beyond_the_leeway_is_refused(make_app, keys, after, status):
    now = NOW + timedelta(days=3)
    app = make_app(clock=lambda: now)
    at = int(now.timestamp())
    response = _get(app, token(keys["ec"], iat=at - 600, exp=at + after))
    assert response.status_code == status
    if status == 401:
        assert "expired" in _diagnostics(response)


def test_the_clock_is_read_on_every_call(make_app, keys):
    clock = {"now": NOW}
    app = make_app(clock=lambda: clock["now"])
    assert _get(app, token(keys["ec"], exp=T + 60)).status_code == 200
    clock["now"] = NOW + timedelta(seconds=90)  # exp + leeway reached
    assert _get(app, token(keys["ec"], exp=T + 60)).status_code == 401


def test_a_jku_off_the_allowlist_is_refused_though_its_url_would_serve_the_key(app, keys, jwks_endpoints):
    evil = token(keys["rsa"], kid="rsa-1", alg="RS384", jti="same", jku="https://evil.example.org/jwks.json")
    response = _get(app, evil)
    assert response.status_code == 401
    assert "jku" in _diagnostics(response)
    assert jwks_endpoints.asked == []  # refused before any fetch
    # The same token naming the allow-listed jku gets its key through the same transport.
    allowed = token(keys["rsa"], kid="rsa-1", alg="RS384", jti="same", jku=ALLOWED_JKU)
    assert _get(app, allowed).status_code == 200
    assert jwks_endpoints.asked == [ALLOWED_JKU]


def test_an_issuer_jwks_url_is_fetched_once_and_cached(app, keys, jwks_endpoints):
    for _ in range(2):
        assert _get(app, token(keys["rsa"], kid="rsa-1", alg="RS384", iss=REMOTE_ISS)).status_code == 200
    assert jwks_endpoints.asked == [REMOTE_JWKS_URL]


def test_jwk_sets_share_one_pool_that_is_closed_at_teardown(make_app, keys, jwks_endpoints):
    app = make_app()
    runtime = app.extensions["knee_cds"]
    assert not runtime.verifier.jwks_pool.is_open  # none in gunicorn's master: made on first use
    assert _get(app, token(keys["rsa"], kid="rsa-1", alg="RS384", jku=ALLOWED_JKU)).status_code == 200
    assert _get(app, token(keys["rsa"], kid="rsa-1", alg="RS384", iss=REMOTE_ISS)).status_code == 200
    assert jwks_endpoints.asked == [ALLOWED_JKU, REMOTE_JWKS_URL]
    assert jwks_endpoints.closed == 0  # a client per fetch would close the transport after each one
    runtime.close()
    assert jwks_endpoints.closed == 1
    assert not runtime.verifier.jwks_pool.is_open


@pytest.fixture
def loopback_jwks(keys):
    body = json.dumps({"keys": [_jwk(keys["rsa"], "rsa-1")]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    server.shutdown()


def test_a_jwk_set_is_fetched_over_real_http(tmp_path, keys, loopback_jwks):
    path = tmp_path / "loopback-issuers.json"
    path.write_text(json.dumps({"issuers": [{"iss": REMOTE_ISS, "jwks_url": loopback_jwks}]}))
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'l.db'}", now="2026-11-20", auth="jwt",
                              trusted_issuers=str(path)))
    try:
        assert _get(app, token(keys["rsa"], kid="rsa-1", alg="RS384", iss=REMOTE_ISS)).status_code == 200
    finally:
        app.extensions["knee_cds"].close()


def test_cors_preflight_needs_no_token(app):
    response = app.test_client().options("/cds-services", headers={"Origin": "https://sandbox.cds-hooks.org",
                                                                    "Access-Control-Request-Method": "GET"})
    assert response.status_code in (200, 204)


def test_jwt_mode_without_an_issuer_file_refuses_to_start(tmp_path):
    with pytest.raises(ConfigurationError, match="KNEE_CDS_TRUSTED_ISSUERS"):
        create_app(Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}", auth="jwt"))


def test_the_example_issuer_file_loads():
    from cds_service.auth import load_issuers

    from .conftest import ROOT

    issuers = load_issuers(str(ROOT / "deploy" / "trusted-issuers.example.json"))
    assert "https://sandbox.cds-hooks.org" in issuers


def test_a_replay_to_another_worker_is_refused_too(app, make_app, keys):
    # A second app on the same database stands in for another gunicorn worker or host.
    other = make_app()
    tok = token(keys["ec"], jti="shared-once")
    assert _get(app, tok).status_code == 200
    assert _get(other, tok).status_code == 401


def test_the_in_memory_guard_alone_still_refuses_replays(keys):
    from cds_service.auth import JwtVerifier, TrustedIssuer
    from cds_service.errors import Unauthorized

    verifier = JwtVerifier({ISS: TrustedIssuer(ISS, {"keys": [_jwk(keys["ec"], "ec-1")]})}, clock=lambda: NOW)
    tok = token(keys["ec"], jti="mem-once")
    verifier.verify(f"Bearer {tok}", f"{BASE}/cds-services")
    with pytest.raises(Unauthorized, match="replay"):
        verifier.verify(f"Bearer {tok}", f"{BASE}/cds-services")
