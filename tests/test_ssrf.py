"""fhirServer comes from the caller: the service connects only where a hospital would let it (issue 8, item 3).

https only (http where KNEE_CDS_FHIR_ALLOW_HTTP says so); never a loopback, private, link-local or multicast
address after DNS resolution unless KNEE_CDS_FHIR_ALLOWED_HOSTS names it; the connection goes to the address
that was checked; no redirect is followed; and every network failure reads the same, so the service cannot
be used as a port scanner.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from typing import Any

import httpcore
import httpx
import pytest

from cds_service import Settings, create_app
from cds_service.errors import ConfigurationError
from cds_service.netguard import AddressRefused, GuardedBackend, GuardedTransport, HostPolicy

from .conftest import LOCAL_FHIR, RawServer, example_request

TOKEN = "ssrf-test-bearer-token"


def _settings(tmp_path, **overrides: Any) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path / 'f.db'}", now="2026-11-20", **overrides)


def _body(fhir_server: str) -> dict[str, Any]:
    """The chronic knee pain request with everything prefetched but the Patient, which must be read from fhirServer."""
    body = example_request("chronic-posterior-knee-pain.json", "order-select", fhir_server)
    body["prefetch"].pop("patient")
    body["fhirAuthorization"] = {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
                                 "scope": "user/*.read", "subject": "knee-cds"}
    return body


def _call(settings: Settings, body: dict[str, Any], transport: httpx.BaseTransport | None = None):
    app = create_app(settings, fhir_transport=transport)
    try:
        return app.test_client().post("/cds-services/knee-imaging-select", json=body)
    finally:
        app.extensions["knee_cds"].close()


PATIENT = json.dumps(example_request("chronic-posterior-knee-pain.json", "order-select")["prefetch"]["patient"]).encode()


def serve_patient(server: RawServer, conn: socket.socket) -> None:
    server.read_request(conn)
    server.send(conn, b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nConnection: close\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(PATIENT), PATIENT))


def test_a_fhir_server_on_loopback_is_not_contacted_with_production_settings(tmp_path):
    with RawServer(serve_patient) as server:
        response = _call(_settings(tmp_path, fhir_allow_http=True), _body(server.base))
    assert response.status_code == 412
    assert server.connections == 0  # nothing connected, so the token went nowhere
    assert TOKEN.encode() not in server.received


def test_the_same_server_is_read_when_the_settings_allow_loopback(tmp_path):
    with RawServer(serve_patient) as server:
        response = _call(_settings(tmp_path, **LOCAL_FHIR), _body(server.base))
    assert response.status_code == 200, response.get_json()
    assert f"Authorization: Bearer {TOKEN}".encode() in server.received


def test_plain_http_is_refused_unless_a_setting_allows_it(tmp_path):
    calls: list[httpx.Request] = []

    def ehr(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503)

    body = _body("http://ehr.example.org/fhir")
    refused = _call(_settings(tmp_path), body, httpx.MockTransport(ehr))
    assert refused.status_code == 412
    assert "https" in refused.get_json()["issue"][0]["diagnostics"]
    assert calls == []  # the token was not sent in the clear
    _call(_settings(tmp_path, fhir_allow_http=True), body, httpx.MockTransport(ehr))
    assert len(calls) == 1


class RecordingNetwork(httpcore.NetworkBackend):
    """Stands in for the sockets: records where the guard connects, and connects nowhere."""

    def __init__(self) -> None:
        self.connected: list[tuple[str, int]] = []

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        self.connected.append((host, port))
        raise httpcore.ConnectError("recorded, not connected")


def _resolving_to(*answers: str):
    """A resolver answering the given addresses for any host, one answer per lookup; records the lookups."""
    lookups: list[str] = []

    def resolver(host: str, port: int, timeout: float | None) -> list:
        lookups.append(host)
        return [ipaddress.ip_address(answers[min(len(lookups), len(answers)) - 1])]
    resolver.lookups = lookups  # type: ignore[attr-defined]
    return resolver


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1",  # loopback, also written as an IPv4-mapped IPv6 address
    "10.1.2.3", "172.16.0.9", "192.168.1.20", "fd00::1",  # private networks
    "169.254.169.254", "fe80::1",  # link-local, among them the cloud metadata service
    "224.0.0.251", "ff02::1",  # multicast
    "0.0.0.0", "100.64.0.1",  # "this host", carrier-grade NAT
])
def test_a_host_resolving_to_a_non_public_address_is_refused(address):
    network = RecordingNetwork()
    backend = GuardedBackend(HostPolicy(), resolver=_resolving_to(address), network=network)
    with pytest.raises(AddressRefused):
        backend.connect_tcp("fhir.attacker.example", 443, timeout=1)
    assert network.connected == []


def test_the_allow_list_names_hosts_by_pattern_and_networks_by_address():
    policy = HostPolicy.from_settings(False, "*.hospital.test, 10.2.0.0/16")
    for host, address in [("fhir.hospital.test", "10.9.9.9"), ("fhir.other.test", "10.2.3.4")]:
        network = RecordingNetwork()
        with pytest.raises(httpcore.ConnectError, match="recorded"):
            GuardedBackend(policy, resolver=_resolving_to(address), network=network).connect_tcp(host, 443, timeout=1)
        assert network.connected == [(address, 443)]
    with pytest.raises(AddressRefused):
        GuardedBackend(policy, resolver=_resolving_to("10.3.0.1"), network=RecordingNetwork()).connect_tcp(
            "fhir.other.test", 443, timeout=1)


def test_the_connection_goes_to_the_address_that_was_checked():
    # A rebinding DNS server answers the check with a public address and a second lookup with loopback:
    # there is no second lookup.
    resolver = _resolving_to("93.184.216.34", "127.0.0.1")
    network = RecordingNetwork()
    with pytest.raises(httpcore.ConnectError, match="recorded"):
        GuardedBackend(HostPolicy(), resolver=resolver, network=network).connect_tcp("fhir.example.org", 443, timeout=1)
    assert network.connected == [("93.184.216.34", 443)]
    assert resolver.lookups == ["fhir.example.org"]


def test_an_allowed_host_name_is_reached_at_its_checked_address_with_its_own_name(tmp_path):
    # fhir.hospital.test exists in no DNS: the answer can only come through the address the guard resolved.
    with RawServer(serve_patient) as server:
        policy = HostPolicy.from_settings(True, "fhir.hospital.test")
        transport = GuardedTransport(policy, httpx.Limits(), resolver=_resolving_to("127.0.0.1"))
        response = _call(_settings(tmp_path, fhir_allow_http=True, fhir_allowed_hosts="fhir.hospital.test"),
                         _body(f"http://fhir.hospital.test:{server.port}"), transport)
    assert response.status_code == 200, response.get_json()
    assert f"Host: fhir.hospital.test:{server.port}".encode() in server.received


def test_a_redirect_is_not_followed(tmp_path):
    with RawServer(serve_patient) as target:
        def redirect(ehr: RawServer, conn: socket.socket) -> None:
            ehr.read_request(conn)
            ehr.send(conn, f"HTTP/1.1 302 Found\r\nLocation: {target.base}/Patient/pkp-chronic-01\r\n"
                           "Content-Length: 0\r\nConnection: close\r\n\r\n".encode())

        with RawServer(redirect) as ehr:
            response = _call(_settings(tmp_path, **LOCAL_FHIR), _body(ehr.base))
    assert response.status_code == 412
    assert target.connections == 0


def _closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


def test_the_412_reads_the_same_for_an_open_and_a_closed_port(tmp_path):
    def hang_up(server: RawServer, conn: socket.socket) -> None:
        pass

    def silent(server: RawServer, conn: socket.socket) -> None:
        time.sleep(2)

    def not_http(server: RawServer, conn: socket.socket) -> None:
        conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
        time.sleep(0.5)

    settings = _settings(tmp_path, fhir_deadline_seconds=0.5, **LOCAL_FHIR)
    diagnostics = {"closed port": _call(settings, _body(f"http://127.0.0.1:{_closed_port()}"))}
    for name, handler in [("hangs up", hang_up), ("silent", silent), ("not HTTP", not_http)]:
        with RawServer(handler) as server:
            diagnostics[name] = _call(settings, _body(server.base))
    with RawServer(hang_up) as server:  # and the guard's own refusal reads the same
        diagnostics["refused address"] = _call(_settings(tmp_path, fhir_allow_http=True, fhir_deadline_seconds=0.5),
                                               _body(server.base))
    assert {name: r.status_code for name, r in diagnostics.items()} == dict.fromkeys(diagnostics, 412)
    texts = {name: r.get_json()["issue"][0]["diagnostics"] for name, r in diagnostics.items()}
    assert len(set(texts.values())) == 1, texts


def test_production_defaults_are_strict_and_make_run_style_settings_are_read_from_the_environment():
    assert HostPolicy.from_settings(Settings().fhir_allow_http, Settings().fhir_allowed_hosts) == HostPolicy()
    settings = Settings.from_env({"KNEE_CDS_FHIR_ALLOW_HTTP": "true", "KNEE_CDS_FHIR_ALLOWED_HOSTS": "127.0.0.1,localhost",
                                  "KNEE_CDS_FHIR_MAX_BYTES": "5000000"})
    policy = HostPolicy.from_settings(settings.fhir_allow_http, settings.fhir_allowed_hosts)
    assert policy.allows_scheme("http") and policy.names_host("LOCALHOST")
    assert policy.allows_address(ipaddress.ip_address("127.0.0.1")) and settings.fhir_max_bytes == 5_000_000
    with pytest.raises(ConfigurationError, match="KNEE_CDS_FHIR_ALLOW_HTTP"):
        Settings.from_env({"KNEE_CDS_FHIR_ALLOW_HTTP": "ture"})
