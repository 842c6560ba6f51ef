"""`make fhir-server`: the project's FHIR test server (Medplum's router, tests/fhir_server) with every sample loaded.

    .venv/bin/python -m tools.fhir_server [--port 8103]

Serves FHIR R4 at http://127.0.0.1:PORT (CORS open, form POST _search answered, as the CDS Hooks Sandbox needs),
loads fhir_examples/ into it as of today (`knee-cds load`), and runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from cds_service.cli import main as knee_cds

ROOT = Path(__file__).resolve().parent.parent
SERVER_DIR = ROOT / "tests" / "fhir_server"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8103)
    args = parser.parse_args(argv)
    node = shutil.which("node")
    if node is None or not (SERVER_DIR / "node_modules").is_dir():
        print("needs Node.js and tests/fhir_server/node_modules (make test runs npm ci)", file=sys.stderr)
        return 1
    server = subprocess.Popen([node, "server.mjs", str(args.port)], cwd=SERVER_DIR, stdout=subprocess.PIPE, text=True)
    try:
        port = json.loads(server.stdout.readline())["port"]
        base = f"http://127.0.0.1:{port}"
        if knee_cds(["load", str(ROOT / "fhir_examples"), "--fhir-server", base]) != 0:
            return 1
        print(f"FHIR server with the samples at {base} (Ctrl-C stops it)", flush=True)
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    raise SystemExit(main())
