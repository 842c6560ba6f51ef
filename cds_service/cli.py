"""knee-cds: run the decision pipeline on sample FHIR bundles, without a server, or serve it for development.

    knee-cds evaluate fhir_examples/chronic-posterior-knee-pain.json [--hook patient-view] [--json|--brief] [--now DATE]
    knee-cds evaluate fhir_examples/            (every sample, every hook its manifest lists: a table; exit 1 on a mismatch)
    knee-cds validate fhir_examples/chronic-posterior-knee-pain.json
    knee-cds request  fhir_examples/chronic-posterior-knee-pain.json --hook order-select   (a curl-ready body)
    knee-cds load     fhir_examples/ --fhir-server http://127.0.0.1:8103   (the samples into a FHIR server)
    knee-cds serve    [--host 127.0.0.1] [--port 8080]   (gunicorn with gunicorn.conf.py, as `make run`)

Start-up is kept short (every call, even --help, pays it): the pipeline, the FHIR models, the HTTP client and the
JSON Schema checks are imported by the commands that use them, not here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from .errors import BadRequest, ConfigurationError, RequestRefused
from .registry import SERVICES
from .samples import as_of, build_request, hook_context, reference_date, sample_resources, split_bundle
from .settings import Settings, parse_instant

if TYPE_CHECKING:
    from .knowledge import Knowledge
    from .prefetch import DataGap

HOOK_SERVICES = {s.hook: s for s in SERVICES}
MANIFEST = "manifest.json"
# `serve` is for development, as `make run`: the card preview page, and a fhirServer that is a local FHIR server over
# plain http (`make fhir-server`). Production allows https and public addresses only. The environment wins.
DEVELOPMENT_DEFAULTS = {
    "KNEE_CDS_PREVIEW": "true",
    "KNEE_CDS_FHIR_ALLOW_HTTP": "true",
    "KNEE_CDS_FHIR_ALLOWED_HOSTS": "127.0.0.1,localhost,::1",
}
# The one gunicorn configuration (workers, worker class, preload, GC): in the source checkout an editable install
# (`pip install -e .`, as `make run` does) runs from.
GUNICORN_CONFIG = Path(__file__).resolve().parent.parent / "gunicorn.conf.py"


def fail(message: str) -> NoReturn:
    """A user error: one line on stderr, exit status 1, no traceback."""
    raise SystemExit(f"knee-cds: {message}")


def read_object(path: str | Path) -> dict[str, Any]:
    """A JSON file holding an object; ValueError saying why not."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except IsADirectoryError:
        raise ValueError(f"{path} is a folder; this command reads one JSON file") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    if not isinstance(document, dict):
        raise ValueError(f"{path} is not a JSON object")
    return document


def _load(path: str | Path) -> dict[str, Any]:
    try:
        return read_object(path)
    except ValueError as exc:
        fail(str(exc))


