"""A small paging FHIR R4 server for long-chart tests (Python stdlib only).

Medplum's in-memory router scans every resource of a type per search (~7 s for 10,000 Observations), so
charts of that size are served here instead: resources are indexed by (type, patient) when loaded, and a
search answers searchset Bundles of at most 20 entries (HAPI's default page size, whatever `_count` asks)
with stateless `next` links (`_getpagesoffset` in the URL) and `total`.

It answers `GET [type]/[id]`, `GET [type]?params` and a form-encoded `POST [type]/_search` (the CDS Hooks
Sandbox's way of filling prefetch templates), CORS preflights, and supports the search parameters of the
service's query plan: `patient`/`subject`, `_id`, `code`, `category`, `status` (tokens: `code`, `system|code`,
`system|`, `|code`; comma = OR), `date` and `authoredon` (prefixes eq, lt, le, gt, ge; repeated = AND),
`_sort` (`date`, `-date`, `authoredon`, `-authoredon`; resources without the date last) and `_count`.
A parameter the type does not support is a 400, as HAPI does, so a wrong query cannot pass silently.

Usage:
    with PagingFhirServer() as server:
        server.load(resources)
        httpx.get(f"{server.base}/Observation?patient=p1&code=39156-5")
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

PAGE_SIZE = 20
OFFSET_PARAM = "_getpagesoffset"
CORS_PREFLIGHT = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
}

# Where each type keeps the date its `date` parameter searches; the first present element is used, as
# rules.md G-11 reads a resource's clinical date (so `issued` counts only for an Observation without effective[x]).
DATE_ELEMENTS: dict[str, tuple[str, ...]] = {
    "Observation": ("effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued"),
    "DiagnosticReport": ("effectiveDateTime", "effectivePeriod", "issued"),
    "Procedure": ("performedDateTime", "performedPeriod"),
    "Encounter": ("period",),
    "Condition": ("onsetDateTime", "onsetPeriod", "recordedDate"),
}
AUTHOREDON_ELEMENTS: dict[str, tuple[str, ...]] = {"MedicationRequest": ("authoredOn",)}
CODE_ELEMENT = {"MedicationRequest": "medicationCodeableConcept"}  # every other type: `code`
COMMON_PARAMS = frozenset({"patient", "subject", "_id", "code", "category", "status", "_count", "_sort", OFFSET_PARAM})

EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)
FHIR_DATE = re.compile(
    r"(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?P<fraction>\.\d+)?)?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})?)?)?)?"
)


class BadSearch(ValueError):
    """A search the server does not understand: answered 400, as HAPI does."""


@dataclass(frozen=True, slots=True)
class Span:
    """The instants a FHIR date covers at its precision: [start, end). "2026-11-01" is that whole UTC day."""

    start: datetime
    end: datetime


def parse_date(text: str) -> Span | None:
    """A FHIR date/dateTime/instant as the span it covers; zone-less values are read as UTC."""
    match = FHIR_DATE.fullmatch(text)
    if match is None:
        return None
    part = match.groupdict()
    try:
        if part["month"] is None:
            start = datetime(int(part["year"]), 1, 1, tzinfo=UTC)
            return Span(start, start.replace(year=start.year + 1))
        if part["day"] is None:
            start = datetime(int(part["year"]), int(part["month"]), 1, tzinfo=UTC)
            later = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
            return Span(start, later)
        if part["hour"] is None:
            start = datetime(int(part["year"]), int(part["month"]), int(part["day"]), tzinfo=UTC)
            return Span(start, start + timedelta(days=1))
        start = datetime.fromisoformat(text if part["zone"] else text + "Z").astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    precision = (
        timedelta(microseconds=1) if part["fraction"] else timedelta(seconds=1) if part["second"] else timedelta(minutes=1)
    )
    return Span(start, start + precision)


def element_span(value: Any) -> Span | None:
    """A date element's span: a date string, or a Period (an open end is ongoing, an open start unbounded)."""
    if isinstance(value, str):
        return parse_date(value)
    if isinstance(value, dict):
        start = parse_date(value["start"]) if isinstance(value.get("start"), str) else None
        end = parse_date(value["end"]) if isinstance(value.get("end"), str) else None
        if start is None and end is None:
            return None
        return Span(start.start if start else EARLIEST, end.end if end else LATEST)
    return None


def sort_instant(value: Any) -> datetime | None:
    """Where a resource sorts: its date's start (a Period's start, or its end when it has no start; G-11)."""
    if isinstance(value, dict):
        value = value.get("start") or value.get("end")
    span = parse_date(value) if isinstance(value, str) else None
    return span.start if span else None


def first_present(resource: dict[str, Any], elements: tuple[str, ...]) -> Any:
    return next((resource[name] for name in elements if resource.get(name) is not None), None)


