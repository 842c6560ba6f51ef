"""Auth step: CDS Hooks 2.0 "Trusting CDS Clients" — every call carries a JWT signed by the client.

The client signs with an asymmetric key (never ``none``, never HMAC); the service accepts only
issuers on its allowlist, finds the key by ``kid`` in that issuer's JWK Set (given inline, fetched
from the issuer's configured URL, or from a ``jku`` the allowlist names), and checks ``aud`` (the
endpoint URL called), ``exp``, ``iat`` and a ``jti`` not seen before.

Times are judged against the app's clock (``KNEE_CDS_NOW`` or the real one, or a test's), not the machine's,
and JWK Sets are fetched through the app's HTTP transport over one pool per worker process.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
from jwt.algorithms import get_default_algorithms

from .errors import ConfigurationError, Unauthorized
from .fhir_client import ProcessPool

log = logging.getLogger(__name__)

ALLOWED_ALGORITHMS = ("ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
JWKS_TTL_SECONDS = 3600
JWKS_TIMEOUT_SECONDS = 2.0
LEEWAY_SECONDS = 30  # clock skew allowed between the EHR and this service, for exp, nbf and iat


@dataclass(frozen=True)
class TrustedIssuer:
    iss: str
    jwks: dict[str, Any] | None = None
    jwks_url: str | None = None
    jku_allowed: tuple[str, ...] = ()


def load_issuers(path: str) -> dict[str, TrustedIssuer]:
    """The allowlist: ``{"issuers": [{"iss": ..., "jwks": {...} | "jwks_url": ..., "jku": [...]}]}``."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
        issuers = {}
        for item in document["issuers"]:
            issuers[item["iss"]] = TrustedIssuer(item["iss"], item.get("jwks"), item.get("jwks_url"),
                                                 tuple(item.get("jku", [])))
        return issuers
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(f"cannot read the trusted-issuer file {path}: {exc}") from exc


def make_jwks_pool(transport: httpx.BaseTransport | None = None) -> ProcessPool:
    return ProcessPool(transport, timeout=JWKS_TIMEOUT_SECONDS, follow_redirects=False,
                       limits=httpx.Limits(max_connections=4, max_keepalive_connections=4))


@dataclass
class JwtVerifier:
    issuers: dict[str, TrustedIssuer]
    clock: Callable[[], datetime]
    jwks_pool: ProcessPool = field(default_factory=make_jwks_pool)
    # claim(iss, jti, exp, now) -> True the first time; the app passes the database-backed store so
    # that a token replayed to another worker or host is refused too.
    claim: Callable[[str, str, float, float], bool] | None = None
    _keys: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)
    _seen: dict[tuple[str, str], float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def verify(self, authorization: str | None, audience: str) -> dict[str, Any]:
        if not authorization or not authorization.startswith("Bearer "):
            raise Unauthorized("This service requires a CDS Hooks JWT: Authorization: Bearer <JWT>")
        token = authorization[len("Bearer "):].strip()
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"Malformed JWT: {type(exc).__name__}") from None
        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            raise Unauthorized(f"JWT algorithm '{alg}' is not accepted (asymmetric algorithms only)")
        if header.get("typ", "JWT") != "JWT" or not header.get("kid"):
            raise Unauthorized("JWT header needs typ JWT and a kid")
        issuer = self.issuers.get(str(unverified.get("iss")))
        if issuer is None:
            raise Unauthorized("JWT issuer is not trusted by this service")
        now = self.clock().timestamp()
        key = self._key(issuer, header, now)
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=audience,
                issuer=issuer.iss,
                # PyJWT would judge the times by the machine's clock: they are checked below, by the app's.
                options={"require": ["iss", "aud", "exp", "iat", "jti"],
                         "verify_exp": False, "verify_nbf": False, "verify_iat": False},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"JWT rejected: {exc}") from None
        check_times(claims, now)
        self._check_replay(issuer.iss, str(claims["jti"]), _numeric_date(claims, "exp"), now)
        return claims

    def close(self) -> None:
        self.jwks_pool.close()

    def _check_replay(self, iss: str, jti: str, exp: float, now: float) -> None:
        if self.claim is not None:
            if not self.claim(iss, jti, exp, now):
                raise Unauthorized("JWT already used (jti replay)")
            return
        with self._lock:
            for seen_key, seen_exp in list(self._seen.items()):
                if seen_exp + LEEWAY_SECONDS < now:
                    del self._seen[seen_key]
            if (iss, jti) in self._seen:
                raise Unauthorized("JWT already used (jti replay)")
            self._seen[(iss, jti)] = exp

    def _key(self, issuer: TrustedIssuer, header: dict[str, Any], now: float) -> Any:
        jku = header.get("jku")
        if jku is not None and jku not in issuer.jku_allowed:
            # Checked before any fetch: the service never calls a URL a token names on its own say.
            raise Unauthorized("JWT jku is not on this issuer's allowlist")
        jwks = issuer.jwks if jku is None and issuer.jwks is not None else self._fetch(jku or issuer.jwks_url, now)
        keys = jwks.get("keys")
        for candidate in keys if isinstance(keys, list) else []:
            if isinstance(candidate, dict) and candidate.get("kid") == header["kid"]:
                algorithm = get_default_algorithms()[header["alg"]]
                try:
                    return algorithm.from_jwk(json.dumps(candidate))
                except (ValueError, TypeError, KeyError) as exc:
                    raise Unauthorized(f"JWK {header['kid']} is unusable: {type(exc).__name__}") from None
        raise Unauthorized("No key with the JWT's kid in the issuer's JWK Set")

    def _fetch(self, url: str | None, now: float) -> dict[str, Any]:
        if not url:
            raise Unauthorized("No JWK Set is configured for this issuer")
        cached = self._keys.get(url)
        if cached and cached[0] > now:
            return cached[1]
        try:
            response = self.jwks_pool.client().get(url, headers={"Accept": "application/json"})
            response.raise_for_status()
            jwks = response.json()
            if not isinstance(jwks, dict):
                raise ValueError("a JWK Set is a JSON object")
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("cannot fetch JWK Set %s: %s", url, type(exc).__name__)
            raise Unauthorized("The issuer's JWK Set cannot be fetched") from None
        self._keys[url] = (now + JWKS_TTL_SECONDS, jwks)
        return jwks


def check_times(claims: dict[str, Any], now: float) -> None:
    """RFC 7519 exp, nbf and iat, each with the leeway: expired, not yet valid, or issued in the future is refused."""
    if now >= _numeric_date(claims, "exp") + LEEWAY_SECONDS:
        raise Unauthorized("JWT expired")
    if "nbf" in claims and _numeric_date(claims, "nbf") > now + LEEWAY_SECONDS:
        raise Unauthorized("JWT not valid yet (nbf)")
    if _numeric_date(claims, "iat") > now + LEEWAY_SECONDS:
        raise Unauthorized("JWT issued in the future")


def _numeric_date(claims: dict[str, Any], name: str) -> float:
    value = claims[name]
    # NaN or infinity would compare as "never expires" (Python's json reads both).
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Unauthorized(f"JWT claim {name} is not a NumericDate")
    return float(value)
