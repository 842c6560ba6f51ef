"""knee-cds: run the decision pipeline on sample FHIR bundles, without a server.

    knee-cds evaluate fhir_examples/chronic-posterior-knee-pain.json [--hook patient-view] [--json] [--now DATE]
    knee-cds validate fhir_examples/chronic-posterior-knee-pain.json
    knee-cds request  fhir_examples/chronic-posterior-knee-pain.json --hook order-select   (a curl-ready body)
    knee-cds load     fhir_examples/ --fhir-server http://127.0.0.1:8103   (the samples into a FHIR server)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
from fhir.resources.R4B import get_fhir_model_class

from .cards import DATA_QUALITY_EXTENSION, EVIDENCE_EXTENSION, WELLS_EXTENSION
from .errors import BadRequest
from .facts import REQUIRED_VALUE_SETS
from .knowledge import load_knowledge
from .parse import parse_record
from .pipeline import decide
from .registry import SERVICES
from .samples import as_of, build_request, reference_date, sample_resources, split_bundle
from .settings import Settings, parse_instant
from .validation import Validators, check_hook_request

HOOK_SERVICES = {s.hook: s for s in SERVICES}


def _load(path: str) -> dict[str, Any]:
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"knee-cds: cannot read {path}: {exc}") from None
    if not isinstance(document, dict):
        raise SystemExit(f"knee-cds: {path} is not a JSON object")
    return document


def bundle_resources(document: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        return sample_resources(document)
    except ValueError as exc:
        raise SystemExit(f"knee-cds: {exc}") from None


def render_cards(response: dict[str, Any], why_none: str = "nothing in the chart calls for one") -> str:
    cards = response["cards"]
    if not cards:
        left_out = len(response.get("extension", {}).get(DATA_QUALITY_EXTENSION, {}).get("leftOut", []))
        return f"No cards: {why_none}" + (f"; {left_out} resource(s) were left out, unreadable" if left_out else "") \
            + ".\n"
    out = []
    for card in cards:
        topic = card["source"]["topic"]["code"]
        out.append(f"[{card['indicator'].upper()}] {topic}: {card['summary']}")
        out += [f"    {line}" for line in _plain(card.get("detail", ""))]
        out.append(f"    Source: {card['source']['label']}" + (f" <{card['source']['url']}>" if "url" in card["source"]
                                                                   else ""))
        for suggestion in card.get("suggestions", []):
            out.append(f"    Suggestion: {suggestion['label']}")
            for action in suggestion["actions"]:
                target = action.get("resourceId") or action.get("resource", {}).get("code", {}).get("text", "")
                out.append(f"      {action['type']}: {target}")
        extension = card.get("extension", {})
        wells = extension.get(WELLS_EXTENSION)
        if wells:
            criteria = ", ".join(wells.get("criteria", [])) or "none"
            out.append(f"    Wells: {wells['score']} ({'likely' if wells['likely'] else 'unlikely'}), {wells['leg']} leg; "
                       f"criteria: {criteria}")
        for item in extension.get(EVIDENCE_EXTENSION, []):
            if "reference" in item:
                out.append(f"    Evidence: {item['reference']} ({item.get('date', 'no date')}; "
                           f"{', '.join(item['rules'])})")
        out.append("")
    quality = response.get("extension", {}).get(DATA_QUALITY_EXTENSION, {})
    for item in quality.get("leftOut", []):
        out.append(f"Left out {item['reference']}: {item['reason']}")
    return "\n".join(out) + "\n"


def _plain(markdown: str, width: int = 100) -> list[str]:
    """A card's markdown detail as terminal text: emphasis marks dropped, paragraphs joined and wrapped, list items
    and headings ("What to do:") kept on their own lines."""
    units: list[str] = []  # headings, list items and joined paragraphs; "" between blocks
    for line in markdown.replace("**", "").split("\n"):
        line = re.sub(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])", r"\1", line)
        starts_unit = not units or not units[-1] or line.lstrip().startswith("- ") or units[-1].endswith(":")
        if not line.strip() or starts_unit:
            units.append(line if line.strip() else "")
        else:
            units[-1] += " " + line.strip()
    lines: list[str] = []
    for unit in units:
        indent = len(unit) - len(unit.lstrip(" ")) + (2 if unit.lstrip().startswith("- ") else 0)
        lines += textwrap.wrap(unit, width, subsequent_indent=" " * indent) or [""]
    return lines


def _today(settings: Settings) -> date:
    return (settings.fixed_now() or datetime.now(UTC)).date()


def _sample_as_of_today(document: Any, settings: Settings) -> Any:
    """A sample bundle moved so that its reference date is today (samples.py); anything else as it is."""
    reference = reference_date(document)
    if reference is None:
        return document
    today = _today(settings)
    if reference != today:
        print(f"sample dated around {reference.isoformat()}: its dates are moved by {(today - reference).days} days "
              f"so that day is today ({today.isoformat()}); --now evaluates it as written", file=sys.stderr)
    return as_of(document, today)


def cmd_evaluate(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    document = _load(args.file)
    if not args.now:  # a fixed --now evaluates the sample as written, at that moment
        document = _sample_as_of_today(document, settings)
    if isinstance(document, dict) and "hook" in document:  # a CDS Hooks request body: refused as the service would
        refusal = _refusal(document, args.hook)
        if refusal:
            print(f"knee-cds: {refusal}", file=sys.stderr)
            return 2
        hook = document["hook"]
        context = document["context"]
        data = []
        for value in (document.get("prefetch") or {}).values():
            if isinstance(value, dict):
                data += bundle_resources(value) if value.get("resourceType") == "Bundle" else [value]
    else:
        hook = args.hook or "patient-view"
        request = build_request(bundle_resources(document), hook)
        context = request["context"]
        data = split_bundle(bundle_resources(document))[0]
    now = args.now or settings.fixed_now() or datetime.now(UTC)
    decision = decide(hook, context, data, load_knowledge(settings.cards_dir, REQUIRED_VALUE_SETS), now)
    response = decision.response()
    drafts = (context.get("draftOrders") or {}).get("entry") if isinstance(context, dict) else None
    why_none = "no draft order to check (the order hooks answer about draft ServiceRequests)" \
        if hook != "patient-view" and not drafts else "nothing in the chart calls for one"
    if args.json:
        sys.stdout.write(json.dumps(response, indent=2) + "\n")
    else:
        sys.stdout.write(f"{hook} for Patient/{context.get('patientId')}, as of {now.date().isoformat()}: "
                         f"{len(response['cards'])} card(s)\n\n" + render_cards(response, why_none))
    return 0


def _refusal(body: dict[str, Any], hook: str | None) -> str | None:
    """What the service would answer instead of cards (its 400 or 412), or None: the CLI behaves as the service."""
    if (hook or body.get("hook")) not in HOOK_SERVICES:
        return f"the service would refuse this request (400): no service answers the hook {body.get('hook')!r}"
    try:
        check_hook_request(Validators.load(), body, hook or body["hook"])
    except BadRequest as exc:
        return f"the service would refuse this request (400): {exc}"
    required = [spec.key for spec in HOOK_SERVICES[body["hook"]].prefetch if spec.required]
    missing = [key for key in required if key not in (body.get("prefetch") or {})]
    if missing:
        return (f"the service would fetch {', '.join(missing)} from fhirServer, or answer 412 without them; the CLI "
                "reads prefetch only")
    return None


def cmd_validate(args: argparse.Namespace) -> int:
    resources = bundle_resources(_load(args.file))
    record = parse_record(resources)
    unknown = [r for r in resources if isinstance(r, dict) and not _fhir_type(r.get("resourceType"))]
    checked = sum(len(v) for v in record.resources.values())
    for item in record.rejected:
        print(f"INVALID {item.reference}: {item.reason}")
    for resource in unknown:
        print(f"INVALID {str(resource.get('resourceType'))[:64]}/{str(resource.get('id'))[:64]}: "
              "not a FHIR R4 resource type")
    invalid = len(record.rejected) + len(unknown)
    print(f"{checked} resource(s) valid, {invalid} invalid, {len(resources) - checked - invalid} not read by the rules")
    return 1 if invalid else 0


def _fhir_type(name: Any) -> bool:
    try:
        get_fhir_model_class(name)
    except (KeyError, TypeError, ValueError):
        return False
    return True


def cmd_request(args: argparse.Namespace) -> int:
    document = _sample_as_of_today(_load(args.file), Settings.from_env())
    body = build_request(bundle_resources(document), args.hook, args.fhir_server)
    sys.stdout.write(json.dumps(body, indent=2) + "\n")
    return 0


def transaction(document: dict[str, Any]) -> dict[str, Any]:
    """A bundle's resources as a FHIR transaction that PUTs each under its own id (loading twice changes nothing)."""
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        for r in bundle_resources(document)]}


