"""The compiled validators of cds_service/fhir_models.py against fhir.resources' own ``model_validate``.

The fast path may refuse more (``model_validate`` then decides), but it must never accept what fhir.resources refuses,
and where both accept they must build the same model. Checked on real charts (the samples, Synthea, the benchmark's
chart), on what the chart index validates of them (the read part) and whole, and on those resources changed in one
to three places the way broken EHR data is.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bench.charts import hook_body
from cds_service import chart, fhir_models
from cds_service.fhir_client import bundle_resources
from cds_service.fhir_models import RULE_RESOURCE_TYPES, fast_validators, model_classes
from fhir_examples.synthea import SYNTHEA_DIR

from .conftest import unavailable

EXAMPLES = Path(__file__).resolve().parent.parent / "fhir_examples"


def _request_resources(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The resources of a hook request's prefetch: its Bundles' and the Patient."""
    values = [v for v in request["prefetch"].values() if isinstance(v, dict)]
    return [r for v in values for r in (bundle_resources(v) if v.get("resourceType") == "Bundle" else [v])]


def _synthea_resources(every: int) -> list[dict[str, Any]]:
    """Every ``every``-th resource of each type of the Synthea sample that a rule reads."""
    out = []
    for rtype in ("Patient", "Condition", "Encounter", "MedicationRequest", "Procedure"):
        with (SYNTHEA_DIR / f"{rtype}.ndjson").open(encoding="utf-8") as lines:
            out += [json.loads(line) for number, line in enumerate(lines) if number % every == 0]
    return out


# Elements the samples seldom carry: a contained resource, narrative, identifiers, dosage with timing, addresses,
# telecom, photo, ages, ranges, ratios, attachments, annotations, a primitive's extension.
_RICH = [
    {"resourceType": "Patient", "id": "rich-p", "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">P</div>"},
     "identifier": [{"system": "urn:oid:1.2.3", "value": "123", "period": {"start": "2020-01-01"},
                     "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}}],
     "name": [{"family": "Doe", "given": ["Jan", None], "_given": [None, {"extension": [
         {"url": "http://hl7.org/fhir/StructureDefinition/iso21090-EN-qualifier", "valueCode": "CL"}]}]}],
     "telecom": [{"system": "phone", "value": "555-1234", "use": "home", "rank": 1}],
     "address": [{"line": ["1 Main St"], "city": "Salina", "state": "KS", "postalCode": "67401", "country": "US"}],
     "photo": [{"contentType": "image/png", "data": "aGVsbG8=", "size": 5}], "gender": "female",
     "_gender": {"extension": [{"url": "http://example.org/x", "valueString": "y"}]}, "birthDate": "1980-02-29",
     "multipleBirthInteger": 2, "contact": [{"relationship": [{"text": "sister"}], "name": {"text": "Ann"}}]},
    {"resourceType": "Condition", "id": "rich-c", "subject": {"reference": "Patient/rich-p"},
     "contained": [{"resourceType": "Practitioner", "id": "dr", "name": [{"family": "Lee"}]}],
     "asserter": {"reference": "#dr"}, "code": {"text": "knee pain"}, "onsetAge": {"value": 40, "unit": "a",
     "system": "http://unitsofmeasure.org", "code": "a"}, "abatementRange": {"low": {"value": 41}, "high": {"value": 42}},
     "note": [{"authorString": "Dr Lee", "time": "2026-11-20T10:00:00-05:00", "text": "behind the right knee"}],
     "stage": [{"summary": {"text": "early"}}], "evidence": [{"detail": [{"reference": "Observation/x"}]}]},
    {"resourceType": "Observation", "id": "rich-o", "status": "final", "code": {"text": "exam"},
     "effectivePeriod": {"start": "2026-11-19T10:00:00-05:00", "end": "2026-11-19T10:30:00-05:00"},
     "valueRatio": {"numerator": {"value": 1}, "denominator": {"value": 3}},
     "referenceRange": [{"low": {"value": 1.5, "unit": "cm"}, "age": {"low": {"value": 18}}, "text": "adult"}],
     "component": [{"code": {"text": "range"}, "valueRange": {"low": {"value": 2}}},
                   {"code": {"text": "period"}, "valuePeriod": {"start": "2026-11-01"}},
                   {"code": {"text": "time"}, "valueTime": "10:30:00"}],
     "note": [{"authorReference": {"reference": "Practitioner/x"}, "text": "R calf hot, swollen and tender"}]},
    {"resourceType": "MedicationRequest", "id": "rich-m", "status": "active", "intent": "order",
     "subject": {"reference": "Patient/rich-p"}, "medicationCodeableConcept": {"text": "apixaban 5 mg"},
     "dosageInstruction": [{"text": "twice a day", "timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d",
                            "boundsDuration": {"value": 6, "unit": "mo"}}, "event": ["2026-11-20T08:00:00Z"]},
                            "doseAndRate": [{"doseQuantity": {"value": 5, "unit": "mg"}}],
                            "asNeededBoolean": False}],
     "dispenseRequest": {"validityPeriod": {"start": "2026-11-20"}, "quantity": {"value": 60}}},
]


