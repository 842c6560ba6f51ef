"""Samples that stay valid: the CLI moves a sample bundle's dates so that its reference date is today, so the README's
examples give the cards they describe on any future day (here: with the clock a year ahead)."""

from __future__ import annotations

import json

import pytest

from cds_service import Settings, create_app
from cds_service.cli import main
from cds_service.samples import SAMPLE_TAG, as_of, reference_date, shift_date, shifted

from .conftest import EXAMPLES, load_json

A_YEAR_AHEAD = "2027-11-26"
MANIFEST = load_json(EXAMPLES / "manifest.json")


def _expected(name: str, hook: str) -> list[tuple[str, str]]:
    return [(c["topic"], c["indicator"]) for c in MANIFEST["examples"][name]["expect"][hook]["cards"]]


@pytest.mark.parametrize(("name", "hook"), [("dvt-urgent-hot-calf.json", "patient-view"),
                                            ("chronic-posterior-knee-pain.json", "order-sign"),
                                            ("bakers-cyst.json", "patient-view"),
                                            ("hamstring-strain-not-improving.json", "patient-view")])
def test_a_sample_evaluated_a_year_later_gives_the_cards_it_describes(monkeypatch, capsys, name, hook):
    monkeypatch.setenv("KNEE_CDS_NOW", A_YEAR_AHEAD)
    assert main(["evaluate", str(EXAMPLES / name), "--hook", hook, "--json"]) == 0
    out = capsys.readouterr()
    cards = json.loads(out.out)["cards"]
    assert [(c["source"]["topic"]["code"], c["indicator"]) for c in cards] == _expected(name, hook)
    assert "moved by 371 days" in out.err  # the developer is told


def test_a_request_built_a_year_later_gets_the_cards_from_the_service(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("KNEE_CDS_NOW", A_YEAR_AHEAD)
    main(["request", str(EXAMPLES / "dvt-urgent-hot-calf.json"), "--hook", "patient-view"])
    body = json.loads(capsys.readouterr().out)
    service = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'f.db'}", now=A_YEAR_AHEAD)).test_client()
    cards = service.post("/cds-services/posterior-knee-pain", json=body).get_json()["cards"]
    assert [(c["source"]["topic"]["code"], c["indicator"]) for c in cards] == \
        _expected("dvt-urgent-hot-calf.json", "patient-view")


def test_now_evaluates_a_sample_as_written(capsys):
    # A fixed --now is for reproducing what the data said at that moment: a year on, the hot calf is old news.
    main(["evaluate", str(EXAMPLES / "dvt-urgent-hot-calf.json"), "--now", A_YEAR_AHEAD, "--json"])
    topics = [c["source"]["topic"]["code"] for c in json.loads(capsys.readouterr().out)["cards"]]
    assert "dvt-urgent" not in topics


@pytest.mark.parametrize(("value", "days", "moved"), [
    ("2026-11-20", 10, "2026-11-30"),
    ("2026-11-20T10:00:00-05:00", 11, "2026-12-01T10:00:00-05:00"),  # time and zone as written
    ("2026-11-20T10:00:00", -20, "2026-10-31T10:00:00"),  # zone-less stays zone-less
    ("2026-11", 30, "2026-12"),  # month precision stays month precision
    ("2026", 400, "2027"),
    ("not a date", 5, "not a date"),
    ("1970-02-30", 5, "1970-02-30"),  # no such day: left as written, for validation to refuse
    ("9999-12-30", 5, "9999-12-30"),  # past year 9999
])
def test_a_fhir_date_moves_by_whole_days_keeping_its_form(value, days, moved):
    assert shift_date(value, days) == moved


@pytest.mark.parametrize("meta", ["x", ["x"], {"tag": 5}, {"tag": ["x"]}, None])
def test_a_bundle_with_a_meta_of_another_shape_is_not_a_sample(meta):
    assert reference_date({"resourceType": "Bundle", "meta": meta, "timestamp": "2026-11-20"}) is None


def test_a_sample_whose_timestamp_is_no_day_is_refused_not_taken_for_untagged():
    tagged = {"resourceType": "Bundle", "meta": {"tag": [SAMPLE_TAG]}, "timestamp": "2026-13-45T00:00:00Z"}
    with pytest.raises(ValueError):
        reference_date(tagged)


def test_dates_move_by_element_name_and_text_stays_as_written():
    resource = {"resourceType": "Observation", "effectiveDateTime": "2026-11-19", "issued": "2026-11-19T10:00:00Z",
                "effectivePeriod": {"start": "2026-11-01", "end": "2026-11-02"},
                "note": [{"text": "seen on 2026-11-19"}], "valueString": "2026-11-19", "id": "2026-11-19"}
    moved = shifted(resource, 7)
    assert (moved["effectiveDateTime"], moved["issued"], moved["effectivePeriod"]) == \
        ("2026-11-26", "2026-11-26T10:00:00Z", {"start": "2026-11-08", "end": "2026-11-09"})
    assert (moved["note"], moved["valueString"], moved["id"]) == \
        (resource["note"], resource["valueString"], resource["id"])


def test_only_a_tagged_sample_bundle_is_moved():
    sample = load_json(EXAMPLES / "bakers-cyst.json")
    assert reference_date(sample).isoformat() == MANIFEST["reference_date"]
    untagged = {**sample, "meta": {}}
    assert reference_date(untagged) is None
    assert as_of(untagged, reference_date(sample).replace(year=2030)) is untagged


def test_every_resource_id_is_unique_across_the_samples():
    # All samples can be loaded into one FHIR server (as the CDS Hooks Sandbox needs) without one patient's
    # resources replacing another's.
    seen: dict[tuple[str, str], str] = {}
    for path in sorted(EXAMPLES.glob("*.json")):
        if path.name == "manifest.json":
            continue
        for entry in load_json(path)["entry"]:
            key = (entry["resource"]["resourceType"], entry["resource"]["id"])
            assert key not in seen, f"{key} is in {seen.get(key)} and {path.name}"
            seen[key] = path.name
    assert len(seen) > 400
