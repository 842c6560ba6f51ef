"""Request checks against the project's JSON Schemas (CDS Hooks 2.0 request, hook contexts, feedback)."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from .errors import BadRequest

HOOKS = ("patient-view", "order-select", "order-sign")


def load_schema(name: str) -> dict[str, Any]:
    text = resources.files("cds_service").joinpath("schemas", name).read_text(encoding="utf-8")
    return json.loads(text)


def make_validator(name: str | dict[str, Any]) -> Draft202012Validator:
    schema = load_schema(name) if isinstance(name, str) else name
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


_RESOURCE_TYPE = re.compile(r"^[A-Z][A-Za-z]+$")


def plausible_prefetch_value(value: Any) -> bool:
    """The request schema's ``$defs/prefetchValue`` (null, or an object with a resourceType), checked in Python.

    jsonschema spends ~11 µs on each prefetch value; a hook call carries a dozen. Values this accepts are valid
    under the schema (a test compares the two); any other value is checked by the schema itself, for its message.
    """
    if value is None:
        return True
    if type(value) is not dict:
        return False
    resource_type = value.get("resourceType")
    return type(resource_type) is str and _RESOURCE_TYPE.match(resource_type) is not None


@dataclass(frozen=True)
class Validators:
    request: Draft202012Validator  # the envelope: each prefetch value is checked by itself (below)
    prefetch_value: Draft202012Validator
    contexts: dict[str, Draft202012Validator]
    feedback: Draft202012Validator

    @classmethod
    def load(cls) -> Validators:
        request = load_schema("request.schema.json")
        envelope = copy.deepcopy(request)
        del envelope["properties"]["prefetch"]["additionalProperties"]
        return cls(
            request=make_validator(envelope),
            prefetch_value=make_validator({**request["$defs"]["prefetchValue"], "$schema": request["$schema"]}),
            contexts={hook: make_validator(f"context-{hook}.schema.json") for hook in HOOKS},
            feedback=make_validator("feedback.schema.json"),
        )


def json_path(error: ValidationError, prefix: tuple[str | int, ...] = ()) -> str:
    """A readable path to the failing element, e.g. ``context.draftOrders.entry[0].resource``."""
    out = ""
    for part in (*prefix, *error.absolute_path):
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "$"


def _raise_first(validator: Draft202012Validator, document: Any, prefix: tuple[str | int, ...] = ()) -> None:
    error = best_match(validator.iter_errors(document))
    if error is None:
        return
    path = json_path(error, prefix)
    # A missing property is reported on its parent; name the property itself.
    if error.validator in ("required", "dependentRequired"):
        missing = error.message.split("'")[1] if "'" in error.message else ""
        if missing:
            path = missing if path == "$" else f"{path}.{missing}"
    raise BadRequest(f"Invalid request at {path}: {error.message[:300]}", expression=path)


def check_hook_request(validators: Validators, body: Any, expected_hook: str) -> None:
    _raise_first(validators.request, body)
    for key, value in (body.get("prefetch") or {}).items():
        if not plausible_prefetch_value(value):
            _raise_first(validators.prefetch_value, value, ("prefetch", key))
    if body["hook"] != expected_hook:
        raise BadRequest(
            f"This service answers the '{expected_hook}' hook, not '{body['hook'][:64]}'", expression="hook"
        )
    _raise_first(validators.contexts[expected_hook], body["context"], ("context",))


def check_feedback(validators: Validators, body: Any) -> None:
    _raise_first(validators.feedback, body)