def _corpus() -> list[tuple[str, dict[str, Any]]]:
    """(type, resource without resourceType): each resource whole and as the chart index validates it."""
    resources = [r for path in sorted(EXAMPLES.glob("*.json")) if path.name != "manifest.json"
                 for r in bundle_resources(json.loads(path.read_text(encoding="utf-8")))]
    resources += _request_resources(json.loads(hook_body(100, "fhir-models"))) + _RICH
    if (SYNTHEA_DIR / "Patient.ndjson").is_file():  # Synthea's shapes broken too (its own test needs the files)
        resources += _synthea_resources(every=25)
    out = []
    for raw in resources:
        rtype = raw.get("resourceType")
        if rtype in RULE_RESOURCE_TYPES:
            out.append((rtype, chart._whole_part(raw)))
            out.append((rtype, chart._read_part(rtype, raw)))
    return out


CORPUS = _corpus()


def fast_model(rtype: str, data: Any) -> Any:
    try:
        return fast_validators()[rtype].validate_python(data)
    except Exception:  # noqa: BLE001 - as fhir_models.validate: anything but a model is a refusal here
        return None


def fhir_model(rtype: str, data: Any) -> Any:
    try:
        return model_classes()[rtype].model_validate(data)
    except (ValidationError, ValueError, KeyError, TypeError, RecursionError):
        return None


def assert_agrees(rtype: str, data: Any) -> bool:
    """True when the fast path accepted; fails when it accepted what fhir.resources refuses, or built another model."""
    fast = fast_model(rtype, data)
    if fast is None:
        return False
    slow = fhir_model(rtype, data)
    assert slow is not None, f"the fast path accepted a {rtype} fhir.resources refuses: {json.dumps(data)[:2000]}"
    assert type(fast) is type(slow)
    assert fast == slow
    assert fast.model_dump(exclude_unset=True) == slow.model_dump(exclude_unset=True)  # the same elements set
    return True


def test_every_type_a_rule_reads_is_compiled():
    # A fhir.resources or fhir_core release that changes the glue would leave a type to model_validate (slower, still
    # right): this test says so.
    assert set(fast_validators()) == set(RULE_RESOURCE_TYPES)


def test_the_samples_and_the_benchmark_chart_validate_as_fhir_resources_validates_them():
    assert len(CORPUS) > 700
    accepted = [assert_agrees(rtype, data) for rtype, data in CORPUS]
    # Every one of them is valid R4: the fast path takes them all (else the service would not be faster on them), but
    # a resource with a contained one (fhir_core picks the contained one's model by its resourceType; no rule reads
    # it, so the chart index never validates it).
    assert all(ok or "contained" in data for ok, (_, data) in zip(accepted, CORPUS, strict=True))


def test_synthea_charts_validate_as_fhir_resources_validates_them():
    if not (SYNTHEA_DIR / "Patient.ndjson").is_file():
        unavailable(f"the Synthea sample is not at {SYNTHEA_DIR} (set KNEE_CDS_SYNTHEA_DIR)")
    checked = 0
    for raw in _synthea_resources(every=7):  # all kinds of them, in a few seconds
        rtype = raw["resourceType"]
        assert assert_agrees(rtype, chart._whole_part(raw)), raw.get("id")
        assert assert_agrees(rtype, chart._read_part(rtype, raw)), raw.get("id")
        checked += 1
    assert checked > 500


