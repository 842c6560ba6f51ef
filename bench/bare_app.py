"""The benchmark's baseline: a Flask app that only parses the hook's JSON body and returns a fixed card.

Served with the same gunicorn settings as the service (`gunicorn -c gunicorn.conf.py 'bench.bare_app:create_app()'`),
it is the least any Flask service must spend on a request: HTTP, one JSON parse, one small JSON answer.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify, request

FIXED_RESPONSE: dict[str, Any] = {
    "cards": [
        {
            "uuid": "00000000-0000-4000-8000-000000000000",
            "summary": "Bare app: body parsed",
            "indicator": "info",
            "source": {"label": "knee-cds benchmark baseline"},
        }
    ]
}


def create_app() -> Flask:
    app = Flask(__name__)
    app.json.sort_keys = False

    @app.post("/cds-services/<service_id>")
    def call_service(service_id: str):
        request.get_json()
        return jsonify(FIXED_RESPONSE)

    return app
