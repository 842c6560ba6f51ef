"""Browser clients (the CDS Hooks Sandbox) can call discovery, services and feedback."""

from __future__ import annotations

import pytest

PATHS = ["/cds-services", "/cds-services/posterior-knee-pain", "/cds-services/knee-imaging-sign/feedback"]


@pytest.mark.parametrize("path", PATHS)
def test_preflight_allows_authorization_and_content_type(client, path):
    response = client.options(path, headers={
        "Origin": "https://sandbox.cds-hooks.org",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    })
    assert response.status_code in (200, 204)
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    allowed = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


def test_actual_responses_carry_the_allow_origin_header(client):
    response = client.get("/cds-services", headers={"Origin": "https://sandbox.cds-hooks.org"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_error_responses_carry_it_too_so_browsers_can_read_them(client):
    response = client.post("/cds-services/posterior-knee-pain", json={}, headers={"Origin": "https://x.example"})
    assert response.status_code == 400
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_pages_only_an_operator_reads_carry_no_cors_header(client):
    # With KNEE_CDS_AUTH=off, a page of any site could otherwise read them from the operator's browser.
    for path in ("/metrics", "/healthz", "/readyz"):
        response = client.get(path, headers={"Origin": "https://elsewhere.example"})
        assert response.status_code in (200, 503), path
        assert "Access-Control-Allow-Origin" not in response.headers, path
    assert client.get("/openapi.json").headers["Access-Control-Allow-Origin"] == "*"
