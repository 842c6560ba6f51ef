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
from cds_service.auth import TOKEN_NOT_ACCEPTED
from cds_service.errors import ConfigurationError

from .conftest import example_request

ISS = "https://ehr.example.org"
ALLOWED_JKU = "https://ehr.example.org/.well-known/jwks.json"
REMOTE_ISS = "https://remote.example.org"
REMOTE_JWKS_URL = "https://remote.example.org/jwks.json"
BASE = "https://cds.example.org"  # KNEE_CDS_PUBLIC_BASE_URL; the test client calls http://localhost
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
        self.timeouts: list[dict] = []
        self.closed = 0

        def answer(request: httpx.Request) -> httpx.Response:
            self.asked.append(str(request.url))
            self.timeouts.append(request.extensions["timeout"])
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
        {"iss": ISS, "jwks": {"keys": [_jwk(keys["ec"], "ec-1"), _jwk(keys["rsa"], "rsa-inline")]},
         "jku": [ALLOWED_JKU]},
        {"iss": REMOTE_ISS, "jwks_url": REMOTE_JWKS_URL},
    ]}
    path = tmp_path / "issuers.json"
    path.write_text(json.dumps(issuers))
    return path


@pytest.fixture
def settings(tmp_path, issuers_file):
    return Settings(database_url=f"sqlite:///{tmp_path / 'a.db'}", now="2026-11-20", auth="jwt",
                    trusted_issuers=str(issuers_file), public_base_url=BASE)


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
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid, "typ": "JWT", **headers})  # typ=None drops it


def _get(app, tok: str | None, path="/cds-services"):
    headers = {"Authorization": f"Bearer {tok}"} if tok else {}
    return app.test_client().get(path, headers=headers)


def _diagnostics(response) -> str:
    return response.get_json()["issue"][0]["diagnostics"]


def _refused(response, caplog, reason: str) -> bool:
    """401 saying only "not accepted" to the client, with the reason in the service log."""
    logged = " ".join(r.getMessage() for r in caplog.records if r.name == "cds_service.auth")
    return response.status_code == 401 and _diagnostics(response) == TOKEN_NOT_ACCEPTED and reason in logged


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
def test_a_token_issued_in_the_future_beyond_the_leeway_is_refused(make_app, keys, ahead, status, caplog):
    now = NOW + timedelta(days=3)  # an injected clock, neither KNEE_CDS_NOW nor the machine's
    app = make_app(clock=lambda: now)
    at = int(now.timestamp())
    response = _get(app, token(keys["ec"], iat=at + ahead, exp=at + 300))
    assert response.status_code == status
    if status == 401:
        assert _refused(response, caplog, "future")


@pytest.mark.parametrize(("after", "status"), EXP_TABLE, ids=[f"exp=now{a:+d}s" for a, _ in EXP_TABLE])
def test_a_token_expired_beyond_the_leeway_is_refused(make_app, keys, after, status, caplog):
    now = NOW + timedelta(days=3)
    app = make_app(clock=lambda: now)
    at = int(now.timestamp())
    response = _get(app, token(keys["ec"], iat=at - 600, exp=at + after))
    assert response.status_code == status
    if status == 401:
        assert _refused(response, caplog, "expired")


def test_the_clock_is_read_on_every_call(make_app, keys):
    clock = {"now": NOW}
    app = make_app(clock=lambda: clock["now"])
    assert _get(app, token(keys["ec"], exp=T + 60)).status_code == 200
    clock["now"] = NOW + timedelta(seconds=90)  # exp + leeway reached
    assert _get(app, token(keys["ec"], exp=T + 60)).status_code == 401


def test_a_jku_off_the_allowlist_is_refused_though_its_url_would_serve_the_key(app, keys, jwks_endpoints, caplog):
    evil = token(keys["rsa"], kid="rsa-1", alg="RS384", jti="same", jku="https://evil.example.org/jwks.json")
    assert _refused(_get(app, evil), caplog, "jku 'https://evil.example.org/jwks.json' is not on the allowlist")
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
                              trusted_issuers=str(path), public_base_url=BASE))
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
        create_app(Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}", auth="jwt", public_base_url=BASE))


def test_jwt_mode_without_a_public_base_url_refuses_to_start(tmp_path, issuers_file):
    # Without it, aud would have to come from the request's Host / X-Forwarded-* headers, which a client sets.
    with pytest.raises(ConfigurationError, match="KNEE_CDS_PUBLIC_BASE_URL"):
        create_app(Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}", auth="jwt",
                            trusted_issuers=str(issuers_file)))


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
    with pytest.raises(Unauthorized, match=TOKEN_NOT_ACCEPTED):
        verifier.verify(f"Bearer {tok}", f"{BASE}/cds-services")


