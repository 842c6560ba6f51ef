"""Request checks: bounded JSON parsing, then the project's JSON Schemas (CDS Hooks 2.0 request, hook contexts, feedback)."""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import jsonschema_rs
import orjson
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import best_match

from .errors import BadRequest, ConfigurationError, JsonTooDeep

HOOKS = ("patient-view", "order-select", "order-sign")


def load_schema(name: str) -> dict[str, Any]:
    text = resources.files("cds_service").joinpath("schemas", name).read_text(encoding="utf-8")
    return json.loads(text)


# Every "format" the project's schemas use (a test finds them all). jsonschema checks a format only when the library
# for it is installed and skips it silently otherwise; naming them makes a missing one (rfc3986-validator for uri,
# rfc3339-validator for date-time) stop the service at start-up. The heavy optional libraries of jsonschema's
# format-nongpl extra (rfc3987-syntax builds a grammar at import: ~0.75 s for every CLI call) are not needed.
SCHEMA_FORMATS = ("date-time", "uri", "uuid")


@cache
def format_checker() -> FormatChecker:
    try:
        return FormatChecker(SCHEMA_FORMATS)
    except KeyError as exc:
        raise ConfigurationError(f"jsonschema cannot check the format {exc}: its library is not installed") from None


def make_validator(name: str | dict[str, Any]) -> Draft202012Validator:
    schema = load_schema(name) if isinstance(name, str) else name
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=format_checker())


def make_acceptor(name: str) -> Callable[[Any], bool]:
    """The schema compiled by jsonschema-rs: True for a document it finds valid, in ~1/10 of jsonschema's time.

    Only a fast way to say yes: jsonschema checks whatever this refuses, and its verdict and message stand. The formats
    are jsonschema's own checks; the patterns are no looser (Rust's ``$`` does not match before a final newline, as
    Python's does), so a document this accepts is one jsonschema accepts (a test compares the two)."""
    checker = format_checker()
    formats = {fmt: functools.partial(checker.conforms, format=fmt) for fmt in SCHEMA_FORMATS}
    validator = jsonschema_rs.validator_for(load_schema(name), validate_formats=True, formats=formats)

    def accepts(document: Any) -> bool:
        try:
            return validator.is_valid(document)
        except ValueError:  # a lone surrogate (json.loads lets one through) cannot cross into Rust: jsonschema decides
            return False

    return accepts


MAX_JSON_DEPTH = 64  # FHIR resources in a CDS Hooks request nest ~15 levels; 10,000 would exhaust Python's stack

_STRING = re.compile(rb'"[^"]*"')
_ESCAPE = re.compile(rb"\\.", re.S)
_CURLY_AS_SQUARE = bytes.maketrans(b"{}", b"[]")
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'[]{}"')))


