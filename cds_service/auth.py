"""Auth step: CDS Hooks 2.0 "Trusting CDS Clients" — every call carries a JWT signed by the client.

The client signs with an asymmetric key (never ``none``, never HMAC); the service accepts only
issuers on its allowlist, finds the key by ``kid`` in that issuer's inline JWK Set, and only for a
``kid`` not there fetches the ``jku`` the allowlist names (or the issuer's configured URL); the key
must fit ``alg``. It checks ``aud`` (the endpoint URL under KNEE_CDS_PUBLIC_BASE_URL), ``exp``, ``iat``,
``typ`` (JWT when present) and a non-empty ``jti`` not seen before. A refused token is told only that
it was not accepted; the reason is logged (never the token).

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

from .errors import ConfigurationError, KneeCdsError, Unauthorized
from .fhir_client import ProcessPool

log = logging.getLogger(__name__)

ALLOWED_ALGORITHMS = ("ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
JWKS_TTL_SECONDS = 3600
JWKS_MIN_REFETCH_SECONDS = 60
JWKS_TIMEOUT_SECONDS = 2.0
LEEWAY_SECONDS = 30  # clock skew allowed between the EHR and this service, for exp, nbf and iat
TOKEN_REQUIRED = "This service requires a CDS Hooks client JWT: Authorization: Bearer <JWT>"
TOKEN_NOT_ACCEPTED = "The client JWT was not accepted"


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


class _Rejected(KneeCdsError):
    """Why a token was refused: for the service log only (the client learns just that it was not accepted).
    ``reason`` is one word from a fixed set, the label of the refusal metric; the message is the log's."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


# The key a JWT names must be of the family and curve its alg says: anything else is refused before PyJWT
# sees it (an ES384 header naming an RSA key would otherwise escape as a 500).
_KEY_TYPES = {"ES256": ("EC", "P-256"), "ES384": ("EC", "P-384"), "ES512": ("EC", "P-521"),
              **{alg: ("RSA", None) for alg in ALLOWED_ALGORITHMS if alg[:2] in ("RS", "PS")}}