FORWARDED = {"Host": "other.example.org", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "other.example.org"}


def test_aud_is_the_configured_base_url_whatever_host_the_request_claims(app, keys, caplog):
    # A token minted for another service is not replayable here by pretending to be that service's host.
    client = app.test_client()
    foreign = token(keys["ec"], aud="https://other.example.org/cds-services")
    response = client.get("/cds-services", headers={"Authorization": f"Bearer {foreign}", **FORWARDED})
    assert _refused(response, caplog, "aud")
    ours = token(keys["ec"])
    assert client.get("/cds-services", headers={"Authorization": f"Bearer {ours}", **FORWARDED}).status_code == 200


# Each a key the issuer trusts, named by a header whose alg is for another kind of key (or another curve).
MISMATCHES = {
    "ES384 naming an RSA key": ("rsa-inline", "ES384", "rsa"),
    "RS384 naming an EC key": ("ec-1", "RS384", "ec"),
    "PS256 naming an EC key": ("ec-1", "PS256", "ec"),
    "ES256 naming a P-384 key": ("ec-1", "ES256", "p256"),
    "ES512 naming a P-384 key": ("ec-1", "ES512", "p521"),
}


@pytest.mark.parametrize("case", MISMATCHES)
def test_an_alg_that_does_not_fit_the_kids_key_is_a_401(app, keys, case, caplog):
    kid, alg, signer = MISMATCHES[case]
    signing_key = {"rsa": keys["rsa"], "ec": keys["ec"], "p256": ec.generate_private_key(ec.SECP256R1()),
                   "p521": ec.generate_private_key(ec.SECP521R1())}[signer]
    # PyJWT signs with whatever key it is given for the alg; sign ES384 with an EC key, RS384 with RSA.
    if alg.startswith("ES") and signer == "rsa":
        signing_key = keys["ec"]
    if alg[:2] in ("RS", "PS"):
        signing_key = keys["rsa"]
    response = _get(app, token(signing_key, kid=kid, alg=alg))
    assert _refused(response, caplog, f"alg {alg} does not fit key {kid!r}")


def test_a_key_whose_jwk_names_another_alg_is_refused(tmp_path, keys, jwks_endpoints, caplog):
    path = tmp_path / "alg-pinned.json"
    pinned = {**_jwk(keys["ec"], "ec-1"), "alg": "ES256"}  # a P-384 key pinned to ES256 by its issuer
    path.write_text(json.dumps({"issuers": [{"iss": ISS, "jwks": {"keys": [pinned]}}]}))
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'p.db'}", now="2026-11-20", auth="jwt",
                              trusted_issuers=str(path), public_base_url=BASE), fhir_transport=jwks_endpoints)
    try:
        assert _refused(_get(app, token(keys["ec"])), caplog, "not a public ES384 signing key")
    finally:
        app.extensions["knee_cds"].close()


PYJWT_ERROR_NAMES = ("Error", "DecodeError", "InvalidAudience", "InvalidSignature", "InvalidKey", "MissingRequired",
                     "ImmatureSignature", "ExpiredSignature", "InvalidIssuer", "InvalidAlgorithm")


@pytest.mark.parametrize("case", ["garbage", "bad-header-json", "bad-signature", "wrong-aud", "no-jti", "no-exp",
                                  "unknown-kid", "alg-none", "replay"])
