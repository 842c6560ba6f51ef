"""The project's paging FHIR server (tests/paging_fhir_server.py): what the long-chart tests rely on it to do."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
LOCAL = "http://example.org/fhir/CodeSystem/pkp-finding"


@pytest.fixture(scope="module")
def http():
    with httpx.Client(timeout=10) as client:
        yield client


def observation(
    ident: str, patient: str = "p1", code: tuple[str | None, str] = (LOINC, "8310-5"), **extra: Any
) -> dict[str, Any]:
    system, value = code
    return {
        "resourceType": "Observation",
        "id": ident,
        "status": "final",
        "subject": {"reference": f"Patient/{patient}"},
        "code": {"coding": [{"system": system, "code": value} if system else {"code": value}]},
        **extra,
    }


def ids(bundle: dict[str, Any]) -> list[str]:
    return [entry["resource"]["id"] for entry in bundle.get("entry", [])]


def next_url(bundle: dict[str, Any]) -> str | None:
    return next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)


def search(http: httpx.Client, server, path: str, **headers: str) -> dict[str, Any]:
    response = http.get(f"{server.base}/{path}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def all_pages(http: httpx.Client, server, path: str) -> list[dict[str, Any]]:
    pages = [search(http, server, path)]
    while (url := next_url(pages[-1])) is not None:
        assert url.startswith(f"{server.base}/Observation?")  # absolute, on the server's own origin
        pages.append(http.get(url).json())
    return pages


def test_a_search_answers_pages_of_20_whatever_count_asks_with_next_links_until_the_end(http, fresh_paging_fhir_server):
    server = fresh_paging_fhir_server
    server.load([observation(f"o{i:02d}") for i in range(45)] + [observation("other", patient="p2")])
    pages = all_pages(http, server, "Observation?patient=p1&_count=100")
    assert [len(ids(page)) for page in pages] == [20, 20, 5]
    assert {page["total"] for page in pages} == {45}
    assert [i for page in pages for i in ids(page)] == [f"o{i:02d}" for i in range(45)]
    assert all(entry["search"]["mode"] == "match" for entry in pages[0]["entry"])
    assert pages[0]["entry"][0]["fullUrl"] == f"{server.base}/Observation/o00"


def test_a_count_below_20_is_the_page_size(http, fresh_paging_fhir_server):
    fresh_paging_fhir_server.load([observation(f"o{i}") for i in range(5)])
    first = search(http, fresh_paging_fhir_server, "Observation?patient=p1&_count=3")
    assert ids(first) == ["o0", "o1", "o2"] and first["total"] == 5
    assert ids(http.get(next_url(first)).json()) == ["o3", "o4"]


def test_the_patient_is_found_by_bare_id_reference_or_subject(http, fresh_paging_fhir_server):
    fresh_paging_fhir_server.load([observation("mine"), observation("theirs", patient="p2")])
    for query in ("patient=p1", "patient=Patient/p1", "subject=p1", "subject=Patient/p1"):
        assert ids(search(http, fresh_paging_fhir_server, f"Observation?{query}")) == ["mine"], query


CODED = [
    observation("d-dimer", code=(LOINC, "48065-7")),
    observation("calf-swelling", code=(SNOMED, "24028007")),
    observation("calf-warmth", code=(LOCAL, "calf-warmth")),
    observation("no-system", code=(None, "calf-warmth")),
    observation("heart-rate", code=(LOINC, "8867-4")),
]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("48065-7,24028007,calf-warmth", ["d-dimer", "calf-swelling", "calf-warmth", "no-system"]),  # bare codes, any system
        (f"{LOINC}|48065-7", ["d-dimer"]),
        (f"{LOINC}|", ["d-dimer", "heart-rate"]),
        ("|calf-warmth", ["no-system"]),
        (f"{SNOMED}|48065-7", []),
    ],
)
def test_code_is_a_token_with_comma_meaning_or(http, fresh_paging_fhir_server, code, expected):
    fresh_paging_fhir_server.load(CODED)
    response = http.get(f"{fresh_paging_fhir_server.base}/Observation", params={"patient": "p1", "code": code})
    assert ids(response.json()) == expected


def test_category_status_and_id(http, fresh_paging_fhir_server):
    exam = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "exam"}]}
    fresh_paging_fhir_server.load(
        [
            observation("exam-1", category=[exam]),
            observation("vital-1"),
            {"resourceType": "MedicationRequest", "id": "on-it", "status": "active", "subject": {"reference": "Patient/p1"}},
            {"resourceType": "MedicationRequest", "id": "stopped", "status": "stopped", "subject": {"reference": "Patient/p1"}},
        ]
    )
    assert ids(search(http, fresh_paging_fhir_server, "Observation?patient=p1&category=exam")) == ["exam-1"]
    assert ids(search(http, fresh_paging_fhir_server, "MedicationRequest?patient=p1&status=active")) == ["on-it"]
    assert ids(search(http, fresh_paging_fhir_server, "Observation?_id=vital-1,nope")) == ["vital-1"]


DATED = [
    observation("a", effectiveDateTime="2026-10-31T23:59:59Z"),
    observation("b", effectiveDateTime="2026-11-01T00:00:00Z"),
    observation("c", effectiveDateTime="2026-11-01"),  # a whole day
    observation("d", effectiveDateTime="2026-11-01T01:00:00+02:00"),  # 2026-10-31T23:00Z
    observation("e", effectiveDateTime="2026-11-20T10:00:00"),  # zone-less: UTC
    observation("f", effectivePeriod={"start": "2026-10-20", "end": "2026-11-02"}),
    observation("g", issued="2026-11-25T08:00:00Z"),  # no effective[x]: issued is its date
    observation("h"),  # no date at all
]


@pytest.mark.parametrize(
    ("dates", "expected"),
    [
        (["ge2026-11-01"], ["b", "c", "e", "f", "g"]),
        (["gt2026-11-01"], ["e", "f", "g"]),
        (["lt2026-11-01"], ["a", "d", "f"]),
        (["le2026-10-31"], ["a", "d", "f"]),
        (["eq2026-11-01"], ["b", "c"]),
        (["2026-11-01"], ["b", "c"]),
        (["ge2026-11-20T09:00:00Z"], ["e", "g"]),
        (["ge2026-11-01", "lt2026-11-20"], ["b", "c", "f"]),  # repeated = AND
    ],
)
def test_date_prefixes_compare_instants_and_whole_days(http, fresh_paging_fhir_server, dates, expected):
    fresh_paging_fhir_server.load(DATED)
    params = [("patient", "p1"), *(("date", value) for value in dates)]
    assert ids(http.get(f"{fresh_paging_fhir_server.base}/Observation", params=params).json()) == expected


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("-date", ["g", "e", "b", "c", "a", "d", "f", "h"]),  # b and c start at the same instant: load order
        ("date", ["f", "d", "a", "b", "c", "e", "g", "h"]),  # no date: last either way
    ],
)
def test_sort_by_date_puts_undated_resources_last(http, fresh_paging_fhir_server, sort, expected):
    fresh_paging_fhir_server.load(DATED)
    assert ids(search(http, fresh_paging_fhir_server, f"Observation?patient=p1&_sort={sort}")) == expected


def medication(ident: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": ident,
        "status": "active",
        "subject": {"reference": "Patient/p1"},
        **extra,
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("_sort=-authoredon", ["m1", "m4", "m2", "m3"]),
        ("_sort=authoredon", ["m2", "m4", "m1", "m3"]),
        ("authoredon=ge2026-06-01", ["m1", "m4"]),
    ],
)
def test_authoredon_sorts_and_filters_medication_requests(http, fresh_paging_fhir_server, query, expected):
    fresh_paging_fhir_server.load(
        [
            medication("m1", authoredOn="2026-11-10"),
            medication("m2", authoredOn="2026-01-10"),
            medication("m3"),
            medication("m4", authoredOn="2026-06-01T10:00:00+01:00"),
        ]
    )
    assert ids(search(http, fresh_paging_fhir_server, f"MedicationRequest?patient=p1&{query}")) == expected


def of_p1(resource_type: str, ident: str, **dates: Any) -> dict[str, Any]:
    return {"resourceType": resource_type, "id": ident, "subject": {"reference": "Patient/p1"}, **dates}


@pytest.mark.parametrize(
    ("resource_type", "resources", "expected"),
    [
        (
            "Encounter",
            [
                of_p1("Encounter", "visit-new", period={"start": "2026-11-10T09:00:00Z", "end": "2026-11-10T10:00:00Z"}),
                of_p1("Encounter", "visit-old", period={"start": "2026-03-01", "end": "2026-03-02"}),
            ],
            ["visit-new"],
        ),
        (
            "Procedure",
            [
                of_p1("Procedure", "cast-new", performedPeriod={"start": "2026-09-01"}),
                of_p1("Procedure", "xray-old", performedDateTime="2025-01-01"),
            ],
            ["cast-new"],
        ),
        (
            "Condition",
            [
                of_p1("Condition", "onset-new", onsetDateTime="2026-11-01"),
                of_p1("Condition", "recorded-new", recordedDate="2026-07-01"),
                # The onset decides, not when it was recorded (G-11).
                of_p1("Condition", "onset-old", onsetDateTime="2020-05-01", recordedDate="2026-11-01"),
            ],
            ["onset-new", "recorded-new"],
        ),
        (
            "DiagnosticReport",
            [
                of_p1("DiagnosticReport", "mri-new", effectiveDateTime="2026-10-01"),
                of_p1("DiagnosticReport", "mri-old", effectiveDateTime="2026-01-01"),
            ],
            ["mri-new"],
        ),
    ],
)
def test_date_searches_each_types_clinical_date(http, fresh_paging_fhir_server, resource_type, resources, expected):
    fresh_paging_fhir_server.load(resources)
    assert ids(search(http, fresh_paging_fhir_server, f"{resource_type}?patient=p1&date=ge2026-06-01")) == expected


def test_a_sandbox_form_post_search_answers_as_the_get_search(http, fresh_paging_fhir_server):
    server = fresh_paging_fhir_server
    server.load(
        [observation(f"o{i:02d}", code=(LOINC, "39156-5"), effectiveDateTime=f"2026-11-{1 + i:02d}") for i in range(25)]
    )
    query = "patient=p1&code=39156-5,24028007&_sort=-date&_count=100"
    got = search(http, server, f"Observation?{query}")
    posted = http.post(
        f"{server.base}/Observation/_search", content=query, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert posted.status_code == 200
    assert posted.json() == got
    assert ids(got)[:2] == ["o24", "o23"] and got["total"] == 25
    assert ids(http.get(next_url(posted.json())).json()) == ["o04", "o03", "o02", "o01", "o00"]  # next page: a GET


def test_a_post_search_joins_the_url_parameters_with_the_bodys(http, fresh_paging_fhir_server):
    fresh_paging_fhir_server.load(
        [observation("old", effectiveDateTime="2026-01-01"), observation("new", effectiveDateTime="2026-11-01")]
    )
    response = http.post(f"{fresh_paging_fhir_server.base}/Observation/_search?_sort=-date", data={"patient": "p1"})
    assert ids(response.json()) == ["new", "old"]


def test_a_post_search_with_a_json_body_is_refused(http, fresh_paging_fhir_server):
    response = http.post(f"{fresh_paging_fhir_server.base}/Observation/_search", json={"patient": "p1"})
    assert response.status_code == 415


def test_reading_a_patient_and_an_unknown_one(http, fresh_paging_fhir_server):
    fresh_paging_fhir_server.load([{"resourceType": "Patient", "id": "p1", "gender": "female"}])
    assert http.get(f"{fresh_paging_fhir_server.base}/Patient/p1").json()["gender"] == "female"
    unknown = http.get(f"{fresh_paging_fhir_server.base}/Patient/nobody")
    assert unknown.status_code == 404
    assert unknown.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(
    "query", ["Observation?authoredon=ge2026-01-01", "Observation?code:text=calf", "Observation?date=yesterday"]
)
def test_a_search_the_server_does_not_understand_is_a_400_not_a_silent_empty_list(http, fresh_paging_fhir_server, query):
    response = http.get(f"{fresh_paging_fhir_server.base}/{query}")
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"


def test_a_required_token_is_checked_on_every_page(http, fresh_paging_fhir_server):
    server = fresh_paging_fhir_server
    server.load([observation(f"o{i}") for i in range(25)])
    server.required_token = "secret"
    assert http.get(f"{server.base}/Observation?patient=p1").status_code == 401
    wrong = http.get(f"{server.base}/Observation?patient=p1", headers={"Authorization": "Bearer other"})
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
    first = search(http, server, "Observation?patient=p1", Authorization="Bearer secret")
    assert http.get(next_url(first)).status_code == 401
    assert len(ids(http.get(next_url(first), headers={"Authorization": "Bearer secret"}).json())) == 5


def test_cors_preflight_and_allow_origin_on_answers_even_errors(http, fresh_paging_fhir_server):
    server = fresh_paging_fhir_server
    server.required_token = "secret"  # a browser's preflight carries no token
    preflight = http.options(
        f"{server.base}/Observation/_search",
        headers={"Origin": "https://sandbox.cds-hooks.org", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert preflight.headers["Access-Control-Allow-Methods"] == "GET, POST, OPTIONS"
    assert preflight.headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type"
    refused = http.get(f"{server.base}/Patient/p1")
    assert refused.status_code == 401 and refused.headers["Access-Control-Allow-Origin"] == "*"


def test_a_type_switched_to_fail_answers_503_and_the_others_still_answer(http, fresh_paging_fhir_server):
    server = fresh_paging_fhir_server
    server.load([observation("o1")])
    server.fail("Encounter")
    assert http.get(f"{server.base}/Encounter?patient=p1").status_code == 503
    assert http.post(f"{server.base}/Encounter/_search", data={"patient": "p1"}).status_code == 503
    assert ids(search(http, server, "Observation?patient=p1")) == ["o1"]


def test_requests_are_counted_per_path_and_reset_forgets_everything(http, fresh_paging_fhir_server):
    server = fresh_paging_fhir_server
    server.load([observation(f"o{i}") for i in range(21)])
    all_pages(http, server, "Observation?patient=p1")
    http.get(f"{server.base}/Patient/p1")
    assert server.served() == {"/Observation": 2, "/Patient/p1": 1}
    server.required_token = "secret"
    server.fail("Observation")
    server.reset()
    assert search(http, server, "Observation?patient=p1")["total"] == 0  # no token, no failure, no data
    assert server.served() == {"/Observation": 1}


def test_loading_a_resource_again_replaces_it_also_in_the_patient_index(http, fresh_paging_fhir_server):
    server = fresh_paging_fhir_server
    server.load([observation("moved")])
    server.load([observation("moved", patient="p2")])
    assert search(http, server, "Observation?patient=p1")["total"] == 0
    assert ids(search(http, server, "Observation?patient=p2")) == ["moved"]


def test_a_code_search_in_10000_observations_of_one_patient_is_fast(http, fresh_paging_fhir_server):
    # Medplum's router takes ~7 s for this; the long-chart tests need it well within the service's 2 s deadline.
    server = fresh_paging_fhir_server
    chart = [
        observation(f"hr-{i}", code=(LOINC, "8867-4"), effectiveDateTime=f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}T08:00:00Z")
        for i in range(9_990)
    ]
    chart += [observation(f"dimer-{i}", code=(LOINC, "48065-7"), effectiveDateTime=f"2026-11-{10 + i}") for i in range(10)]
    server.load(chart)
    http.get(f"{server.base}/Observation?patient=p1&_count=1")  # connection set up outside the timing
    started = time.perf_counter()
    coded = http.get(f"{server.base}/Observation", params={"patient": "p1", "code": "48065-7,24028007", "_count": "100"})
    newest = http.get(f"{server.base}/Observation", params={"patient": "p1", "_sort": "-date", "_count": "100"})
    elapsed = time.perf_counter() - started
    assert coded.json()["total"] == 10 and ids(coded.json())[0] == "dimer-0"
    assert ids(newest.json())[0] == "dimer-9"  # 2026-11-19, the newest of the chart
    assert elapsed < 1.0, f"two searches took {elapsed:.2f} s"
