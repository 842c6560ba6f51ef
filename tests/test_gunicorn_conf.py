"""gunicorn.conf.py reads the deployment settings from the environment (KNEE_CDS_HOST, PORT, workers, timeout)."""

from __future__ import annotations

import runpy

import pytest
from gunicorn.util import parse_address

from .conftest import ROOT


@pytest.mark.parametrize(("host", "address"), [
    ("127.0.0.1", ("127.0.0.1", 8081)),
    ("0.0.0.0", ("0.0.0.0", 8081)),
    ("::", ("::", 8081)),  # IPv6: bracketed for gunicorn, whether or not the setting brackets it
    ("[::1]", ("::1", 8081)),
    ("cds.internal", ("cds.internal", 8081)),
])
def test_the_bind_address_is_one_gunicorn_reads(monkeypatch, host, address):
    monkeypatch.setenv("KNEE_CDS_HOST", host)
    monkeypatch.setenv("PORT", "8081")
    config = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert parse_address(config["bind"]) == address


@pytest.mark.parametrize("workers", ["0", "two", "-1"])
def test_a_worker_count_that_is_not_a_whole_number_stops_the_start(monkeypatch, workers):
    monkeypatch.setenv("KNEE_CDS_WORKERS", workers)
    with pytest.raises(SystemExit, match="KNEE_CDS_WORKERS must be a whole number"):
        runpy.run_path(str(ROOT / "gunicorn.conf.py"))