def patient_id(reference: Any) -> str | None:
    """The id of a Patient reference ("Patient/p1", "https://host/fhir/Patient/p1"); None for others."""
    if not isinstance(reference, str):
        return None
    kind, _, ident = reference.rstrip("/").rpartition("/")
    return ident if kind.rpartition("/")[2] == "Patient" and ident else None


def token_keys(system: str | None, code: str) -> set[str]:
    """Every token search value a (system, code) answers to: `code`, `system|code` (or `|code`) and `system|`.

    Storing these once makes a search a set intersection, however many codes the query lists.
    """
    return {code, f"{system or ''}|{code}"} | ({f"{system}|"} if system else set())


def coding_keys(concepts: Any) -> frozenset[str]:
    """The token keys of every coding of a CodeableConcept or a list of them."""
    found: set[str] = set()
    for concept in concepts if isinstance(concepts, list) else [concepts]:
        if isinstance(concept, dict):
            for coding in concept.get("coding") or []:
                if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                    found |= token_keys(coding.get("system"), coding["code"])
    return frozenset(found)


@dataclass(frozen=True, slots=True)
class Indexed:
    """A stored resource with what its searches read, computed once when it is loaded."""

    resource: dict[str, Any]
    patient: str | None
    tokens: dict[str, frozenset[str]]  # code, category, status: their token_keys
    spans: dict[str, Span | None]  # date, authoredon (only the parameters its type has)
    sort_keys: dict[str, datetime | None]

    @classmethod
    def of(cls, resource: dict[str, Any]) -> Indexed:
        kind = resource["resourceType"]
        if kind == "Patient":
            patient = resource["id"]
        else:
            owner = resource.get("subject") or resource.get("patient") or {}
            patient = patient_id(owner.get("reference")) if isinstance(owner, dict) else None
        status = resource.get("status")
        tokens = {
            "code": coding_keys(resource.get(CODE_ELEMENT.get(kind, "code"))),
            "category": coding_keys(resource.get("category")),
            "status": frozenset(token_keys(None, status)) if isinstance(status, str) else frozenset(),
        }
        spans: dict[str, Span | None] = {}
        sort_keys: dict[str, datetime | None] = {}
        for param, table in (("date", DATE_ELEMENTS), ("authoredon", AUTHOREDON_ELEMENTS)):
            if kind in table:
                value = first_present(resource, table[kind])
                spans[param] = element_span(value)
                sort_keys[param] = sort_instant(value)
        return cls(resource, patient, tokens, spans, sort_keys)


DATE_PREFIXES = ("eq", "lt", "le", "gt", "ge")


def date_filter(value: str) -> Callable[[Span | None], bool]:
    """A date search value with its FHIR prefix, as a test on a resource's span (a resource without the date never matches).

    ge/gt: some of the resource's span lies at/after the start (ge) or after the end (gt) of the searched span;
    le/lt: some of it lies before its end (le) or its start (lt); eq: the searched span contains all of it.
    """
    prefix, text = (value[:2], value[2:]) if value[:2] in DATE_PREFIXES else ("eq", value)
    searched = parse_date(text)
    if searched is None:
        raise BadSearch(f"not a FHIR date: {value!r} (prefixes: {', '.join(DATE_PREFIXES)})")
    tests: dict[str, Callable[[Span], bool]] = {
        "eq": lambda span: searched.start <= span.start and span.end <= searched.end,
        "lt": lambda span: span.start < searched.start,
        "le": lambda span: span.start < searched.end,
        "gt": lambda span: span.end > searched.end,
        "ge": lambda span: span.end > searched.start,
    }
    test = tests[prefix]
    return lambda span: span is not None and test(span)