# What broken EHR data looks like where a value belongs.
_WRONG_VALUES = [
    None, "", " ", "two words", "trailing ", 0, 1, -1, 2.5, 10**20, True, False, [], {}, [None], [{}], [[]], {"x": 1},
    "2026-11-20T10:00:00", "2026-11-20T10:00:00Z", "2026-11-20", "2026-13-40", "2026", "20261120", "10:00:00",
    '{"text": "written as JSON"}', "urn:uuid:1", "http://example.org/x", "ABC-1", "1e3", "0.50", "NaN", "\u0000",
    {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]}, {"reference": "Patient/x"},
    {"value": 1, "unit": "kg"}, {"start": "2026-11-20"}, {"extension": []}, {"extension": [None]},
    {"id": "a"}, [{"url": "http://x", "valueString": "y"}], [{"url": "http://x"}], {"fhir_comments": "c"},
]


_CHOICE_VALUES = [("Period", {"start": "2026-11-20"}), ("String", "text"), ("DateTime", "2026-11-20"),
                  ("Boolean", True), ("Quantity", {"value": 1}), ("Age", {"value": 40}),
                  ("CodeableConcept", {"text": "x"})]


def _places(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _places(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _places(item, (*path, index))
    return out


def _parent(document: Any, path: tuple[Any, ...]) -> Any:
    for step in path[:-1]:
        document = document[step]
    return document


@st.composite
def _broken(draw: st.DrawFn) -> tuple[str, Any]:
    rtype, original = draw(st.sampled_from(CORPUS))
    data = copy.deepcopy(original)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        places = [p for p in _places(data) if p]
        if not places:
            break
        path = draw(st.sampled_from(places))
        parent, last = _parent(data, path), path[-1]
        action = draw(st.sampled_from(["replace", "replace", "delete", "null-item", "unknown", "sibling", "extension"]))
        if action == "replace":
            parent[last] = copy.deepcopy(draw(st.sampled_from(_WRONG_VALUES)))
        elif action == "delete":
            del parent[last]
        elif action == "null-item" and isinstance(parent[last], list):
            parent[last].insert(draw(st.integers(min_value=0, max_value=len(parent[last]))), None)
        elif action == "unknown" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["unknownElement", "resourceType", "resource_type", "valueFoo"]))] = "x"
        elif action == "sibling" and isinstance(parent, dict) and isinstance(last, str):
            # a valid value of another type of the same choice element (effectivePeriod beside effectiveDateTime)
            stem = last.rstrip("abcdefghijklmnopqrstuvwxyz") or last
            suffix, value = draw(st.sampled_from(_CHOICE_VALUES))
            parent[f"{stem}{suffix}"] = copy.deepcopy(value)
        elif action == "extension" and isinstance(parent, dict) and isinstance(last, str):
            parent[f"_{last}"] = copy.deepcopy(draw(st.sampled_from(
                [{}, {"id": "e"}, {"extension": [{"url": "http://x", "valueCode": "y"}]}, []])))
    return rtype, data


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_broken())
def test_broken_resources_are_never_accepted_by_the_fast_path_alone(case: tuple[str, Any]):
    assert_agrees(*case)


@pytest.mark.parametrize(("rtype", "data"), [
    # a null in a list of complex elements: fhir_core's walking check, here the list's item schema
    ("Condition", {"subject": {"reference": "Patient/p"}, "code": {"coding": [None]}}),
    ("Condition", {"subject": {"reference": "Patient/p"}, "bodySite": [None]}),
    ("Observation", {"status": "final", "code": {"text": "x"}, "component": [{"code": {"text": "y"}}, None]}),
    # two types of one choice element, a required element missing, an unknown one, a zone-less dateTime
    ("Observation", {"status": "final", "code": {"text": "x"}, "effectiveDateTime": "2026-11-20T10:00:00Z",
                     "effectivePeriod": {"start": "2026-11-20"}}),
    ("Condition", {"subject": {"reference": "Patient/p"}, "onsetDateTime": "2026-11-10",
                   "onsetPeriod": {"start": "2026-11-10"}}),
    ("Patient", {"deceasedBoolean": False, "deceasedDateTime": "2026-11-10"}),
    ("Observation", {"code": {"text": "x"}}),
    ("Encounter", {"class": {"code": "AMB"}}),
    ("Condition", {"subject": {"reference": "Patient/p"}, "onsetDateTime": "2026-11-20T10:00:00"}),
    ("Patient", {"gender": "male", "birthDate": "2001-02-30"}),
    ("Patient", {"gender": "male", "nickname": "x"}),
    ("Patient", {"gender": "male "}),
    # a primitive's extension with nothing in it
    ("Patient", {"gender": "male", "_gender": {}}),
])
def test_what_fhir_resources_refuses_the_fast_path_refuses(rtype: str, data: dict[str, Any]):
    assert fhir_model(rtype, data) is None
    assert fast_model(rtype, data) is None
    with pytest.raises(ValidationError):
        fhir_models.validate(rtype, data)