@dataclass
class JwtVerifier:
    issuers: dict[str, TrustedIssuer]
    clock: Callable[[], datetime]
    jwks_pool: ProcessPool = field(default_factory=make_jwks_pool)
    # claim(iss, jti, exp, now) -> True the first time; the app passes the database-backed store so
    # that a token replayed to another worker or host is refused too.
    claim: Callable[[str, str, float, float], bool] | None = None
    # on_refusal(reason): told of every refused call (the metrics); reason is one word from a fixed set, never
    # anything from the token.
    on_refusal: Callable[[str], None] | None = None
    _keys: dict[str, tuple[float, dict[str, Any] | None]] = field(default_factory=dict)  # url -> (fetched at, set)
    _seen: dict[tuple[str, str], float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def verify(self, authorization: str | None, audience: str) -> dict[str, Any]:
        if not authorization or not authorization.startswith("Bearer "):
            self._refused("missing")
            raise Unauthorized(TOKEN_REQUIRED)
        try:
            return self._verified_claims(authorization[len("Bearer "):].strip(), audience)
        except _Rejected as exc:
            # Operators see which check failed; the client does not (CDS Hooks security guidance), nor the log the token.
            log.warning("client JWT refused: %s", exc)
            self._refused(exc.reason)
            raise Unauthorized(TOKEN_NOT_ACCEPTED) from None

    def _refused(self, reason: str) -> None:
        if self.on_refusal is not None:
            self.on_refusal(reason)

    def close(self) -> None:
        self.jwks_pool.close()

    def _verified_claims(self, token: str, audience: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise _Rejected(f"malformed JWT ({exc})", "malformed") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
            raise _Rejected(f"algorithm {alg!r} is not accepted (asymmetric algorithms only)", "algorithm")
        if header.get("typ", "JWT") != "JWT":
            raise _Rejected(f"header typ {header.get('typ')!r} is not JWT", "header")
        if not isinstance(header.get("kid"), str) or not header["kid"]:
            raise _Rejected("header has no kid", "header")
        issuer = self.issuers.get(str(unverified.get("iss")))
        if issuer is None:
            raise _Rejected(f"issuer {unverified.get('iss')!r} is not trusted", "untrusted-issuer")
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
            reason = ("audience" if isinstance(exc, jwt.InvalidAudienceError)
                      else "signature" if isinstance(exc, jwt.InvalidSignatureError) else "claims")
            raise _Rejected(f"{exc} (issuer {issuer.iss}, kid {header['kid']!r}, expected aud {audience})",
                            reason) from None
        check_times(claims, now)
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti.strip():
            raise _Rejected("jti is not a non-empty string", "claims")
        self._check_replay(issuer.iss, jti, _numeric_date(claims, "exp"), now)
        return claims

    def _check_replay(self, iss: str, jti: str, exp: float, now: float) -> None:
        if self.claim is not None:
            if not self.claim(iss, jti, exp, now):
                raise _Rejected(f"jti replay (issuer {iss})", "replay")
            return
        with self._lock:
            for seen_key, seen_exp in list(self._seen.items()):
                if seen_exp + LEEWAY_SECONDS < now:
                    del self._seen[seen_key]
            if (iss, jti) in self._seen:
                raise _Rejected(f"jti replay (issuer {iss})", "replay")
            self._seen[(iss, jti)] = exp

    def _key(self, issuer: TrustedIssuer, header: dict[str, Any], now: float) -> Any:
        jku = header.get("jku")
        if jku is not None and jku not in issuer.jku_allowed:
            # Checked before any fetch: the service never calls a URL a token names on its own say.
            raise _Rejected(f"jku {jku!r} is not on the allowlist of issuer {issuer.iss}", "jku-not-allowed")
        kid = header["kid"]
        # The inline set first: a configured key works offline, whatever jku the client also names
        # (the CDS Hooks Sandbox always sends one). Only an unknown kid sends us to the network.
        jwk = _find(issuer.jwks, kid)
        if jwk is None:
            url = jku or issuer.jwks_url
            if not url:
                raise _Rejected(f"no key {kid!r} for issuer {issuer.iss}, and no JWK Set URL to fetch", "unknown-key")
            jwk = _find(self._fetch(url, kid, now), kid)
            if jwk is None:
                raise _Rejected(f"no key {kid!r} in the JWK Set of issuer {issuer.iss} at {url}", "unknown-key")
        return _public_key(jwk, header["alg"], kid)

    def _fetch(self, url: str, kid: str, now: float) -> dict[str, Any] | None:
        """The JWK Set at ``url``: cached for an hour, fetched again sooner only for a kid it lacks (key rotation),
        and at most once a minute, failures included, so that tokens with made-up kids cannot make us hammer it."""
        cached = self._keys.get(url)
        if cached is not None:
            fetched_at, jwks = cached
            fresh = now - fetched_at < JWKS_TTL_SECONDS
            if now - fetched_at < JWKS_MIN_REFETCH_SECONDS or (fresh and _find(jwks, kid) is not None):
                return jwks
        try:
            response = self.jwks_pool.client().get(url, headers={"Accept": "application/json"})
            response.raise_for_status()
            fetched = response.json()
            if not isinstance(fetched, dict):
                raise ValueError("a JWK Set is a JSON object")
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("cannot fetch JWK Set %s: %s", url, exc)
            # Keep the last good set (still good for its known kids) and wait before trying again.
            self._keys[url] = (now, cached[1] if cached else None)
            raise _Rejected(f"the JWK Set at {url} cannot be fetched", "jwks-unavailable") from None
        self._keys[url] = (now, fetched)
        return fetched


def _find(jwks: dict[str, Any] | None, kid: str) -> dict[str, Any] | None:
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    for candidate in keys if isinstance(keys, list) else []:
        if isinstance(candidate, dict) and candidate.get("kid") == kid:
            return candidate
    return None


def _public_key(jwk: dict[str, Any], alg: str, kid: str) -> Any:
    kty, crv = _KEY_TYPES[alg]
    if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
        raise _Rejected(f"alg {alg} does not fit key {kid!r} ({jwk.get('kty')} {jwk.get('crv') or ''})".rstrip(),
                        "key-mismatch")
    if jwk.get("alg", alg) != alg or jwk.get("use", "sig") != "sig" or "d" in jwk:
        raise _Rejected(f"key {kid!r} is not a public {alg} signing key", "key-mismatch")
    try:
        return get_default_algorithms()[alg].from_jwk(json.dumps(jwk))
    except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
        raise _Rejected(f"key {kid!r} is unusable ({exc})", "key-mismatch") from None


def check_times(claims: dict[str, Any], now: float) -> None:
    """RFC 7519 exp, nbf and iat, each with the leeway: expired, not yet valid, or issued in the future is refused."""
    if now >= _numeric_date(claims, "exp") + LEEWAY_SECONDS:
        raise _Rejected("JWT expired", "expired")
    if "nbf" in claims and _numeric_date(claims, "nbf") > now + LEEWAY_SECONDS:
        raise _Rejected("JWT not valid yet (nbf)", "not-yet-valid")
    if _numeric_date(claims, "iat") > now + LEEWAY_SECONDS:
        raise _Rejected("JWT issued in the future", "issued-in-future")


def _numeric_date(claims: dict[str, Any], name: str) -> float:
    value = claims[name]
    # NaN or infinity would compare as "never expires" (Python's json reads both).
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _Rejected(f"claim {name} is not a NumericDate", "claims")
    return float(value)