def bundle_resources(document: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        return sample_resources(document)
    except ValueError as exc:
        fail(str(exc))


def _settings() -> Settings:
    try:
        settings = Settings.from_env()
    except (ConfigurationError, ValueError) as exc:
        fail(f"a setting in the environment is not usable: {exc}")
    try:
        settings.fixed_now()
    except ValueError:
        fail(f"KNEE_CDS_NOW is not an ISO date or dateTime: {settings.now!r}")
    try:
        settings.zone()
    except (ValueError, LookupError):  # ZoneInfoNotFoundError is a KeyError
        fail(f"KNEE_CDS_TIMEZONE is not an IANA time zone name: {settings.timezone!r}")
    return settings


def _knowledge(settings: Settings) -> Knowledge:
    from .facts import REQUIRED_VALUE_SETS
    from .knowledge import KnowledgeError, load_knowledge

    try:
        return load_knowledge(settings.cards_dir, REQUIRED_VALUE_SETS)
    except KnowledgeError as exc:
        fail(str(exc))


# --- cards as text -----------------------------------------------------------------------------------------------------
def render_cards(response: dict[str, Any], why_none: str = "nothing in the chart calls for one") -> str:
    from .cards import DATA_QUALITY_EXTENSION, EVIDENCE_EXTENSION, WELLS_EXTENSION  # loaded with the pipeline

    cards = response["cards"]
    if not cards:
        return _no_cards(response, why_none) + "\n"
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


def render_brief(response: dict[str, Any], why_none: str = "nothing in the chart calls for one") -> str:
    """One line per card: indicator, topic, summary (`--brief`)."""
    cards = response["cards"]
    if not cards:
        return _no_cards(response, why_none) + "\n"
    return "".join(f"{c['indicator'].upper():<8} {c['source']['topic']['code']}: {c['summary']}\n" for c in cards)


def _no_cards(response: dict[str, Any], why_none: str) -> str:
    from .cards import DATA_QUALITY_EXTENSION

    left_out = len(response.get("extension", {}).get(DATA_QUALITY_EXTENSION, {}).get("leftOut", []))
    return f"No cards: {why_none}" + (f"; {left_out} resource(s) were left out, unreadable" if left_out else "") + "."


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


@contextmanager
def _as_fhir_shapes(source: object) -> Iterator[None]:
    """Reading a sample relies on FHIR's shapes (ids, codings, dates); a file that breaks them is the user's error:
    one line naming it, never a traceback."""
    try:
        yield
    except (AttributeError, KeyError, TypeError, ValueError, OverflowError) as exc:
        fail(f"{source}: a resource is not shaped as FHIR says ({type(exc).__name__}: {str(exc)[:120]})")


# --- evaluate ----------------------------------------------------------------------------------------------------------
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


class Evaluator:
    """The pipeline as the service runs it, with the knowledge loaded once (a folder evaluates 100+ samples)."""

    def __init__(self, settings: Settings, now: datetime) -> None:
        from .cards import CardBuilder
        from .registry import resolve_services
        from .rules import RuleBook

        self.settings = settings
        self.now = now
        self.knowledge = _knowledge(settings)
        self.services = resolve_services(self.knowledge.terminology)
        self.card_builder = CardBuilder(self.knowledge)
        self.rule_book = RuleBook.from_cards(self.knowledge.cards)

    def decide(self, hook: str, context: dict[str, Any], data: Sequence[dict[str, Any]],
               gaps: tuple[DataGap, ...] = ()) -> dict[str, Any]:
        from .pipeline import decide

        return decide(hook, context, data, self.knowledge, self.now, gaps, card_builder=self.card_builder,
                      zone=self.settings.zone(), rule_book=self.rule_book).response()

    def request(self, body: dict[str, Any]) -> dict[str, Any]:
        """The response to a CDS Hooks request body whose prefetch the service would take (see `_refusal`): its
        prefetch read as the service reads it (null, OperationOutcome, searchset pages), without any fetch."""
        from .fhir_client import FhirClient
        from .prefetch import gather

        service = next(s for s in self.services if s.hook == body["hook"])
        offline = {key: value for key, value in body.items() if key != "fhirServer"}  # the CLI reads prefetch only
        data = gather(service, offline, FhirClient(), 0, self.now.date(), self.settings.zone())
        return self.decide(body["hook"], body["context"], data.resources, data.gaps)

    def bundle(self, resources: list[dict[str, Any]], hook: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the hook's context, the response) for a sample bundle: its draft ServiceRequests are the draft orders."""
        context = hook_context(resources, hook)
        return context, self.decide(hook, context, split_bundle(resources)[0])


def cmd_evaluate(args: argparse.Namespace) -> int:
    settings = _settings()
    if Path(args.file).is_dir():
        if args.json or args.brief:
            fail("--json and --brief are for one file; a folder prints the sample table")
        return evaluate_folder(Path(args.file), args.hook, args.now, settings)
    document = _load(args.file)
    if not args.now:  # a fixed --now evaluates the sample as written, at that moment
        with _as_fhir_shapes(args.file):
            document = _sample_as_of_today(document, settings)
    if "hook" in document:  # a CDS Hooks request body: refused as the service would
        refusal = _refusal(document, args.hook)
        if refusal:
            print(f"knee-cds: {refusal}", file=sys.stderr)
            return 2
        hook = document["hook"]
        context = document["context"]
        evaluator = Evaluator(settings, args.now or settings.fixed_now() or datetime.now(UTC))
        try:
            response = evaluator.request(document)
        except RequestRefused as exc:  # a required key the client could not prefetch (412); another patient (400)
            print(f"knee-cds: the service would refuse this request ({exc.status}): {exc}", file=sys.stderr)
            return 2
    else:
        hook = args.hook or "patient-view"
        resources = bundle_resources(document)
        evaluator = Evaluator(settings, args.now or settings.fixed_now() or datetime.now(UTC))
        with _as_fhir_shapes(args.file):
            context, response = evaluator.bundle(resources, hook)
    drafts = (context.get("draftOrders") or {}).get("entry")
    why_none = "no draft order to check (the order hooks answer about draft ServiceRequests)" \
        if hook != "patient-view" and not drafts else "nothing in the chart calls for one"
    if args.json:
        sys.stdout.write(json.dumps(response, indent=2) + "\n")
    elif args.brief:
        sys.stdout.write(render_brief(response, why_none))
    else:
        sys.stdout.write(f"{hook} for Patient/{context.get('patientId')}, as of {evaluator.now.date().isoformat()}: "
                         f"{len(response['cards'])} card(s)\n\n" + render_cards(response, why_none))
    return 0


def _refusal(body: dict[str, Any], hook: str | None) -> str | None:
    """What the service would answer instead of cards (its 400 or 412), or None: the CLI behaves as the service."""
    from .validation import Validators, check_hook_request

    if not isinstance(body.get("hook"), str) or (hook or body["hook"]) not in HOOK_SERVICES:
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


# --- evaluate a folder: every sample against its manifest ----------------------------------------------------------
@dataclass(frozen=True)
class SampleRow:
    sample: str
    hook: str
    cards: str  # "topic/indicator, ..." as the service answered
    mismatch: str | None  # None: as the manifest says

    def cells(self) -> tuple[str, str, str, str]:
        return self.sample, self.hook or "-", self.cards or "-", "✓" if self.mismatch is None else f"✗ {self.mismatch}"


def _card_names(cards: list[dict[str, str]]) -> list[str]:
    return [f"{c['topic']}/{c['indicator']}" for c in cards]


def _wells_text(wells: dict[str, Any] | None) -> str:
    if wells is None:
        return "no Wells score"
    return f"Wells {wells['score']} {wells['leg']} [{', '.join(wells.get('criteria', []))}]"


def manifest_mismatch(response: dict[str, Any], expected: dict[str, Any]) -> str | None:
    """How the cards differ from a manifest entry (`{"cards": [{topic, indicator}], "wells": {...}}`), shortly; None
    when they match, as tests/test_examples.py compares them: the same cards in the same order, the Wells result where
    the manifest gives one, and none where it expects no DVT card."""
    from .cards import WELLS_EXTENSION

    got = [{"topic": c["source"]["topic"]["code"], "indicator": c["indicator"]} for c in response["cards"]]
    want = expected.get("cards", [])
    differences = []
    if got != want:
        missing = Counter(_card_names(want)) - Counter(_card_names(got))
        extra = Counter(_card_names(got)) - Counter(_card_names(want))
        if not missing and not extra:
            differences.append(f"order: manifest {', '.join(_card_names(want))}")
        differences += [f"missing {name}" for name in missing.elements()]
        differences += [f"extra {name}" for name in extra.elements()]
    found = [c["extension"][WELLS_EXTENSION] for c in response["cards"] if WELLS_EXTENSION in c.get("extension", {})]
    wells = {"score": found[0]["score"], "leg": found[0]["leg"], "criteria": found[0].get("criteria", [])} \
        if found else None
    if "wells" in expected:
        expected_wells = expected["wells"]
    elif not any(c["topic"].startswith("dvt-") for c in want):
        expected_wells = None
    else:
        expected_wells = wells  # a DVT card without a Wells result in the manifest: not compared
    if wells != expected_wells:
        differences.append(f"{_wells_text(wells)}, manifest {_wells_text(expected_wells)}")
    return "; ".join(differences) or None


def _folder_rows(folder: Path, examples: dict[str, Any], hook_filter: str | None, evaluator: Evaluator,
                 today: date | None) -> Iterator[SampleRow]:
    bundles = {p.name for p in folder.glob("*.json") if p.name != MANIFEST}
    for name in sorted(bundles | set(examples), key=lambda n: n.removesuffix(".json")):
        sample = name.removesuffix(".json")
        spec = examples.get(name)
        if not isinstance(spec, dict) or not isinstance(spec.get("expect"), dict):
            yield SampleRow(sample, "", "", "not in the manifest" if spec is None else "no `expect` in its manifest entry")
            continue
        hooks = [h for h in spec["expect"] if hook_filter in (None, h)]
        if name not in bundles:
            yield from (SampleRow(sample, hook, "", "no such file in the folder") for hook in hooks)
            continue
        try:
            document = read_object(folder / name)
            resources = sample_resources(document if today is None else as_of(document, today))
        except ValueError as exc:
            yield from (SampleRow(sample, hook, "", str(exc)) for hook in hooks)
            continue
        for hook in hooks:
            if hook not in HOOK_SERVICES:
                yield SampleRow(sample, hook, "", "no service answers this hook")
                continue
            try:
                _, response = evaluator.bundle(resources, hook)
            except (AttributeError, KeyError, TypeError, ValueError, OverflowError) as exc:
                yield SampleRow(sample, hook, "", f"not shaped as FHIR says ({type(exc).__name__}: {str(exc)[:80]})")
                continue
            cards = ", ".join(f"{c['source']['topic']['code']}/{c['indicator']}" for c in response["cards"])
            try:
                mismatch = manifest_mismatch(response, spec["expect"][hook])
            except (AttributeError, KeyError, TypeError):  # a hand-edited entry without the generator's shape
                mismatch = "its manifest entry is not {\"cards\": [{\"topic\": …, \"indicator\": …}], \"wells\": …}"
            yield SampleRow(sample, hook, cards, mismatch)


def evaluate_folder(folder: Path, hook: str | None, now: datetime | None, settings: Settings) -> int:
    """Every sample of a folder, for every hook its manifest lists, as a table; 1 when a row differs."""
    started = time.monotonic()
    if not any(p.name != MANIFEST for p in folder.glob("*.json")):
        fail(f"{folder} holds no sample bundles (*.json)")
    if not (folder / MANIFEST).is_file():
        fail(f"{folder} has no {MANIFEST} to compare the samples with")
    examples = _load(folder / MANIFEST).get("examples")
    if not isinstance(examples, dict):
        fail(f"{folder / MANIFEST} has no `examples` object (sample file name -> its expected cards per hook)")
    today = None if now else _today(settings)  # as single-file evaluate: moved to today, or as written at --now
    evaluator = Evaluator(settings, now or settings.fixed_now() or datetime.now(UTC))
    rows = [row.cells() for row in _folder_rows(folder, examples, hook, evaluator, today)]
    header = ("sample", "hook", "cards", "manifest")
    widths = [max(len(cells[i]) for cells in [header, *rows]) for i in range(3)]
    for cells in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=False)) + "  " + cells[3])
    differing = sum(not cells[3].startswith("✓") for cells in rows)
    when = f"samples moved to {today.isoformat()}" if today else f"samples as written, at {evaluator.now.isoformat()}"
    print(f"\n{len(rows)} row(s), {differing} not as the manifest says; {when}; "
          f"{time.monotonic() - started:.1f} s")
    return 1 if differing else 0


