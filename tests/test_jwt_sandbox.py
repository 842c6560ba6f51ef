"""The CDS Hooks Sandbox (https://sandbox.cds-hooks.org) works with KNEE_CDS_AUTH=jwt and the example
trusted-issuer file, with no network: its key set is configured inline, so the jku it always names is
never fetched. The Sandbox's private key is public; a key generated here stands in for it under its kid."""

from __future__ import annotations

import copy
import json
import math
import uuid
from datetime import UTC, datetime

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from cds_service import Settings, create_app

from .conftest import ROOT, example_request

SANDBOX = "https://sandbox.cds-hooks.org"
SANDBOX_KID = "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f"
SANDBOX_JKU = "https://sandbox.cds-hooks.org/.well-known/jwks.json"
BASE = "https://cds.example.org"  # KNEE_CDS_PUBLIC_BASE_URL: what the Sandbox is told to call
# Half a second into a second: the Sandbox rounds Date.now()/1000, so its iat is 0.5 s ahead of this clock.
NOW = datetime(2026, 11, 20, 12, 0, 0, 500_000, tzinfo=UTC)


@pytest.fixture(scope="module")
def sandbox_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture
def issuers_file(tmp_path, sandbox_key):
    """deploy/trusted-issuers.example.json with the test's public key in place of the Sandbox's."""
    document = json.loads((ROOT / "deploy" / "trusted-issuers.example.json").read_text(encoding="utf-8"))
    sandbox = next(issuer for issuer in document["issuers"] if issuer["iss"] == SANDBOX)
    assert SANDBOX_JKU in sandbox["jku"]
    [shipped] = [key for key in sandbox["jwks"]["keys"] if key["kid"] == SANDBOX_KID]
    ours = json.loads(ECAlgorithm.to_jwk(sandbox_key.public_key()))
    sandbox["jwks"]["keys"] = [{**copy.deepcopy(shipped), "x": ours["x"], "y": ours["y"]}]
    path = tmp_path / "trusted-issuers.json"
    path.write_text(json.dumps(document))
    return path


class NoNetwork(httpx.BaseTransport):
    """The app's only way out (FHIR server and JWK Sets): any request is a test failure."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.asked.append(str(request.url))
        pytest.fail(f"no fetch expected, but the service asked for {request.url}")


@pytest.fixture
def network():
    return NoNetwork()


@pytest.fixture
def client(tmp_path, issuers_file, network):
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'sandbox.db'}", auth="jwt",
                        trusted_issuers=str(issuers_file), public_base_url=BASE)
    app = create_app(settings, fhir_transport=network, clock=lambda: NOW)
    yield app.test_client()
    app.extensions["knee_cds"].close()


def sandbox_token(key: ec.EllipticCurvePrivateKey, url: str) -> str:
    """As the Sandbox signs (src/retrieve-data-helpers/jwt-generator.js): ES384, its kid and jku, times from
    Math.round(Date.now() / 1000), exp five minutes on, a fresh uuid jti, aud the URL it calls."""
    now = math.floor(NOW.timestamp() + 0.5)  # JavaScript's Math.round: halves go up (Python's round goes to even)
    claims = {"iss": SANDBOX, "aud": url, "exp": now + 300, "iat": now, "jti": str(uuid.uuid4())}
    return jwt.encode(claims, key, algorithm="ES384", headers={"typ": "JWT", "kid": SANDBOX_KID, "jku": SANDBOX_JKU})


def test_the_token_is_issued_half_a_second_ahead_of_the_service_clock(sandbox_key):
    claims = jwt.decode(sandbox_token(sandbox_key, BASE), options={"verify_signature": False})
    assert claims["iat"] - NOW.timestamp() == pytest.approx(0.5)
    assert jwt.get_unverified_header(sandbox_token(sandbox_key, BASE))["jku"] == SANDBOX_JKU


def test_sandbox_calls_are_accepted_offline(client, sandbox_key, network):
    def bearer(path: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {sandbox_token(sandbox_key, BASE + path)}"}

    discovery = client.get("/cds-services", headers=bearer("/cds-services"))
    assert discovery.status_code == 200
    assert "posterior-knee-pain" in [service["id"] for service in discovery.get_json()["services"]]

    hook = "/cds-services/posterior-knee-pain"
    answer = client.post(hook, json=example_request("chronic-posterior-knee-pain.json", "patient-view"),
                         headers=bearer(hook))
    assert answer.status_code == 200
    assert answer.get_json()["cards"]

    feedback = {"feedback": [{"card": answer.get_json()["cards"][0]["uuid"], "outcome": "overridden",
                              "outcomeTimestamp": "2026-11-20T11:59:55Z"}]}
    stored = client.post(f"{hook}/feedback", json=feedback, headers=bearer(f"{hook}/feedback"))
    assert stored.status_code == 200
    assert network.asked == []


def test_a_sandbox_token_for_another_service_is_refused(client, sandbox_key):
    # The Sandbox's private key is public: aud is what keeps its tokens from being replayed here.
    token = sandbox_token(sandbox_key, "https://other.example.org/cds-services")
    assert client.get("/cds-services", headers={"Authorization": f"Bearer {token}"}).status_code == 401
