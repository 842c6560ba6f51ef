"""FHIR REST client for the prefetch fallback, and the per-process HTTP pool every outbound call uses.

The HTTP transport is injected (tests pass a real server's URL, or an ``httpx.MockTransport`` for
units); without one, connections go through the SSRF guard of ``netguard``. Connection pools are created
lazily in the process that uses them, so gunicorn's preloaded master never holds a pool that forked
workers would share. A hook call's reads share one budget of time and bytes, bodies included.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from .errors import FhirFetchError
from .netguard import GuardedTransport, HostPolicy, within
from .validation import load_json, plausible_bundle

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"


# One text for every way a server can fail to answer (refused, reset, silent, not HTTP, an address the guard
# refuses, the budget used up): a caller must not learn from the 412 whether a port is open or a host exists.
UNREACHABLE = "the FHIR server could not be reached, or did not answer within the deadline"


@dataclass
class Deadline:
    """One time and size budget shared by every fetch of a hook call (fetches run in parallel threads)."""

    seconds: float
    max_bytes: int | None = None
    monotonic: Callable[[], float] = time.monotonic
    started: float = field(init=False)
    bytes_read: int = field(init=False, default=0)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.started = self.monotonic()

    def remaining(self) -> float:
        return self.seconds - (self.monotonic() - self.started)

    def bytes_left(self) -> int | None:
        return None if self.max_bytes is None else self.max_bytes - self.bytes_read

    def spend(self, size: int) -> None:
        """Count ``size`` more bytes of answers; past the cap the read is given up."""
        with self._lock:
            self.bytes_read += size
            over = self.max_bytes is not None and self.bytes_read > self.max_bytes
        if over:
            raise FhirFetchError(f"the FHIR server's answers exceed {self.max_bytes:,} bytes for one call")


class ProcessPool:
    """One ``httpx.Client`` per process, made on first use.

    gunicorn builds the app in its master and then forks the workers: a pool made before the fork would
    be shared by every worker (and closing it in one would break TLS sessions in the others). For the same
    reason a transport with a connection pool of its own is made here too, by ``make_transport``.
    """

    def __init__(self, transport: httpx.BaseTransport | None = None,
                 make_transport: Callable[[], httpx.BaseTransport] | None = None, **options: Any):
        self._transport = transport
        self._make_transport = make_transport
        self._options = options
        self._client: httpx.Client | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        """Whether this process has made its pool (and not closed it)."""
        return self._client is not None and self._pid == os.getpid()

    def client(self) -> httpx.Client:
        with self._lock:
            if not self.is_open:
                transport = self._transport
                if transport is None and self._make_transport is not None:
                    transport = self._make_transport()
                self._client = httpx.Client(transport=transport, **self._options)
                self._pid = os.getpid()
            assert self._client is not None
            return self._client

    def close(self) -> None:
        with self._lock:
            if self.is_open and self._client is not None:
                self._client.close()
            self._client = None  # a pool inherited from the parent is left to the parent


class FhirClient:
    """Reads a request's ``fhirServer``. Without an injected transport (tests inject one) every connection goes
    through the SSRF guard of ``policy``; the scheme is checked whatever the transport."""

    def __init__(self, transport: httpx.BaseTransport | None = None, max_pages: int = 20,
                 max_bytes: int | None = None, policy: HostPolicy | None = None):
        self._max_pages = max_pages
        self.max_bytes = max_bytes
        self.policy = policy or HostPolicy()
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=16)
        self.pool = ProcessPool(
            transport,
            make_transport=lambda: GuardedTransport(self.policy, limits),
            follow_redirects=False,
            trust_env=False,
        )

    def close(self) -> None:
        self.pool.close()

    def get_json(self, url: str, token: str | None, deadline: Deadline, what: str | None = None) -> dict[str, Any] | None:
        """GET one FHIR URL; ``None`` for a 404 on a read (the resource does not exist).

        ``what`` names the read in error texts (``GET .../Condition``): never the URL, whose path and query
        carry patient ids. The whole read, body included, stays within the deadline and the size cap."""
        try:
            scheme = urlsplit(url).scheme
            what = what or describe(url)
        except ValueError as exc:
            raise FhirFetchError("fhirServer is not a usable URL") from exc
        if not self.policy.allows_scheme(scheme):
            allowed = "http or https" if self.policy.allow_http else "https"
            raise FhirFetchError(f"fhirServer must be an {allowed} URL")
        remaining = deadline.remaining()
        if remaining <= 0:
            raise FhirFetchError(UNREACHABLE)
        headers = {"Accept": FHIR_JSON, "Accept-Encoding": "gzip, deflate"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            with within(deadline.remaining), self.pool.client().stream(
                "GET", url, headers=headers, timeout=httpx.Timeout(remaining)
            ) as response:
                if response.status_code == 404 and "?" not in url:
                    return None
                if response.status_code != 200:
                    raise FhirFetchError(f"HTTP {response.status_code} from {what}")
                body = _read_body(response, deadline)
        except httpx.InvalidURL as exc:
            raise FhirFetchError("fhirServer is not a usable URL") from exc
        except httpx.HTTPError as exc:
            cause = exc.__cause__ or exc
            log.warning("FHIR server %s not usable: %s: %s", _origin(url), type(cause).__name__, cause)
            raise FhirFetchError(UNREACHABLE) from exc
        try:
            payload = load_json(body)
        except ValueError as exc:  # not JSON, or nested deeper than the request limit
            raise FhirFetchError(f"not JSON: {what}") from exc
        if not isinstance(payload, dict) or "resourceType" not in payload:
            raise FhirFetchError(f"not a FHIR resource: {what}")
        if payload["resourceType"] == "OperationOutcome":
            raise FhirFetchError(f"OperationOutcome from {what}")
        if payload["resourceType"] == "Bundle" and not plausible_bundle(payload):
            raise FhirFetchError(f"malformed Bundle (entry or link of the wrong type): {what}")
        return payload

    def fetch(self, base: str, relative: str, token: str | None, deadline: Deadline,
              enough: Callable[[dict[str, Any]], bool] = lambda page: False) -> list[dict[str, Any]]:
        """All resources a read or search yields, following searchset ``next`` links until ``enough`` says so."""
        url = urljoin(base.rstrip("/") + "/", relative.lstrip("/"))
        payload = self.get_json(url, token, deadline, describe(relative))
        if payload is None:
            return []
        if payload["resourceType"] != "Bundle":
            return [payload]
        return self.collect_pages(base, payload, token, deadline, enough)

    def collect_pages(
        self, base: str, bundle: dict[str, Any], token: str | None, deadline: Deadline,
        enough: Callable[[dict[str, Any]], bool] = lambda page: False,
    ) -> list[dict[str, Any]]:
        resources = bundle_resources(bundle)
        pages = 1
        next_url = next_link(bundle)
        while next_url and not enough(bundle):
            if not same_origin(base, next_url):
                # Never send the bearer token to a host the EHR did not name.
                raise FhirFetchError("a next link leaves the FHIR server")
            if pages >= self._max_pages:
                raise FhirFetchError(f"more than {self._max_pages} pages of results")
            page = self.get_json(next_url, token, deadline, f"page {pages + 1} of a search")
            if page is None or page.get("resourceType") != "Bundle":
                raise FhirFetchError("next page is not a Bundle")
            resources.extend(bundle_resources(page))
            pages += 1
            bundle = page
            next_url = next_link(page)
        return resources


def _read_body(response: httpx.Response, deadline: Deadline) -> bytes:
    """The decoded body, read chunk by chunk against the time left and the bytes left.

    Decoding is done here rather than by httpx, so that a small compressed answer cannot unpack into more
    memory than the cap allows."""
    if response.is_stream_consumed:  # an answer built in memory (a test transport): httpx has read and decoded it
        deadline.spend(len(response.content))
        return response.content
    declared = response.headers.get("Content-Length", "")
    left = deadline.bytes_left()
    if declared.isdigit() and left is not None and int(declared) > left:
        deadline.spend(int(declared))  # refused before a byte of it is read
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", "deflate"):
        raise FhirFetchError(f"unsupported Content-Encoding {encoding[:20]!r}")
    # wbits 32 + 15: a zlib or gzip header, as HTTP's "deflate" and "gzip" send.
    inflater = zlib.decompressobj(32 + zlib.MAX_WBITS) if encoding != "identity" else None
    chunks: list[bytes] = []
    try:
        for raw in response.iter_raw():
            pending = raw
            while pending:
                if inflater is None:
                    chunk, pending = pending, b""
                else:
                    left = deadline.bytes_left()
                    chunk = inflater.decompress(pending, 0 if left is None else max(left, 0) + 1)
                    pending = inflater.unconsumed_tail
                deadline.spend(len(chunk))
                chunks.append(chunk)
            if deadline.remaining() <= 0:
                raise httpx.ReadTimeout("the call's deadline ended during the body")
        if inflater is not None:
            rest = inflater.flush()
            deadline.spend(len(rest))
            chunks.append(rest)
    except zlib.error as exc:
        raise FhirFetchError("the FHIR server's answer does not decompress") from exc
    return b"".join(chunks)


def describe(url: str) -> str:
    """``GET .../Condition`` for a URL or a relative query: the resource type, never an id or a parameter."""
    path = urlsplit(url).path.rstrip("/")
    segments = [s for s in path.split("/") if s]
    # A read ends in Type/id, a search in Type; a FHIR type name starts with a capital letter.
    kinds = [s for s in segments[-2:] if s[:1].isupper()]
    return f"GET .../{kinds[0] if kinds else ''}"


def bundle_resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        # Search outcome entries carry warnings about the search, not patient data.
        if isinstance(resource, dict) and resource.get("resourceType") != "OperationOutcome":
            out.append(resource)
    return out


def next_link(bundle: dict[str, Any]) -> str | None:
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return link["url"]
    return None


def same_origin(base: str, url: str) -> bool:
    a, b = urlsplit(base), urlsplit(url)
    return (a.scheme, a.netloc) == (b.scheme, b.netloc)


def _origin(url: str) -> str:
    """Scheme, host and port: what an operator needs to know which server failed, without path or query."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
