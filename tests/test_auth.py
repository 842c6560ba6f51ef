"""Client authentication (CDS Hooks 2.0 "Trusting CDS Clients") with real JWTs signed by keys
generated here, and a JWK Set served over real HTTP."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from cds_service import Settings, create_app

from .conftest import example_request

ISS = "https://ehr.example.org"
BASE = "http://localhost"


def _jwk(private_key, kid: str) -> dict:
    algorithm = ECAlgorithm if isinstance(private_key, ec.EllipticCurvePrivateKey) else RSAAlgorithm
    public = json.loads(algorithm.to_jwk(private_key.public_key()))
    return {**public, "kid": kid, "use": "sig"}


@pytest.fixture(scope="module")
def keys():
    return {"ec": ec.generate_private_key(ec.SECP384R1()), "rsa": rsa.generate_private_key(65537, 2048),
            "other": ec.generate_private_key(ec.SECP384R1())}


@pytest.fixture(scope="module")
def jwks_server(keys):
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


@pytest.fixture
def app(tmp_path, keys, jwks_server):
    issuers = {"issuers": [
        {"iss": ISS, "jwks": {"keys": [_jwk(keys["ec"], "ec-1")]}, "jku": [jwks_server]},
        {"iss": "https://remote.example.org", "jwks_url": jwks_server},
    ]}
    path = tmp_path / "issuers.json"
    path.write_text(json.dumps(issuers))
    application = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'a.db'}", now="2026-11-20", auth="jwt",
                                      trusted_issuers=str(path)))
    yield application
    application.extensions["knee_cds"].store.dispose()


def token(key, kid="ec-1", alg="ES384", aud=f"{BASE}/cds-services", iss=ISS, exp_in=300, jti=None, **headers) -> str:
    now = int(time.time())
    claims = {"iss": iss, "aud": aud, "iat": now, "exp": now + exp_in, "jti": jti or str(uuid.uuid4())}
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid, "typ": "JWT", **headers})


def _get(app, tok: str | None, path="/cds-services"):
    headers = {"Authorization": f"Bearer {tok}"} if tok else {}
    return app.test_client().get(path, headers=headers)


def test_a_valid_client_jwt_is_accepted(app, keys):
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


@pytest.mark.parametrize("case", ["missing", "expired", "unknown-issuer", "other-key", "unknown-kid", "garbage"])
def test_bad_tokens_are_401_operation_outcomes(app, keys, case):
    tok = {
        "missing": None,
        "expired": token(keys["ec"], exp_in=-120),
        "unknown-issuer": token(keys["ec"], iss="https://evil.example.org"),
        "other-key": token(keys["other"]),
        "unknown-kid": token(keys["ec"], kid="nope"),
        "garbage": "not.a.jwt",
    }[case]
    response = _get(app, tok)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.get_json()["issue"][0]["code"] == "login"


def test_symmetric_and_unsigned_tokens_are_refused(app, keys):
    now = int(time.time())
    claims = {"iss": ISS, "aud": f"{BASE}/cds-services", "iat": now, "exp": now + 60, "jti": "x"}
    hmac = jwt.encode(claims, "shared-secret-of-32-bytes-or-more!!", algorithm="HS256", headers={"kid": "ec-1"})
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": "ec-1"})
    for tok in (hmac, unsigned):
        response = _get(app, tok)
        assert response.status_code == 401
        assert "not accepted" in response.get_json()["issue"][0]["diagnostics"]


def test_a_replayed_jti_is_refused(app, keys):
    tok = token(keys["ec"], jti="once")
    assert _get(app, tok).status_code == 200
    assert _get(app, tok).status_code == 401


def test_keys_from_an_allowed_jku_and_from_a_jwks_url_are_fetched(app, keys, jwks_server):
    via_jku = token(keys["rsa"], kid="rsa-1", alg="RS384", jku=jwks_server)
    assert _get(app, via_jku).status_code == 200
    via_url = token(keys["rsa"], kid="rsa-1", alg="RS384", iss="https://remote.example.org")
    assert _get(app, via_url).status_code == 200


def test_a_jku_outside_the_allowlist_is_refused_without_fetching(app, keys):
    tok = token(keys["ec"], jku="https://evil.example.org/jwks.json")
    assert _get(app, tok).status_code == 401


def test_cors_preflight_needs_no_token(app):
    response = app.test_client().options("/cds-services", headers={"Origin": "https://sandbox.cds-hooks.org",
                                                                    "Access-Control-Request-Method": "GET"})
    assert response.status_code in (200, 204)


def test_jwt_mode_without_an_issuer_file_refuses_to_start(tmp_path):
    with pytest.raises(RuntimeError, match="KNEE_CDS_TRUSTED_ISSUERS"):
        create_app(Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}", auth="jwt"))


def test_the_example_issuer_file_loads(tmp_path):
    from cds_service.auth import load_issuers

    from .conftest import ROOT

    issuers = load_issuers(str(ROOT / "deploy" / "trusted-issuers.example.json"))
    assert "https://sandbox.cds-hooks.org" in issuers


def test_a_replay_to_another_worker_is_refused_too(app, keys, tmp_path):
    # A second app on the same database stands in for another gunicorn worker or host.
    settings = app.extensions["knee_cds"].settings
    other = create_app(settings)
    tok = token(keys["ec"], jti="shared-once")
    assert _get(app, tok).status_code == 200
    assert _get(other, tok).status_code == 401
    other.extensions["knee_cds"].store.dispose()


def test_the_in_memory_guard_alone_still_refuses_replays(keys):
    from cds_service.auth import JwtVerifier, TrustedIssuer

    verifier = JwtVerifier({ISS: TrustedIssuer(ISS, {"keys": [_jwk(keys["ec"], "ec-1")]})})
    tok = token(keys["ec"], jti="mem-once")
    verifier.verify(f"Bearer {tok}", f"{BASE}/cds-services")
    with pytest.raises(Exception, match="replay"):
        verifier.verify(f"Bearer {tok}", f"{BASE}/cds-services")