def test_a_list_of_complex_elements_that_could_hold_a_null_is_not_compiled():
    # fhir_core's walking check is not compiled: it stands on each complex list's items being the element's model
    # (a null fails it). A release whose schema lets a null item through leaves the type to model_validate.
    from fhir.resources.R4B.codeableconcept import CodeableConcept

    schema = copy.deepcopy(CodeableConcept.__pydantic_core_schema__)
    fields = schema["schema"]["schema"]["schema"]["fields"]
    items = fields["coding"]["schema"]["schema"]["schema"]
    items["items_schema"] = {"type": "nullable", "schema": items["items_schema"]}
    with pytest.raises(fhir_models.UnexpectedSchema, match="coding"):
        fhir_models._Compiler()._node(schema, None)


def test_a_changed_fhir_core_is_not_compiled(monkeypatch, caplog):
    # The glue is recognised by name; what it does is pinned by a digest of its source. Another digest (another
    # fhir_core, changed under the same names) leaves every type to model_validate, and says so.
    monkeypatch.setattr(fhir_models, "GLUE_DIGEST", "0" * 16)
    assert fhir_models.fast_validators.__wrapped__() == {}
    assert "not the one fhir_models was written for" in caplog.text
    monkeypatch.undo()
    assert set(fhir_models.fast_validators.__wrapped__()) == set(RULE_RESOURCE_TYPES)


def test_any_error_compiling_a_type_leaves_that_type_to_model_validate(monkeypatch, caplog):
    compile_one = fhir_models._Compiler.validator

    def failing_for_encounter(self: Any, cls: Any) -> Any:
        if cls.__name__ == "Encounter":
            raise KeyError("schema")  # a schema of a shape the compiler does not expect
        return compile_one(self, cls)

    monkeypatch.setattr(fhir_models._Compiler, "validator", failing_for_encounter)
    assert set(fhir_models.fast_validators.__wrapped__()) == set(RULE_RESOURCE_TYPES) - {"Encounter"}
    assert "Encounter is validated by fhir.resources' model_validate only (KeyError" in caplog.text


def test_a_class_that_cannot_be_compiled_leaves_no_trace_for_the_types_compiled_after_it(monkeypatch):
    # A Period of another shape (here: an __init__ of its own) stops every type that uses it from being compiled,
    # the first and the later ones alike (a half-compiled Period left behind would let them accept anything there).
    from fhir.resources.R4B.period import Period
    from fhir_core.fhirabstractmodel import FHIRAbstractModel

    def own_init(self: Any, /, **data: Any) -> None:
        FHIRAbstractModel.__init__(self, **data)

    monkeypatch.setattr(Period, "__init__", own_init)
    compiler = fhir_models._Compiler()
    for rtype in ("Condition", "Observation"):
        with pytest.raises(fhir_models.UnexpectedSchema, match="Period"):
            compiler.validator(model_classes()[rtype])


def test_what_only_fhir_resources_accepts_is_still_accepted():
    # fhir_core's element validator parses an element written as a JSON string; the compiled schema does not, and
    # fhir_models.validate hands it on, so the service takes what it always took.
    data = {"subject": {"reference": "Patient/p"}, "code": '{"text": "knee pain"}'}
    assert fast_model("Condition", data) is None
    assert fhir_models.validate("Condition", data).code.text == "knee pain"


def test_a_compiled_read_part_is_the_model_the_rules_read():
    raw = {"resourceType": "Observation", "id": "o1", "status": "final",
           "code": {"coding": [{"system": "http://loinc.org", "code": "39156-5", "display": "BMI"}]},
           "effectiveDateTime": "2026-11-19T10:20:00-05:00", "valueQuantity": {"value": 30.0, "unit": "kg/m2"},
           "performer": [{"reference": "Practitioner/x"}]}
    model = fhir_models.validate("Observation", chart._read_part("Observation", raw))
    assert type(model).__name__ == "Observation" and type(model.code.coding[0]).__name__ == "Coding"
    assert str(model.valueQuantity.value) == "30.0" and model.effectiveDateTime.isoformat() == "2026-11-19T10:20:00-05:00"
    assert model.performer is None  # not read: not validated
