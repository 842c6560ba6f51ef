"""GET /preview: the card preview page for developers (only with KNEE_CDS_PREVIEW; never in production).

The page (preview_static/) lets a developer pick a sample of `fhir_examples/` or paste a FHIR Bundle or a CDS Hooks
request, pick the hook and the day, and see the cards as an EHR shows them. This blueprint only serves the page and
builds the request body (samples.py: a tagged sample is moved so that its reference date is the picked day); the
browser then calls the real hook and feedback endpoints, so what the page shows is what an EHR gets. The routes are
left out of /openapi.json: they are a development tool, off by default, not part of the service's API.
"""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from .errors import BadRequest, NotFound
from .http import protect_page
from .samples import as_of, build_request, reference_date, sample_resources
from .validation import load_json

bp = Blueprint("preview", __name__, static_folder="preview_static", static_url_path="/preview/static")

# A checkout's samples; an installed wheel carries none, and the page then offers only the paste box.
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "fhir_examples"
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")

# Scripts and styles come from this blueprint's own static files only (no inline code, no CDN, no web fonts), so a
# card text that slipped through unescaped still could not run. connect-src allows any http(s) origin because the
# page can call the CDS service of another origin (its "CDS service" field), which is how CORS gets exercised.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                           "connect-src 'self' http: https:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


@bp.after_request
def protect(response: Response) -> Response:
    return protect_page(response, CONTENT_SECURITY_POLICY)


@bp.get("/preview")
def page() -> Response:
    return bp.send_static_file("index.html")


@bp.get("/preview/samples")
def samples() -> Response:
    """The samples with the hooks the manifest names for each, the services by hook, and the service's today."""
    rt = current_app.extensions["knee_cds"]
    listed = [{"name": file.removesuffix(".json"), "description": entry.get("description", ""),
               "referenceDate": entry.get("today"), "hooks": list(entry.get("expect", {})),
               "expect": entry.get("expect", {})}
              for file, entry in _manifest().items()]
    return jsonify({"today": rt.clock().date().isoformat(),
                    "services": [{"hook": s.hook, "id": s.id} for s in rt.services],
                    "samples": listed})


@bp.post("/preview/request")
def build() -> Response:
    """The request body the page sends to the hook.

    Body: {"hook", "date"?, and "sample" (a sample's name) or "document" (a pasted Bundle or CDS Hooks request)}.
    A tagged sample bundle is moved so that its reference date is `date` (default: today by the service's clock); an
    untagged Bundle keeps its dates; a pasted request body is returned as it is, as an EHR would send it.
    """
    rt = current_app.extensions["knee_cds"]
    asked = _json_object()
    hook = asked.get("hook")
    service = next((s for s in rt.services if s.hook == hook), None)
    if service is None:
        raise BadRequest(f"hook must be one of {', '.join(s.hook for s in rt.services)}", expression="hook")
    day = _picked_day(asked.get("date")) or rt.clock().date()
    if "sample" in asked:
        document = _sample(asked["sample"])
    elif isinstance(asked.get("document"), dict):
        document = asked["document"]
    else:
        raise BadRequest("Give a sample's name or a pasted document (a FHIR Bundle or a CDS Hooks request)",
                         expression="document")
    answer: dict[str, Any] = {"service": service.id, "hook": hook}
    if document.get("resourceType") != "Bundle":
        if "hook" not in document:
            raise BadRequest("The document is neither a FHIR Bundle nor a CDS Hooks request", expression="document")
        return jsonify({**answer, "request": document, "sentAsIs": True})
    try:
        reference = reference_date(document)
        moved = as_of(document, day)
    except (ValueError, OverflowError):  # 2026-13-45, or moved past year 9999
        raise BadRequest("A date of the sample (its timestamp, or a date to move) is not a day that can be moved to"
                         f" {day.isoformat()}", expression="document") from None
    resources = _resources(moved)
    if reference is not None:
        answer.update(referenceDate=reference.isoformat(), asOf=day.isoformat(), shiftDays=(day - reference).days)
    return jsonify({**answer, "request": _request(resources, hook)})


def _manifest() -> dict[str, dict[str, Any]]:
    path = EXAMPLES_DIR / "manifest.json"
    return json.loads(path.read_text(encoding="utf-8"))["examples"] if path.is_file() else {}


def _json_object() -> dict[str, Any]:
    try:
        body = load_json(request.get_data(cache=False))
    except ValueError:  # not JSON, not UTF-8, or nested too deep (JsonTooDeep is a ValueError)
        raise BadRequest("Body is not valid JSON", expression="$") from None
    if not isinstance(body, dict):
        raise BadRequest("Body must be a JSON object", expression="$")
    return body


def _picked_day(value: Any) -> date | None:
    if value is None or value == "":
        return None
    try:
        if isinstance(value, str) and _DAY.fullmatch(value):
            return date.fromisoformat(value)
    except ValueError:  # 2026-02-30
        pass
    raise BadRequest("date must be a day written YYYY-MM-DD", expression="date")


def _sample(name: Any) -> dict[str, Any]:
    # Only the manifest's names are looked up, so no request can name a file outside fhir_examples/.
    if not isinstance(name, str) or f"{name}.json" not in _manifest():
        raise NotFound(f"No sample '{str(name)[:64]}'; GET /preview/samples lists them", expression="sample")
    return json.loads((EXAMPLES_DIR / f"{name}.json").read_text(encoding="utf-8"))


def _resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        return sample_resources(bundle)
    except ValueError as exc:  # samples.py names the entry that is not a resource
        raise BadRequest(str(exc), expression="document.entry") from None


def _request(resources: list[dict[str, Any]], hook: str) -> dict[str, Any]:
    try:
        return build_request(resources, hook, services=current_app.extensions["knee_cds"].services)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        # samples.py reads the elements a prefetch search filters on (code, category, dates) as FHIR shapes them; a
        # pasted bundle can break those shapes, which is the paster's error, not the service's.
        raise BadRequest(f"A resource of the bundle is not shaped as FHIR says ({type(exc).__name__}: "
                         f"{str(exc)[:120]})", expression="document.entry") from None
