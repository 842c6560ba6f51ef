"""The fhir.resources R4B models of the resource types the rules read, and a fast way to validate with them.

fhir.resources (through fhir_core) validates every nested element of a resource in Python: a wrap validator that
calls the element's ``model_validate``, the model's own ``__init__``, a check that walks every field of the class
for nulls in lists, and an after-check. A Condition's dozen elements cost ~110 µs that way, twice that in a hook
call with the caches cold: the five resources a 100-resource call validates were a quarter of its CPU.

``fast_validators`` compiles, once per process, the pydantic-core schemas that fhir.resources generated for each
model, with that glue taken out:

- a nested element is validated by its own model's schema (no Python call per element);
- a null in a list of complex elements is refused by the list's item schema, the element's model, where the walking
  check refused it (the compiler makes sure of it for each list fhir_core's own test calls complex);
- the after-check (required primitives, choice elements) stays on the classes that have either: for the others it
  checks nothing.

Everything else is fhir.resources' own: every primitive's validator (dateTime with its zone, decimal, the
patterns), the refusal of unknown elements, the classes of the models built. The result is the same model.

The fast path only says yes. Whatever it refuses goes to the model's ``model_validate``, whose verdict and message
stand; that is also where the few shapes the glue allows and the schema does not are accepted (an element written
as a JSON string; a contained resource, whose model fhir_core picks by its resourceType: no rule reads one).
``tests/test_fhir_models.py`` holds it to never accepting what ``model_validate`` refuses and to building the same
model when both accept.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from fhir_core.types import FhirBase
from fhir_core.utils import is_list_type, is_primitive_type
from pydantic_core import SchemaValidator, core_schema

from .errors import KneeCdsError

log = logging.getLogger(__name__)

RULE_RESOURCE_TYPES = (
    "Patient", "Condition", "Observation", "Procedure", "MedicationRequest", "Encounter", "DiagnosticReport",
    "ServiceRequest",
)

# fhir_core's glue, recognised by identity; what it does is pinned by GLUE_DIGEST (fhir_core 1.1.12): a release that
# changes it is not compiled until this module is reviewed against it and the digest updated.
GLUE_DIGEST = "9366ae2ac69e51e8"
_NULL_CHECK = FHIRAbstractModel.reject_null_complex_elements.__func__
_AFTER_CHECK = FHIRAbstractModel.validate_after_model_construction
_MODEL_INIT = FHIRAbstractModel.__init__
_ELEMENT_WRAP = ("fhir_core.types", "FhirBase.__get_pydantic_core_schema__.<locals>._validate")
_NOT_SCHEMA = ("cls", "metadata", "serialization")  # a node's Python objects and serializers: kept as they are


class UnexpectedSchema(KneeCdsError):
    """fhir.resources' schema is not the shape this module compiles: that type is validated by model_validate only."""


@cache
def model_classes() -> dict[str, type[Resource]]:
    """The R4B model class of each resource type a rule reads."""
    return {name: get_fhir_model_class(name) for name in RULE_RESOURCE_TYPES}


@cache
def fast_validators() -> dict[str, SchemaValidator]:
    """The compiled validator of each type (~0.1 s, once per process: create_app asks before the workers fork)."""
    digest = _glue_digest()
    if digest != GLUE_DIGEST:
        log.warning("fhir_core's validation code is not the one fhir_models was written for (%s, not %s): every type "
                    "is validated by fhir.resources' model_validate only", digest, GLUE_DIGEST)
        return {}
    compiler = _Compiler()
    validators = {}
    for name, cls in model_classes().items():
        try:
            validators[name] = compiler.validator(cls)
        except Exception as exc:  # noqa: BLE001 - any schema this module does not know is left to model_validate
            log.warning("%s is validated by fhir.resources' model_validate only (%s: %s)", name, type(exc).__name__, exc)
    return validators


def _glue_digest() -> str:
    """A digest of the source of fhir_core's glue this module compiles away (and of what it assumes of it: when the
    after-check checks nothing): a release that changes what it does, under the same names, is not compiled."""
    functions = (FHIRAbstractModel.__init__, FHIRAbstractModel.reject_null_complex_elements,
                 FHIRAbstractModel.validate_after_model_construction, FHIRAbstractModel._validate_one_of_many,
                 FHIRAbstractModel._validate_required_primitive_elements, FhirBase.__get_pydantic_core_schema__,
                 FhirBase.fhir_model_validator)
    try:
        source = "\n".join(inspect.getsource(function) for function in functions)
    except (OSError, TypeError):  # no source installed: nothing to compare
        return "unknown"
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def validate(resource_type: str, data: dict[str, Any]) -> Resource:
    """The model of ``data``, a resource as JSON reads it (dicts, lists, strings, numbers) without its ``resourceType``
    (the type chose the class); raises what the class's ``model_validate`` raises. One difference: a resource nested
    deeper than fhir_core's Python recursion allows (~120 levels of extensions) is valid here, where model_validate
    raised RecursionError; hook bodies are refused past 64 levels before this, the CLI's check now calls it valid."""
    fast = fast_validators().get(resource_type)
    if fast is not None:
        try:
            return fast.validate_python(data)
        except Exception:  # noqa: BLE001 - anything but a model is no verdict: model_validate gives it
            pass
    return model_classes()[resource_type].model_validate(data)


