"""Incomplete data never breaks the service: every sample record with any one element of any one
resource removed (or emptied) still gets an answer, never an exception."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest

from cds_service.knowledge import load_knowledge
from cds_service.pipeline import decide
from cds_service.samples import build_request, split_bundle
from cds_service.samples import sample_resources as bundle_resources

from .conftest import EXAMPLES, load_json

KNOWLEDGE = load_knowledge()
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
NAMES = sorted(load_json(EXAMPLES / "manifest.json")["examples"])
KEEP = {"resourceType", "id"}


def _variants(resources):
    for i, resource in enumerate(resources):
        for key in resource:
            if key in KEEP:
                continue
            for replacement in (None, "empty"):
                variant = copy.deepcopy(resources)
                if replacement is None:
                    del variant[i][key]
                elif isinstance(variant[i][key], dict):
                    variant[i][key] = {k: v for k, v in variant[i][key].items() if k in ("coding", "text")} or {}
                    for inner in variant[i][key].get("coding", []):
                        inner.pop("code", None)
                else:
                    continue
                yield f"{resource['resourceType']}/{resource.get('id')}:{key}:{replacement}", variant


@pytest.mark.parametrize("name", NAMES)
def test_any_missing_element_still_gets_an_answer(name):
    resources = bundle_resources(load_json(EXAMPLES / name))
    for label, variant in _variants(resources):
        for hook in ("patient-view", "order-sign"):
            request = build_request(variant, hook, hook_instance="00000000-0000-4000-8000-000000000000")
            try:
                response = decide(hook, request["context"], split_bundle(variant)[0], KNOWLEDGE, NOW).response()
            except Exception as exc:  # noqa: BLE001 - the point is that nothing escapes
                pytest.fail(f"{name} {label} {hook}: {type(exc).__name__}: {exc}")
            assert isinstance(response["cards"], list)
