"""The hook body parser (orjson, with json.loads behind it) reads what json.loads reads, and nothing more; one
difference: an integer beyond 64 bits becomes a float (orjson's reading), which no FHIR R4 integer (32 bits) is."""

from __future__ import annotations

import json

import pytest

from cds_service.validation import load_json

DOCUMENT = {"hook": "patient-view", "context": {"note": "Schwellung der rechten Wade ≥ 2 cm 😊"}, "n": [1, 2.5, None]}
TEXT = json.dumps(DOCUMENT, ensure_ascii=False)


@pytest.mark.parametrize("encoded", [
    TEXT.encode("utf-8"),
    b"\xef\xbb\xbf" + TEXT.encode("utf-8"),  # a byte order mark, which orjson alone refuses
    TEXT.encode("utf-16-le"), TEXT.encode("utf-16"), TEXT.encode("utf-32"),
    json.dumps(DOCUMENT).encode(),  # \\u escapes, surrogate pairs included
], ids=["utf-8", "utf-8 with BOM", "utf-16-le", "utf-16 with BOM", "utf-32", "ascii escapes"])
def test_every_json_encoding_gives_the_same_document(encoded):
    assert load_json(encoded) == DOCUMENT


@pytest.mark.parametrize("encoded", [
    b'{"a": "\xed\xa0\x80"}',  # a UTF-8-encoded surrogate is not Unicode
    b'{"a": "\xff"}',
    b'{"a": 1} trailing',
    b"",
])
def test_what_is_not_json_is_a_value_error(encoded):
    with pytest.raises(ValueError):
        load_json(encoded)


def test_a_lone_surrogate_escape_is_read_as_json_loads_reads_it():
    # Refused later, by the check that names the field (test_feedback); not a parse error without a location.
    assert load_json(b'{"comment": "wait \\ud800 please"}') == {"comment": "wait \ud800 please"}


def test_an_integer_beyond_64_bits_becomes_a_float():
    assert load_json(b'{"i": 18446744073709551616}') == {"i": 1.8446744073709552e19}


def test_integers_and_decimals_keep_their_values():
    assert load_json(b'{"i": 9007199254740993, "d": 70.25, "neg": -0.0}') == {"i": 9007199254740993, "d": 70.25,
                                                                                 "neg": -0.0}