def cmd_load(args: argparse.Namespace) -> int:
    """Every sample bundle of a file or folder into a FHIR server, one transaction per bundle, as of today."""
    path = Path(args.path)
    files = sorted(p for p in path.glob("*.json") if p.name != "manifest.json") if path.is_dir() else [path]
    settings = Settings.from_env()
    base = args.fhir_server.rstrip("/")
    loaded = 0
    with httpx.Client(timeout=30) as client:
        for file in files:
            document = as_of(_load(str(file)), _today(settings))
            try:
                answer = client.post(f"{base}/", json=transaction(document),
                                     headers={"Content-Type": "application/fhir+json"})
            except httpx.HTTPError as exc:
                print(f"knee-cds: {base} could not be reached: {type(exc).__name__}", file=sys.stderr)
                return 1
            if answer.status_code != 200:
                print(f"knee-cds: {file.name}: the FHIR server answered {answer.status_code}", file=sys.stderr)
                return 1
            loaded += len(document.get("entry", []))
    print(f"loaded {loaded} resources from {len(files)} bundle(s) into {base}, dated as of {_today(settings)}")
    return 0


def _instant(text: str) -> datetime:
    try:
        return parse_instant(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or dateTime: {text!r} (e.g. 2026-11-20)") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="knee-cds", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    evaluate = sub.add_parser("evaluate", help="print the cards the service gives for a bundle or request")
    evaluate.add_argument("file")
    evaluate.add_argument("--hook", choices=sorted(HOOK_SERVICES),
                          help="the hook (default patient-view; for a request body, it must be the body's)")
    evaluate.add_argument("--json", action="store_true", help="print the CDS Hooks response as JSON")
    evaluate.add_argument("--now", type=_instant, help="today's date or dateTime (ISO), for reproducible output")
    evaluate.set_defaults(func=cmd_evaluate)
    validate = sub.add_parser("validate", help="check every resource of a bundle against FHIR R4")
    validate.add_argument("file")
    validate.set_defaults(func=cmd_validate)
    request = sub.add_parser("request", help="print a CDS Hooks request body built from a bundle")
    request.add_argument("file")
    request.add_argument("--hook", choices=sorted(HOOK_SERVICES), default="patient-view")
    request.add_argument("--fhir-server", help="fhirServer to name in the request")
    request.set_defaults(func=cmd_request)
    load = sub.add_parser("load", help="load sample bundles into a FHIR server (transactions, ids kept)")
    load.add_argument("path", help="a bundle, or a folder of them (fhir_examples/)")
    load.add_argument("--fhir-server", required=True, help="the FHIR server's base URL")
    load.set_defaults(func=cmd_load)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