def test_a_refused_token_is_told_only_that_it_was_not_accepted(app, keys, case, caplog):
    claims = {"iss": ISS, "aud": f"{BASE}/cds-services", "iat": T, "exp": T + 60}
    tok = {
        "garbage": "not.a.jwt",
        "bad-header-json": "eyJhbGciOiJFUzM4NCIsImtpZCI6.eyJ9.c2ln",
        "bad-signature": token(keys["ec"])[:-8] + "AAAAAAAA",
        "wrong-aud": token(keys["ec"], aud="https://cds.example.org/elsewhere"),
        "no-jti": jwt.encode(claims, keys["ec"], algorithm="ES384", headers={"kid": "ec-1"}),
        "no-exp": jwt.encode({**claims, "exp": None, "jti": "j"}, keys["ec"], algorithm="ES384", headers={"kid": "ec-1"}),
        "unknown-kid": token(keys["ec"], kid="nope"),
        "alg-none": jwt.encode({**claims, "jti": "j"}, None, algorithm="none", headers={"kid": "ec-1"}),
        "replay": token(keys["ec"], jti="twice"),
    }[case]
    if case == "replay":
        assert _get(app, tok).status_code == 200
    caplog.clear()
    response = _get(app, tok)
    assert response.status_code == 401
    assert response.get_json()["issue"] == [{"severity": "error", "code": "login", "diagnostics": TOKEN_NOT_ACCEPTED}]
    logged = [r.getMessage() for r in caplog.records if r.name == "cds_service.auth"]
    assert logged and logged[0].startswith("client JWT refused: ")  # the operator learns why
    everything_logged = " ".join(r.getMessage() for r in caplog.records)
    assert tok not in everything_logged
    assert not tok.split(".")[2] or tok.split(".")[2] not in everything_logged
    assert not any(name in logged[0] for name in PYJWT_ERROR_NAMES)


@pytest.mark.parametrize(("typ", "status"), [("JWT", 200), (None, 200), ("at+jwt", 401), ("JWS", 401), ("jwt", 401)])
def test_typ_must_be_jwt_when_present(app, keys, typ, status):
    tok = token(keys["ec"], typ=typ)  # typ None: PyJWT leaves the header out, as a client may
    assert ("typ" in jwt.get_unverified_header(tok)) is (typ is not None)
    assert _get(app, tok).status_code == status


# PyJWT refuses a jti that is not a string; an empty or blank one is this service's check.
@pytest.mark.parametrize(("jti", "reason"), [("", "jti is not a non-empty string"), ("   ", "jti is not a non-empty string"),
                                             (7, "JWT ID must be a string"), (["a"], "JWT ID must be a string")])
def test_jti_must_be_a_non_empty_string(app, keys, jti, reason, caplog):
    claims = {"iss": ISS, "aud": f"{BASE}/cds-services", "iat": T, "exp": T + 60, "jti": jti}
    tok = jwt.encode(claims, keys["ec"], algorithm="ES384", headers={"kid": "ec-1", "typ": "JWT"})
    assert _refused(_get(app, tok), caplog, reason)


def test_an_inline_key_is_used_without_fetching_the_allowed_jku(app, keys, jwks_endpoints):
    # The CDS Hooks Sandbox always names its jku; with its key configured inline, no fetch (works offline).
    assert _get(app, token(keys["ec"], jku=ALLOWED_JKU)).status_code == 200
    assert jwks_endpoints.asked == []


def test_an_unknown_kid_fetches_the_allowed_jku_once_with_a_timeout(make_app, keys, jwks_endpoints):
    clock = {"now": NOW}
    app = make_app(clock=lambda: clock["now"])
    for _ in range(2):
        assert _get(app, token(keys["rsa"], kid="rsa-1", alg="RS384", jku=ALLOWED_JKU)).status_code == 200
    assert jwks_endpoints.asked == [ALLOWED_JKU]  # cached
    assert jwks_endpoints.timeouts[0] == {"connect": 2.0, "read": 2.0, "write": 2.0, "pool": 2.0}
    # A kid the cached set lacks (say, made up) is refused without a fetch within the minute...
    assert _get(app, token(keys["rsa"], kid="rsa-2", alg="RS384", jku=ALLOWED_JKU)).status_code == 401
    assert jwks_endpoints.asked == [ALLOWED_JKU]
    # ...and after it, looked for once more (the issuer may have rotated its keys).
    clock["now"] = NOW + timedelta(seconds=61)
    at = int(clock["now"].timestamp())
    assert _get(app, token(keys["rsa"], kid="rsa-2", alg="RS384", jku=ALLOWED_JKU, iat=at, exp=at + 60)).status_code == 401
    assert jwks_endpoints.asked == [ALLOWED_JKU, ALLOWED_JKU]


def test_a_jwk_set_that_cannot_be_fetched_is_a_401_and_not_retried_at_once(make_app, keys):
    tries = []

    def time_out(request: httpx.Request) -> httpx.Response:
        tries.append(str(request.url))
        raise httpx.ReadTimeout("no answer", request=request)

    app = make_app(transport=httpx.MockTransport(time_out))
    for _ in range(3):
        assert _get(app, token(keys["rsa"], kid="rsa-1", alg="RS384", jku=ALLOWED_JKU)).status_code == 401
    assert tries == [ALLOWED_JKU]