# --- validate, request, load -------------------------------------------------------------------------------------------
def cmd_validate(args: argparse.Namespace) -> int:
    from .parse import parse_record

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
    from fhir.resources.R4B import get_fhir_model_class

    try:
        get_fhir_model_class(name)
    except (KeyError, TypeError, ValueError):
        return False
    return True


def cmd_request(args: argparse.Namespace) -> int:
    with _as_fhir_shapes(args.file):
        document = _sample_as_of_today(_load(args.file), _settings())
        body = build_request(bundle_resources(document), args.hook, args.fhir_server)
    sys.stdout.write(json.dumps(body, indent=2) + "\n")
    return 0


def transaction(document: dict[str, Any]) -> dict[str, Any]:
    """A bundle's resources as a FHIR transaction that PUTs each under its own id (loading twice changes nothing)."""
    resources = bundle_resources(document)
    unnamed = next((r["resourceType"] for r in resources if not isinstance(r.get("id"), str)), None)
    if unnamed:
        raise ValueError(f"a {unnamed} without an id cannot be loaded (each is PUT under its own id)")
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in resources]}


def cmd_load(args: argparse.Namespace) -> int:
    """Every sample bundle of a file or folder into a FHIR server, one transaction per bundle, as of today."""
    import httpx

    path = Path(args.path)
    files = sorted(p for p in path.glob("*.json") if p.name != MANIFEST) if path.is_dir() else [path]
    if not files:
        fail(f"{path} holds no sample bundles (*.json)")
    settings = _settings()
    base = args.fhir_server.rstrip("/")
    loaded = 0
    with httpx.Client(timeout=30) as client:
        for file in files:
            with _as_fhir_shapes(file):
                document = as_of(_load(file), _today(settings))
                bundle = transaction(document)
            try:
                answer = client.post(f"{base}/", json=bundle,
                                     headers={"Content-Type": "application/fhir+json"})
            except (httpx.InvalidURL, httpx.UnsupportedProtocol):
                fail(f"--fhir-server {args.fhir_server} is not an http(s) URL")
            except httpx.HTTPError as exc:
                fail(f"{base} could not be reached: {type(exc).__name__}")
            if answer.status_code != 200:
                fail(f"{file.name}: the FHIR server answered {answer.status_code}")
            loaded += len(document.get("entry", []))
    print(f"loaded {loaded} resources from {len(files)} bundle(s) into {base}, dated as of {_today(settings)}")
    return 0


