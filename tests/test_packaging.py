"""The card definitions travel inside the wheel, and the service loads them from there."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

from .conftest import ROOT


def test_the_wheel_carries_the_cards_and_loads_them(tmp_path):
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"),
                    str(ROOT)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("knee_cds-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "cds_service/_data/cards/cards.toml" in names
    assert "cds_service/_data/cards/valuesets.json" in names
    assert "cds_service/schemas/request.schema.json" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    # Run from an empty folder with only the unpacked wheel on the path: no checkout to fall back to.
    probe = (
        "import cds_service, cds_service.knowledge as k; kn = k.load_knowledge(); "
        "print(cds_service.__file__); print(kn.source_dir); print(len(kn.cards['cards']))"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, check=True, capture_output=True,
                         text=True).stdout.splitlines()
    assert out[0].startswith(str(site))
    assert out[1] == str(site / "cds_service" / "_data" / "cards")
    assert int(out[2]) >= 2