@dataclass(frozen=True, slots=True)
class Search:
    """A parsed search on one type: filters (AND), patients (OR), sort, page size and offset."""

    filters: tuple[Callable[[Indexed], bool], ...]
    patients: tuple[str, ...] | None
    sort: tuple[str, bool] | None  # (parameter, descending)
    page_size: int
    offset: int

    @classmethod
    def parse(cls, kind: str, params: list[tuple[str, str]]) -> Search:
        supported = COMMON_PARAMS | {
            p for p, table in (("date", DATE_ELEMENTS), ("authoredon", AUTHOREDON_ELEMENTS)) if kind in table
        }
        filters: list[Callable[[Indexed], bool]] = []
        patients: tuple[str, ...] | None = None
        sort: tuple[str, bool] | None = None
        page_size, offset = PAGE_SIZE, 0
        for name, value in params:
            if name not in supported:
                raise BadSearch(f"unknown search parameter {name!r} for {kind}; supported: {', '.join(sorted(supported))}")
            if name in ("patient", "subject"):
                ids = tuple(patient_id(v if "/" in v else f"Patient/{v}") or "" for v in value.split(","))
                patients = ids if patients is None else tuple(i for i in patients if i in ids)
            elif name == "_id":
                wanted = frozenset(value.split(","))
                filters.append(lambda entry, wanted=wanted: entry.resource["id"] in wanted)
            elif name in ("code", "category", "status"):
                # Comma = OR: any alternative (`code`, `system|code`, `system|`, `|code`) among the resource's keys.
                wanted = frozenset(value.split(","))
                filters.append(lambda entry, name=name, wanted=wanted: not wanted.isdisjoint(entry.tokens[name]))
            elif name in ("date", "authoredon"):
                test = date_filter(value)
                filters.append(lambda entry, name=name, test=test: test(entry.spans[name]))
            elif name == "_sort":
                key = value.removeprefix("-")
                if key not in supported or key not in ("date", "authoredon"):
                    raise BadSearch(f"unsupported _sort {value!r} for {kind}")
                sort = (key, value.startswith("-"))
            elif name == "_count":
                page_size = min(non_negative(name, value), PAGE_SIZE)
            else:
                offset = non_negative(name, value)
        return cls(tuple(filters), patients, sort, page_size, offset)


def non_negative(name: str, value: str) -> int:
    if not value.isdigit():
        raise BadSearch(f"{name} must be a whole number >= 0, not {value!r}")
    return int(value)


def outcome(code: str, text: str) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": text}]}