# --- serve -------------------------------------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> NoReturn:
    """Replace this process by gunicorn with gunicorn.conf.py (Ctrl-C and signals reach gunicorn itself)."""
    if not GUNICORN_CONFIG.is_file():
        fail(f"serve runs from a source checkout (pip install -e .): {GUNICORN_CONFIG} not found")
    _check_free(args.host, args.port)
    environ = dict(os.environ)
    for name, value in DEVELOPMENT_DEFAULTS.items():
        environ[name] = environ.get(name) or value
    environ.update(KNEE_CDS_HOST=args.host, PORT=str(args.port))  # read by gunicorn.conf.py
    shown = f"[{args.host}]" if ":" in args.host else args.host  # an IPv6 address in a URL
    print(f"knee-cds: serving on http://{shown}:{args.port}/cds-services (development settings: "
          + ", ".join(f"{name}={environ[name]}" for name in DEVELOPMENT_DEFAULTS) + ")", file=sys.stderr, flush=True)
    argv = [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONFIG), "cds_service:create_app()"]
    os.execve(sys.executable, argv, environ)


def _check_free(host: str, port: int) -> None:
    """A taken port or an unknown host as one line, before gunicorn retries for 5 s and prints its own traces."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
            probe.bind((host, port))
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc} (--host, --port)")


# --- the command line --------------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """A usage error in one line (argparse prints the whole usage first), exit status 2."""
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _instant(text: str) -> datetime:
    try:
        return parse_instant(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or dateTime: {text!r} (e.g. 2026-11-20)") from None


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text!r}")
    return int(text)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("knee-cds")
    except PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def cmd_report(args: argparse.Namespace) -> int:
    """What clinicians did with the cards, per topic and rule, from the database at DATABASE_URL."""
    from sqlalchemy.exc import ArgumentError

    from .analytics import report_text
    from .errors import ServiceUnavailable

    settings = _settings()
    try:
        print(report_text(settings.database_url, settings.fixed_now() or datetime.now(UTC)), end="")
    except (ConfigurationError, ServiceUnavailable) as exc:
        fail(f"report: {exc}")
    except ArgumentError:  # SQLAlchemy's word for a URL it cannot parse
        fail(f"report: DATABASE_URL is not a database URL: {settings.database_url[:80]!r}")
    return 0


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="knee-cds", description=__doc__.splitlines()[0])
    top.add_argument("--version", action="version", version=f"knee-cds {_version()}")
    sub = top.add_subparsers(dest="command", required=True, parser_class=_Parser)
    evaluate = sub.add_parser("evaluate", help="print the cards the service gives for a bundle or request, or check a "
                                               "folder of samples against its manifest")
    evaluate.add_argument("file", help="a sample bundle, a CDS Hooks request body, or a folder of samples with its "
                                       "manifest.json")
    evaluate.add_argument("--hook", choices=sorted(HOOK_SERVICES),
                          help="the hook (default patient-view; for a request body, it must be the body's; for a "
                               "folder, only that hook's rows)")
    output = evaluate.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the CDS Hooks response as JSON")
    output.add_argument("--brief", action="store_true", help="one line per card: indicator, topic, summary")
    evaluate.add_argument("--now", type=_instant,
                          help="today's date or dateTime (ISO): evaluates samples as written, at that moment")
    evaluate.set_defaults(func=cmd_evaluate)
    validate = sub.add_parser("validate", help="check every resource of a bundle against FHIR R4")
    validate.add_argument("file")
    validate.set_defaults(func=cmd_validate)
    request = sub.add_parser("request", help="print a CDS Hooks request body built from a bundle (dated as of today)")
    request.add_argument("file")
    request.add_argument("--hook", choices=sorted(HOOK_SERVICES), default="patient-view")
    request.add_argument("--fhir-server", help="fhirServer to name in the request")
    request.set_defaults(func=cmd_request)
    load = sub.add_parser("load", help="load sample bundles into a FHIR server (transactions, ids kept)")
    load.add_argument("path", help="a bundle, or a folder of them (fhir_examples/)")
    load.add_argument("--fhir-server", required=True, help="the FHIR server's base URL")
    load.set_defaults(func=cmd_load)
    serve = sub.add_parser("serve", help="run the service under gunicorn with gunicorn.conf.py and the development "
                                         "settings of `make run`")
    serve.add_argument("--host", default=os.environ.get("KNEE_CDS_HOST") or "127.0.0.1",
                       help="address to listen on (default: KNEE_CDS_HOST, else 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=os.environ.get("PORT") or "8080",
                       help="port to listen on (default: PORT, else 8080)")
    serve.set_defaults(func=cmd_serve)
    report = sub.add_parser("report", help="cards shown, accepted and overridden (with reasons), per topic and rule")
    report.set_defaults(func=cmd_report)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `knee-cds evaluate fhir_examples/ | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush into the closed pipe
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