def load_json(raw: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads``, but nesting deeper than ``max_depth`` (or unbalanced brackets) is a ``JsonTooDeep`` raised
    before parsing, and UTF-8-encoded surrogates are a ``ValueError`` (they are not Unicode).

    orjson parses a 100-resource hook body in about half of ``json.loads``'s time, one of the largest costs of a call.
    What orjson refuses goes to ``json.loads``, so the service takes what it always took: a lone surrogate written as
    a ``\\u`` escape then reaches the check that names its field, and NaN is refused there as an invalid value. One
    difference: an integer beyond 64 bits becomes a float, as orjson reads it (no FHIR R4 integer is that large)."""
    encoding = json.detect_encoding(raw)
    # Strict decoding; a byte order mark is dropped here (orjson refuses one), UTF-16 and -32 become UTF-8.
    utf8 = raw if encoding == "utf-8" else raw.decode(encoding).encode()
    # In UTF-8 no byte of a multi-byte character is a quote, backslash or bracket, so the bytes can be scanned.
    _check_depth(utf8, max_depth)
    try:
        return orjson.loads(utf8)
    except orjson.JSONDecodeError:
        return json.loads(utf8.decode())  # strict: invalid UTF-8 is a UnicodeDecodeError


def _without_escapes(utf8: bytes) -> bytes:
    """The text with every escape (a backslash and the character after it) dropped: an escape cannot end a string.

    A regex pass costs ~7 instructions a byte wherever the backslashes are; finding them with ``bytes.find``
    (memchr) costs little while they are few, as in a chart's text (a handful)."""
    kept: list[bytes] = []
    start = 0
    found = utf8.find(b"\\")
    while found >= 0:
        if len(kept) > 256:  # many escapes: one regex pass is cheaper than a step each
            return _ESCAPE.sub(b"", utf8)
        kept.append(utf8[start:found])
        start = found + 2  # past the escaped character, a backslash or a quote included
        found = utf8.find(b"\\", start)
    kept.append(utf8[start:])
    return b"".join(kept)


def _check_depth(utf8: bytes, max_depth: int) -> None:
    """Brackets outside strings, peeled one innermost level a pass; every step in C, a few per cent of the parse."""
    if b"\\" in utf8:
        utf8 = _without_escapes(utf8)
    # Only quotes and brackets matter. Quotes pair up in order (1st with 2nd, 3rd with 4th...); when every quote of the
    # skeleton stands in a '""' (no string holds a bracket: nearly always), the brackets are the rest of it.
    skeleton = utf8.translate(None, _NOT_STRUCTURE)
    if skeleton.count(b'"') == 2 * skeleton.count(b'""'):
        brackets = skeleton.translate(_CURLY_AS_SQUARE, b'"')
    else:
        # Removing every '""' first keeps the pairing (an empty string, or the end of one string and the start of the
        # next with no bracket between) and leaves the regex little to do.
        brackets = _STRING.sub(b"", skeleton.replace(b'""', b"")).translate(_CURLY_AS_SQUARE)
    for _ in range(max_depth):
        if not brackets:
            return
        peeled = brackets.replace(b"[]", b"")
        if len(peeled) == len(brackets):
            raise ValueError("unbalanced brackets")
        brackets = peeled
    if brackets:
        raise JsonTooDeep(f"JSON nests deeper than {max_depth} levels")


def plausible_bundle(bundle: dict[str, Any]) -> bool:
    """The schema's ``$defs/bundleShape``: the entries, their resources and the paging links have the JSON types
    the service walks (``"entry": 1`` would otherwise be a TypeError deep in the data step)."""
    entries = bundle.get("entry", [])
    links = bundle.get("link", [])
    if type(entries) is not list or type(links) is not list:
        return False
    for entry in entries:
        if type(entry) is not dict or ("resource" in entry and type(entry["resource"]) is not dict):
            return False
    for link in links:
        if type(link) is not dict:
            return False
        if any(name in link and type(link[name]) is not str for name in ("relation", "url")):
            return False
    return True


@dataclass(frozen=True)
class Validators:
    request: Draft202012Validator  # the envelope: each prefetch value is checked by itself (below)
    prefetch_value: Draft202012Validator
    contexts: dict[str, Draft202012Validator]
    feedback: Draft202012Validator
    # The hook request's schemas, whole, through jsonschema-rs: the fast yes for a valid request (make_acceptor)
    accepts_request: Callable[[Any], bool]
    accepts_context: dict[str, Callable[[Any], bool]]

    @classmethod
    def load(cls) -> Validators:
        request = load_schema("request.schema.json")
        envelope = copy.deepcopy(request)
        del envelope["properties"]["prefetch"]["additionalProperties"]
        return cls(
            request=make_validator(envelope),
            prefetch_value=make_validator(
                {**request["$defs"]["prefetchValue"], "$schema": request["$schema"], "$defs": request["$defs"]}),
            contexts={hook: make_validator(f"context-{hook}.schema.json") for hook in HOOKS},
            feedback=make_validator("feedback.schema.json"),
            accepts_request=make_acceptor("request.schema.json"),
            accepts_context={hook: make_acceptor(f"context-{hook}.schema.json") for hook in HOOKS},
        )


def json_path(parts: Iterable[str | int]) -> str:
    """A readable path to an element, e.g. ``context.draftOrders.entry[0].resource``."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "$"


def _raise_first(validator: Draft202012Validator, document: Any, prefix: tuple[str | int, ...] = ()) -> None:
    try:
        error = best_match(validator.iter_errors(document))
    except RecursionError:  # the depth limit keeps this away; should it ever not, a client error is never a 500
        raise BadRequest("Request nests too deeply to check", expression=json_path(prefix)) from None
    if error is None:
        return
    path = json_path((*prefix, *error.absolute_path))
    # A missing property is reported on its parent; name the property itself.
    if error.validator in ("required", "dependentRequired"):
        missing = error.message.split("'")[1] if "'" in error.message else ""
        if missing:
            path = missing if path == "$" else f"{path}.{missing}"
    raise BadRequest(f"Invalid request at {path}: {error.message[:300]}", expression=path)


def check_hook_request(validators: Validators, body: Any, expected_hook: str) -> None:
    """A valid request passes jsonschema-rs in ~15 µs (a 100-resource chart); jsonschema, ~8 times slower, checks what
    it refuses, part by part: the envelope, each prefetch value by its key, the hook, the context."""
    if type(body) is dict and body.get("hook") == expected_hook and validators.accepts_request(body) \
            and validators.accepts_context[expected_hook](body["context"]):
        return
    _raise_first(validators.request, body)
    for key, value in (body.get("prefetch") or {}).items():
        _raise_first(validators.prefetch_value, value, ("prefetch", key))
    if body["hook"] != expected_hook:
        raise BadRequest(
            f"This service answers the '{expected_hook}' hook, not '{body['hook'][:64]}'", expression="hook"
        )
    _raise_first(validators.contexts[expected_hook], body["context"], ("context",))


def check_feedback(validators: Validators, body: Any) -> None:
    _raise_first(validators.feedback, body)
