"""Where the service may connect when a request names a ``fhirServer``: the guard against SSRF.

``fhirServer`` comes from the caller, so without a guard anyone who can call a hook could make the service
connect to the hospital's internal network or to the machine itself, and send it the ``fhirAuthorization``
token. The guard sits in httpx's network layer, under every connection the FHIR client opens: it resolves
the host once, refuses loopback, private, link-local, multicast and other non-public addresses unless the
host is on the allow-list (``KNEE_CDS_FHIR_ALLOWED_HOSTS``), and connects to the very address it checked,
so a DNS server cannot answer the check with a public address and the connection with an internal one.
It also keeps every socket wait inside the hook call's time budget.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import certifi
import httpcore
import httpx

from .errors import KneeCdsError

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# getaddrinfo has no timeout of its own: lookups run in a few threads and are waited for only within the budget.
# The threads bound what a slow resolver can hold; a lookup that waits for a thread times out like a slow one.
# One pool per process: threads do not survive gunicorn's fork.
_resolver_pools: dict[int, ThreadPoolExecutor] = {}
_resolver_lock = threading.Lock()


def _resolver_pool() -> ThreadPoolExecutor:
    with _resolver_lock:
        pool = _resolver_pools.get(os.getpid())
        if pool is None:
            pool = _resolver_pools[os.getpid()] = ThreadPoolExecutor(max_workers=4, thread_name_prefix="knee-cds-dns")
        return pool


# The time left of the current hook call's budget, set by the FHIR client around each request (a context
# variable: each fetch thread has its own).
_time_left: ContextVar[Callable[[], float] | None] = ContextVar("knee_cds_time_left", default=None)


class AddressRefused(httpcore.ConnectError, KneeCdsError):
    """The host resolves to an address the service may not connect to (httpx reports it as a ConnectError)."""


@dataclass(frozen=True)
class HostPolicy:
    """Which ``fhirServer`` URLs the service may connect to."""

    allow_http: bool = False
    host_patterns: tuple[str, ...] = ()  # host names, ``*`` wildcards allowed (``*.hospital.org``), lower case
    networks: tuple[IpNetwork, ...] = ()  # addresses and networks allowed even when not public (``10.2.0.0/16``)

    @classmethod
    def from_settings(cls, allow_http: bool, allowed_hosts: str | None) -> HostPolicy:
        """``allowed_hosts`` is the comma-separated list of ``KNEE_CDS_FHIR_ALLOWED_HOSTS``."""
        patterns: list[str] = []
        networks: list[IpNetwork] = []
        for item in (allowed_hosts or "").split(","):
            item = item.strip().lower().strip("[]")
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                patterns.append(item)
        return cls(allow_http, tuple(patterns), tuple(networks))

    def allows_scheme(self, scheme: str) -> bool:
        return scheme == "https" or (scheme == "http" and self.allow_http)

    def names_host(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return any(fnmatchcase(host, pattern) for pattern in self.host_patterns)

    def allows_address(self, address: IpAddress) -> bool:
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        if any(address in network for network in self.networks):
            return True
        return address.is_global and not address.is_multicast


def resolve(host: str, port: int, timeout: float | None) -> list[IpAddress]:
    """The addresses of ``host``, looked up once, within ``timeout`` seconds."""
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:
        return [literal]
    lookup = _resolver_pool().submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        infos = lookup.result(timeout=timeout)
    except FutureTimeout as exc:
        raise httpcore.ConnectTimeout(f"no DNS answer for {host} in time") from exc
    except OSError as exc:
        raise httpcore.ConnectError(f"DNS lookup of {host} failed: {exc}") from exc
    addresses: list[IpAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])  # drop an IPv6 zone index
        if address not in addresses:
            addresses.append(address)
    return addresses


@contextmanager
def within(time_left: Callable[[], float]) -> Iterator[None]:
    """Every connect, DNS lookup, TLS handshake, read and write inside waits at most ``time_left()`` seconds."""
    token = _time_left.set(time_left)
    try:
        yield
    finally:
        _time_left.reset(token)


def _bounded(timeout: float | None) -> float | None:
    # httpcore fixes a read timeout once per response body; the budget shrinks while the body trickles in.
    time_left = _time_left.get()
    if time_left is None:
        return timeout
    left = max(time_left(), 0.01)  # never 0: a zero timeout would make the socket non-blocking
    return left if timeout is None else min(timeout, left)


class _BoundedStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream):
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _bounded(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _bounded(timeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _BoundedStream(self._stream.start_tls(ssl_context, server_hostname, _bounded(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


@dataclass
class GuardedBackend(httpcore.NetworkBackend):
    """httpcore's network backend with the address check: resolve once, check, connect to what was checked."""

    policy: HostPolicy
    resolver: Callable[[str, int, float | None], list[IpAddress]] = resolve
    network: httpcore.NetworkBackend = field(default_factory=httpcore.SyncBackend)

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        started = time.monotonic()
        addresses = self.resolver(host, port, _bounded(timeout))
        if not addresses:
            raise httpcore.ConnectError(f"{host} has no address")
        if not self.policy.names_host(host):
            refused = [a for a in addresses if not self.policy.allows_address(a)]
            if refused:
                # One non-public address refuses the host: which one a client would get is the resolver's choice.
                raise AddressRefused(f"{host} resolves to {refused[0]}, which is not a public address and not"
                                     " allowed by KNEE_CDS_FHIR_ALLOWED_HOSTS")
        last: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in addresses:
            wait = None if timeout is None else max(timeout - (time.monotonic() - started), 0.01)
            try:
                stream = self.network.connect_tcp(str(address), port, _bounded(wait), local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
                continue
            return _BoundedStream(stream)
        assert last is not None
        raise last

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        raise AddressRefused("the FHIR client connects over TCP only")

    def sleep(self, seconds: float) -> None:
        self.network.sleep(seconds)


class GuardedTransport(httpx.HTTPTransport):
    """httpx's HTTP transport over a connection pool whose network backend is the guard.

    httpx takes no network backend, so the pool it builds is replaced by one with the same kind of TLS
    context (certifi's CA bundle, as httpx's default) and the given limits. No proxy from the environment
    is used: a proxy would resolve the host itself, after the check.
    """

    def __init__(self, policy: HostPolicy, limits: httpx.Limits,
                 resolver: Callable[[str, int, float | None], list[IpAddress]] = resolve):
        super().__init__(trust_env=False)
        self._pool.close()
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl.create_default_context(cafile=certifi.where()),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(policy, resolver),
        )