class _Compiler:
    """fhir.resources' core schemas with the Python glue taken out, as one set of definitions (elements recurse)."""

    def __init__(self) -> None:
        self.definitions: dict[str, core_schema.CoreSchema] = {}

    def validator(self, cls: type[FHIRAbstractModel]) -> SchemaValidator:
        root = self._reference(cls)
        definitions = [{**schema, "ref": name} for name, schema in self.definitions.items()]
        return SchemaValidator(core_schema.definitions_schema(root, definitions))  # type: ignore[arg-type]

    def _reference(self, cls: type[FHIRAbstractModel]) -> core_schema.DefinitionReferenceSchema:
        name = f"{cls.__module__}.{cls.__qualname__}"
        if name not in self.definitions:
            before = set(self.definitions)
            self.definitions[name] = {"type": "any"}  # a placeholder while its own elements refer back to it
            try:
                self.definitions[name] = self._node(cls.__pydantic_core_schema__, None)
            except Exception:
                # Taken back with every definition made meanwhile (they may refer to it): a placeholder left behind
                # would let a later type that uses this class accept anything there.
                for added in set(self.definitions) - before:
                    del self.definitions[added]
                raise
        return core_schema.definition_reference_schema(name)

    def _node(self, node: Any, owner: type[FHIRAbstractModel] | None) -> Any:
        if isinstance(node, list):
            return [self._node(item, owner) for item in node]
        if not isinstance(node, dict):
            return node
        kind = node.get("type")
        function = node.get("function")
        function = function.get("function") if isinstance(function, dict) else function
        if kind == "function-wrap" and (getattr(function, "__module__", None),
                                        getattr(function, "__qualname__", None)) == _ELEMENT_WRAP:
            return self._reference(_element_class(function))
        if kind == "function-after" and function is _AFTER_CHECK:
            inner = self._node(node["schema"], None)
            model = node["schema"].get("cls")
            if model is None:
                raise UnexpectedSchema("an after-check outside a model")
            probe = model.model_construct()
            if probe.get_required_fields() or probe.get_one_of_many_fields():
                return {**node, "schema": inner}
            return inner  # nothing required, no choice element: the check returns at once
        if kind == "function-before" and getattr(function, "__func__", None) is _NULL_CHECK:
            if owner is None:
                raise UnexpectedSchema("a null check outside a model")
            return self._node(node["schema"], owner)  # the lists' item schemas refuse nulls (model-fields, below)
        if kind == "model":
            cls = node["cls"]
            if cls.__init__ is not _MODEL_INIT:
                raise UnexpectedSchema(f"{cls.__name__} has an __init__ of its own")
            out = {k: (v if k in _NOT_SCHEMA else self._node(v, cls)) for k, v in node.items() if k != "ref"}
            out["custom_init"] = False  # its __init__ only checks resourceType, which the caller leaves out
            return out
        if kind == "model-fields" and owner is not None:
            fields = {}
            for name, field in node["fields"].items():
                compiled = self._node(field, None)
                info = owner.model_fields[name]
                if not name.endswith("__ext") and is_list_type(info) and not is_primitive_type(info):
                    _refusing_null_items(compiled["schema"], name)
                fields[name] = compiled
            return {**{k: v for k, v in node.items() if k != "ref"}, "fields": fields}
        # any other node (a model's own validators included) is kept, its inner schemas compiled for the same model
        return {k: (v if k in _NOT_SCHEMA else self._node(v, owner)) for k, v in node.items() if k != "ref"}


def _element_class(wrap: Any) -> type[FHIRAbstractModel]:
    """The model class an element's wrap validator validates with (the annotation it closes over names it)."""
    cells = dict(zip(wrap.__code__.co_freevars, wrap.__closure__ or (), strict=True))
    source = cells.get("source_type")
    if source is None or not hasattr(source.cell_contents, "get_model_klass"):
        raise UnexpectedSchema("an element validator without its model class")
    return source.cell_contents.get_model_klass()


def _refusing_null_items(schema: dict[str, Any], name: str) -> None:
    """A list of complex elements must refuse a null item, as fhir_core's walking check did: its items are their
    model's schema, never nullable (default → nullable → list → items)."""
    kind = schema.get("type")
    if kind in ("default", "nullable"):
        return _refusing_null_items(schema["schema"], name)
    if kind != "list" or schema["items_schema"].get("type") != "definition-ref":
        raise UnexpectedSchema(f"the list of complex elements {name} may hold a null")
    return None
