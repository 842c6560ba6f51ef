"""GET /rules/{rule-id}: the public explanation of a rule (HTML for people, JSON with Accept: application/json).

Cards link here (`links`, type absolute), and cards whose advice rests on no guideline cite their rule page as their
source. The content comes from rules/explain.py; no patient data, no client JWT needed.
"""

from __future__ import annotations

import html
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from .errors import NotFound
from .rules.explain import explain

bp = Blueprint("rule_pages", __name__)


@bp.get("/rules/<rule_id>")
def rule_page(rule_id: str) -> Response:
    page = explain(rule_id, current_app.extensions["knee_cds"].knowledge.cards)
    if page is None:
        raise NotFound(f"No rule '{rule_id[:32]}'", expression="$")
    if request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json":
        return jsonify(page)
    return Response(_html(page), mimetype="text/html")


def _html(page: dict[str, Any]) -> str:
    e = html.escape
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>knee-cds rule {e(page['id'])}</title>"
             "</head><body>", f"<h1>Rule {e(page['id'])}</h1>", "<h2>What it checks</h2><ul>"]
    parts += [f"<li>{e(item)}</li>" for item in page["checks"]]
    parts.append("</ul>")
    if "thresholds" in page:
        parts.append("<h2>Thresholds</h2><table>")
        parts += [f"<tr><td>{e(t['what'])}</td><td>{e(t['value'])}</td></tr>" for t in page["thresholds"]]
        parts.append("</table>")
    if "advice" in page:
        parts.append("<h2>What the card advises</h2>")
        parts += [f"<p>{e(text)}</p>" for text in page["advice"]]
    if "sources" in page:
        parts.append("<h2>Sources</h2><ul>")
        parts += [f"<li><a href='{e(s['url'])}'>{e(s['label'])}</a></li>" if "url" in s else f"<li>{e(s['label'])}</li>"
                  for s in page["sources"]]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "".join(parts)
