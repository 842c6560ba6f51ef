"""The literal pre-check before each text pattern (what keeps text matching fast) never hides a match: a pattern
is skipped only when a string every one of its matches contains is absent from the text."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cds_service.knowledge import load_knowledge
from cds_service.terminology import TextPattern, folded_for_literals, required_literals


@pytest.fixture(scope="module")
def patterns() -> list[TextPattern]:
    terms = load_knowledge().terminology
    out = [p for vs in terms.value_sets.values() for p in vs.text_patterns]
    out += [g for vs in terms.value_sets.values() for rule in vs.clause_rules for g in rule.groups]
    return out


@pytest.mark.parametrize(("source", "literals"), [
    ("knee pain", ("knee pain",)),
    ("pain (in|of) (the )?knee", ("pain ",)),  # groups and what they quantify are never required
    ("baker'?s cyst", ("s cyst",)),  # an optional character splits the run
    ("o?edema", ("edema",)),
    (r"\w+ectomy", ("ectomy",)),
    (r"\bDVT\b", ("dvt",)),  # lower case: compared with the lower-cased text
    ("calf|calves|lower leg", ("calf", "calves", "lower leg")),  # top-level alternatives: any one of them
    ("(acl|pcl) tear|tennis leg", (" tear", "tennis leg")),
    ("(acl|pcl) x|tennis leg", None),  # one alternative has no run of 3: always run the pattern
    (r"\bOA\b", None),
    ("gr[ae]y cat", ("y cat",)),  # a character class is never part of a run
    ("a[|]bcd|efg", ("bcd", "efg")),  # nor is a bar inside one an alternative
    (r"x\.yzw", ("yzw",)),
    ("leuka{1,2}emia", ("leuk",)),
    ("xa{100}b", None),  # a quantifier's count is not text
])
def test_the_strings_a_pattern_requires(source, literals):
    assert required_literals(source) == literals


def test_the_folding_table_holds_every_character_a_pattern_equates_with_an_ascii_letter():
    letter = re.compile("[a-z]", re.I)
    equated = {chr(cp) for cp in range(0x80, 0x110000) if not 0xD800 <= cp <= 0xDFFF and letter.fullmatch(chr(cp))}
    assert {c: folded_for_literals(c) for c in equated} == {"\u0130": "i", "\u0131": "i", "\u017f": "s",
                                                             "\u212a": "k"}


def test_every_value_set_pattern_is_guarded_by_a_literal_except_the_short_ones(patterns):
    unguarded = sorted(p.regex.pattern for p in patterns if p.literals is None)
    assert unguarded == [r"\b(?:(acl|pcl|cruciate|collateral) (tear|rupture|injury))",
                         r"\b(?:(calf|gastrocnemius|soleus) (strain|tear|injury))", r"\b(?:\bOA\b)"]


_WORDS = ["knee", "pain", "calf", "hot", "warm", "swollen", "leg", "no", "baker's", "bakers", "cyst", "dvt",
          "o", "edema", "oedema", "gastrectomy", "d-dimer", "ddimer", "bed", "bound", "post", "partum", "\u0130",
          "\u0131", "\u017f", "\u212a", "KNEE", "Pa\u0130n", "\u212anee", "ca\u017ft", "lock", "locked", "of",
          "the", "in", "right", "behind", "back", "estradiol", "ethinyl", "oa", "acl", "tear", "menisc", "meniscal"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_WORDS), min_size=1, max_size=12), st.sampled_from([" ", "", "  ", ", "]))
def test_a_pattern_is_skipped_only_when_it_cannot_match(patterns, words, separator):
    text = separator.join(words)
    folded = folded_for_literals(text)
    for pattern in patterns:
        if pattern.regex.search(text):
            assert pattern.may_occur_in(folded), (pattern.regex.pattern, text)
