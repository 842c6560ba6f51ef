"""FHIR REST client for the prefetch fallback, and the per-process HTTP pool every outbound call uses.

The HTTP transport is injected (tests pass a real server's URL, or an ``httpx.MockTransport`` for
units). Connection pools are created lazily in the process that uses them, so gunicorn's
preloaded master never holds a pool that forked workers would share.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from .errors import FhirFetchError

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"


@dataclass
class Deadline:
    """One time budget shared by every fetch of a hook call."""

    seconds: float
    monotonic: Callable[[], float] = time.monotonic
    started: float = field(init=False)

    def __post_init__(self) -> None:
        self.started = self.monotonic()

    def remaining(self) -> float:
        return self.seconds - (self.monotonic() - self.started)


class ProcessPool:
    """One ``httpx.Client`` per process, made on first use.

    gunicorn builds the app in its master and then forks the workers: a pool made before the fork would
    be shared by every worker (and closing it in one would break TLS sessions in the others).
    """

    def __init__(self, transport: httpx.BaseTransport | None = None, **options: Any):
        self._transport = transport
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
                self._client = httpx.Client(transport=self._transport, **self._options)
                self._pid = os.getpid()
            assert self._client is not None
            return self._client

    def close(self) -> None:
        with self._lock:
            if self.is_open and self._client is not None:
                self._client.close()
            self._client = None  # a pool inherited from the parent is left to the parent


class FhirClient:
    def __init__(self, transport: httpx.BaseTransport | None = None, max_pages: int = 20):
        self._max_pages = max_pages
        self.pool = ProcessPool(
            transport,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
            follow_redirects=False,
        )

    def close(self) -> None:
        self.pool.close()

    def get_json(self, url: str, token: str | None, deadline: Deadline) -> dict[str, Any] | None:
        """GET one FHIR URL; ``None`` for a 404 on a read (the resource does not exist)."""
        remaining = deadline.remaining()
        if remaining <= 0:
            raise FhirFetchError(f"deadline of {deadline.seconds:g}s used up before GET {_redact(url)}")
        headers = {"Accept": FHIR_JSON}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            response = self.pool.client().get(url, headers=headers, timeout=httpx.Timeout(remaining))
        except httpx.TimeoutException as exc:
            raise FhirFetchError(f"timed out after {deadline.seconds:g}s: GET {_redact(url)}") from exc
        except httpx.HTTPError as exc:
            raise FhirFetchError(f"{type(exc).__name__}: GET {_redact(url)}") from exc
        if response.status_code == 404 and "?" not in url:
            return None
        if response.status_code != 200:
            raise FhirFetchError(f"HTTP {response.status_code} from GET {_redact(url)}")
        try:
            payload = response.json()
        except ValueError as exc:
            raise FhirFetchError(f"not JSON: GET {_redact(url)}") from exc
        if not isinstance(payload, dict) or "resourceType" not in payload:
            raise FhirFetchError(f"not a FHIR resource: GET {_redact(url)}")
        if payload["resourceType"] == "OperationOutcome":
            raise FhirFetchError(f"OperationOutcome from GET {_redact(url)}")
        return payload

    def fetch(self, base: str, relative: str, token: str | None, deadline: Deadline,
              enough: Callable[[dict[str, Any]], bool] = lambda page: False) -> list[dict[str, Any]]:
        """All resources a read or search yields, following searchset ``next`` links until ``enough`` says so."""
        url = urljoin(base.rstrip("/") + "/", relative.lstrip("/"))
        payload = self.get_json(url, token, deadline)
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
                raise FhirFetchError(f"next link leaves the FHIR server: {_redact(next_url)}")
            if pages >= self._max_pages:
                raise FhirFetchError(f"more than {self._max_pages} pages of results")
            page = self.get_json(next_url, token, deadline)
            if page is None or page.get("resourceType") != "Bundle":
                raise FhirFetchError("next page is not a Bundle")
            resources.extend(bundle_resources(page))
            pages += 1
            bundle = page
            next_url = next_link(page)
        return resources


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


def _redact(url: str) -> str:
    """Drop the query: it holds patient ids, which do not belong in logs or error texts."""
    return url.split("?", 1)[0]