class PagingFhirServer:
    """The server, run in a background thread on a free loopback port; `.base` is its URL."""

    def __init__(self, required_token: str | None = None) -> None:
        self.required_token = required_token  # when set, every FHIR request needs "Bearer <token>" (else 401)
        self._lock = threading.Lock()
        self._by_type: dict[str, dict[str, Indexed]] = {}
        self._by_patient: dict[tuple[str, str], dict[str, Indexed]] = {}
        self._failing: dict[str, int] = {}
        self._served: Counter[str] = Counter()
        self._searches: list[tuple[str, dict[str, str]]] = []
        self._http: HttpServer | None = None
        self._thread: threading.Thread | None = None
        self.base = ""

    def start(self) -> PagingFhirServer:
        http = HttpServer(self)
        self._http = http
        self.base = f"http://127.0.0.1:{http.server_address[1]}"
        self._thread = threading.Thread(target=http.serve_forever, name="paging-fhir-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._http is not None and self._thread is not None:
            self._http.shutdown()
            self._http.server_close()
            self._thread.join(timeout=5)
        self._http = self._thread = None

    def __enter__(self) -> PagingFhirServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- test control -------------------------------------------------------------------------------

    def load(self, resources: Iterable[dict[str, Any]] | dict[str, Any]) -> None:
        """Stores resources (a list, or a Bundle's entries) under their ids, replacing earlier versions."""
        if isinstance(resources, dict):
            resources = [entry["resource"] for entry in resources.get("entry", [])]
        # A copy, so a test changing its dicts later does not change what the server answers.
        indexed = [Indexed.of(json.loads(json.dumps(resource))) for resource in resources]
        with self._lock:
            for entry in indexed:
                kind, ident = entry.resource["resourceType"], entry.resource["id"]
                previous = self._by_type.setdefault(kind, {}).get(ident)
                if previous is not None and previous.patient is not None:
                    del self._by_patient[(kind, previous.patient)][ident]
                self._by_type[kind][ident] = entry
                if entry.patient is not None:
                    self._by_patient.setdefault((kind, entry.patient), {})[ident] = entry

    def reset(self) -> None:
        """Empties the store and restores the defaults: no token, no failures, no requests counted."""
        with self._lock:
            self._by_type.clear()
            self._by_patient.clear()
            self._failing.clear()
            self._served.clear()
            self._searches.clear()
            self.required_token = None

    def fail(self, resource_type: str, status: int = 503) -> None:
        """Every request for this type (read or search) answers `status` from now on."""
        with self._lock:
            self._failing[resource_type] = status

    def served(self) -> Counter[str]:
        """How many FHIR requests (answered or refused) each path has had, e.g. {"/Observation": 3, "/Patient/p1": 1}."""
        with self._lock:
            return Counter(self._served)

    def searches(self, resource_type: str) -> list[dict[str, str]]:
        """The parameters of every search of a type so far (GET or POST _search), in order."""
        with self._lock:
            return [params for kind, params in self._searches if kind == resource_type]

    # --- FHIR interactions (called from the handler threads) --------------------------------------------

    def answer(
        self, method: str, path: str, params: list[tuple[str, str]], authorization: str | None
    ) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self._served[path] += 1
            if path.strip("/").split("/")[-1] == "_search" or "/" not in path.strip("/"):
                self._searches.append((path.strip("/").split("/")[0], dict(params)))
            failing = dict(self._failing)
        if self.required_token is not None and authorization != f"Bearer {self.required_token}":
            return 401, outcome("login", "missing or wrong bearer token")
        segments = [s for s in path.split("/") if s]
        if not segments or len(segments) > 2 or not segments[0][:1].isupper():
            return 404, outcome("not-found", f"no FHIR interaction at {path}")
        kind = segments[0]
        if kind in failing:
            return failing[kind], outcome("transient", f"{kind} is switched to fail for this test")
        if method == "GET" and len(segments) == 2 and segments[1] != "_search":
            with self._lock:
                entry = self._by_type.get(kind, {}).get(segments[1])
            if entry is None:
                return 404, outcome("not-found", f"{kind}/{segments[1]} is not known")
            return 200, entry.resource
        if (method == "GET" and len(segments) == 1) or (method == "POST" and segments[1:] == ["_search"]):
            try:
                return 200, self.search(kind, params)
            except BadSearch as exc:
                return 400, outcome("invalid", str(exc))
        return 405, outcome("not-supported", f"{method} {path} is not supported")

    def search(self, kind: str, params: list[tuple[str, str]]) -> dict[str, Any]:
        query = Search.parse(kind, params)
        matches = self._candidates(kind, query.patients)
        for test in query.filters:  # one filter at a time over a shrinking list: a few ms for 10,000 resources
            matches = [entry for entry in matches if test(entry)]
        if query.sort is not None:
            key, descending = query.sort
            dated = [entry for entry in matches if entry.sort_keys[key] is not None]
            dated.sort(key=lambda entry: entry.sort_keys[key], reverse=descending)  # stable: ties keep load order
            matches = dated + [entry for entry in matches if entry.sort_keys[key] is None]
        page = matches[query.offset : query.offset + query.page_size]
        kept = [(name, value) for name, value in params if name != OFFSET_PARAM]
        links = [{"relation": "self", "url": self._page_url(kind, kept, query.offset)}]
        if query.page_size and query.offset + len(page) < len(matches):
            links.append({"relation": "next", "url": self._page_url(kind, kept, query.offset + len(page))})
        bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": len(matches), "link": links}
        if page:  # FHIR JSON has no empty arrays
            bundle["entry"] = [
                {
                    "fullUrl": f"{self.base}/{kind}/{entry.resource['id']}",
                    "resource": entry.resource,
                    "search": {"mode": "match"},
                }
                for entry in page
            ]
        return bundle

    def _candidates(self, kind: str, patients: tuple[str, ...] | None) -> list[Indexed]:
        # The (type, patient) index: a search for one patient never looks at other patients' resources.
        with self._lock:
            if patients is None:
                return list(self._by_type.get(kind, {}).values())
            return [
                entry for patient in dict.fromkeys(patients) for entry in self._by_patient.get((kind, patient), {}).values()
            ]

    def _page_url(self, kind: str, params: list[tuple[str, str]], offset: int) -> str:
        # Stateless paging: the page's offset is in the URL (a GET, also after a POST _search).
        return f"{self.base}/{kind}?{urlencode([*params, (OFFSET_PARAM, str(offset))])}"


class HttpServer(ThreadingHTTPServer):
    def __init__(self, fhir: PagingFhirServer) -> None:
        super().__init__(("127.0.0.1", 0), FhirRequestHandler)
        self.fhir = fhir  # the handlers' way back to the store


class FhirRequestHandler(BaseHTTPRequestHandler):
    server: HttpServer

    protocol_version = "HTTP/1.1"  # keep-alive, as the service's pooled client expects of a FHIR server
    disable_nagle_algorithm = True  # headers and body are separate writes: without this a kept-alive answer waits ~40 ms
    timeout = 30  # an idle kept-alive connection's thread ends after this

    def do_OPTIONS(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(204)
        for header, value in CORS_PREFLIGHT.items():
            self.send_header(header, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        self._answer("GET", url.path, parse_qsl(url.query, keep_blank_values=True))

    def do_POST(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode("utf-8")
        form = (self.headers.get("Content-Type") or "").split(";")[0].strip() == "application/x-www-form-urlencoded"
        if body and not form:
            self._send(415, outcome("not-supported", "POST _search takes an application/x-www-form-urlencoded body"))
            return
        # FHIR: the body's parameters join the URL's.
        params = parse_qsl(url.query, keep_blank_values=True) + parse_qsl(body, keep_blank_values=True)
        self._answer("POST", url.path, params)

    def _answer(self, method: str, path: str, params: list[tuple[str, str]]) -> None:
        status, body = self.server.fhir.answer(method, path, params, self.headers.get("Authorization"))
        self._send(status, body)

    def _send(self, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Access-Control-Allow-Origin", "*")
        if status == 401:
            self.send_header("WWW-Authenticate", "Bearer")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the per-request stderr log
        return
