"""Auth step: CDS Hooks 2.0 "Trusting CDS Clients" — every call carries a JWT signed by the client.

The client signs with an asymmetric key (never ``none``, never HMAC); the service accepts only
issuers on its allowlist, finds the key by ``kid`` in that issuer's JWK Set (given inline, fetched
from the issuer's configured URL, or from a ``jku`` the allowlist names), and checks ``aud`` (the
endpoint URL called), ``exp``, ``iat`` and a ``jti`` not seen before.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
from jwt.algorithms import get_default_algorithms

from .errors import Unauthorized

log = logging.getLogger(__name__)

ALLOWED_ALGORITHMS = ("ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
JWKS_TTL_SECONDS = 3600
LEEWAY_SECONDS = 30


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
        raise RuntimeError(f"cannot read the trusted-issuer file {path}: {exc}") from exc


@dataclass
class JwtVerifier:
    issuers: dict[str, TrustedIssuer]
    transport: httpx.BaseTransport | None = None
    clock: Callable[[], float] = time.time
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
        key = self._key(issuer, header)
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=audience,
                issuer=issuer.iss,
                leeway=LEEWAY_SECONDS,
                options={"require": ["iss", "aud", "exp", "iat", "jti"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"JWT rejected: {exc}") from None
        if claims["iat"] > self.clock() + LEEWAY_SECONDS:
            raise Unauthorized("JWT issued in the future")
        self._check_replay(issuer.iss, str(claims["jti"]), float(claims["exp"]))
        return claims

    def _check_replay(self, iss: str, jti: str, exp: float) -> None:
        now = self.clock()
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

    def _key(self, issuer: TrustedIssuer, header: dict[str, Any]) -> Any:
        jku = header.get("jku")
        if jku is not None and jku not in issuer.jku_allowed:
            raise Unauthorized("JWT jku is not on this issuer's allowlist")
        jwks = issuer.jwks if jku is None and issuer.jwks is not None else self._fetch(jku or issuer.jwks_url)
        for candidate in jwks.get("keys", []):
            if candidate.get("kid") == header["kid"]:
                algorithm = get_default_algorithms()[header["alg"]]
                try:
                    return algorithm.from_jwk(json.dumps(candidate))
                except (ValueError, TypeError, KeyError) as exc:
                    raise Unauthorized(f"JWK {header['kid']} is unusable: {type(exc).__name__}") from None
        raise Unauthorized("No key with the JWT's kid in the issuer's JWK Set")

    def _fetch(self, url: str | None) -> dict[str, Any]:
        if not url:
            raise Unauthorized("No JWK Set is configured for this issuer")
        now = self.clock()
        cached = self._keys.get(url)
        if cached and cached[0] > now:
            return cached[1]
        try:
            with httpx.Client(transport=self.transport, timeout=2.0) as client:
                response = client.get(url, headers={"Accept": "application/json"})
                response.raise_for_status()
                jwks = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("cannot fetch JWK Set %s: %s", url, type(exc).__name__)
            raise Unauthorized("The issuer's JWK Set cannot be fetched") from None
        self._keys[url] = (now + JWKS_TTL_SECONDS, jwks)
        return jwks
