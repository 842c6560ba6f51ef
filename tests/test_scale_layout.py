"""The production layout files of deploy/ agree with the service and with `make scale-test`, which runs them
(tools/scale_test.py; it needs nginx and PostgreSQL and is not part of `make test`)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from cds_service.settings import Settings
from tools.scale_test import INSTANCE_ENV, SITE_VALUES, SetupError, instance_environment, render

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
# Read by gunicorn: gunicorn.conf.py reads the address, gunicorn itself FORWARDED_ALLOW_IPS.
GUNICORN_VARIABLES = {"KNEE_CDS_HOST", "PORT", "FORWARDED_ALLOW_IPS"}


def documented_environment() -> dict[str, str]:
    lines = (DEPLOY / "knee-cds.env.example").read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def test_the_instance_environment_names_only_settings_the_service_reads_and_their_values_are_valid():
    environment = documented_environment()
    known = {f.metadata["env"] for f in fields(Settings)} | GUNICORN_VARIABLES
    assert set(environment) - known == set()
    settings = Settings.from_env(environment)
    assert (settings.auth, settings.public_base_url) == ("jwt", "https://cds.example.org")
    assert settings.database_url.startswith("postgresql+psycopg://")


def test_the_scale_test_changes_only_the_instance_values_of_the_documented_environment(tmp_path):
    documented = documented_environment()
    rendered = instance_environment("postgresql+psycopg://postgres@127.0.0.1:5432/x", 9001, tmp_path / "i.json",
                                    "https://localhost:9443")
    assert {name for name in documented if rendered[name] != documented[name]} == set(INSTANCE_ENV)


def test_the_documented_nginx_configuration_is_the_one_the_scale_test_renders():
    site = (DEPLOY / "nginx.conf").read_text(encoding="utf-8")
    rendered = render(site, {value: f"<{n}>" for n, value in enumerate(SITE_VALUES)}, "deploy/nginx.conf")
    assert all(f"<{n}>" in rendered for n in range(len(SITE_VALUES)))
    with pytest.raises(SetupError, match="found 0 times"):
        render(site, {"server knee-cds-3.internal:8080": "x"}, "deploy/nginx.conf")
