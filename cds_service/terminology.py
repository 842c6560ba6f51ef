"""Code and text matching against the value sets in ``cards/valuesets.json``.

No terminology server is reachable, so there is no subsumption: SNOMED and LOINC match by explicit
code lists, ICD-10-CM by prefix (dots ignored). Text is read as rules.md G-10 says: words matched
whole, per clause, a negation cue negating every finding after it in its clause. Matching costs time
linear in the text: every pattern is scanned once over the whole text, and clause boundaries and
negation cues are found once per text.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

from .errors import KneeCdsError

SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
CPT = "http://www.ama-assn.org/go/cpt"
PKP_FINDING = "http://example.org/fhir/CodeSystem/pkp-finding"

# Knee and leg imaging: modality -> the value set of its codes (one list for the queries and the facts).
IMAGING_MODALITIES = (("xray", "knee-xray"), ("mri", "knee-mri"), ("us-knee", "knee-us"),
                      ("venous-duplex", "venous-duplex"))

TEXT_CAP = 10_000  # G-10: each text element is read up to its first 10,000 characters
# Characters of text not seen before that one hook call may match: ~1 s of CPU on the most hostile text, 30 times
# what a 5,000-resource Synthea chart needs (most of its text repeats: "Body Mass Index", "Body Weight").
TEXT_BUDGET = 1_000_000
_CACHE_ENTRIES = 20_000
_CACHED_TEXT_LENGTH = 2_000

_NEGATION = re.compile(
    r"\b(?:no|not|non|never|denies|denied|deny|without|negative for|absent|absence of|free of|nil|ruled out)\b", re.I)
# G-10: a clause ends at . ; : a line break, "but" or "however" ...
_CLAUSE_BREAK = re.compile(r"[.;:\n]|\b(?:but|however)\b", re.I)
_HEADING_BREAK = re.compile(r"[.;\n]|\b(?:but|however)\b", re.I)  # a "Calf: hot, swollen" heading stays with its findings
# ... and at a comma followed by an affirmed finding with its own verb or site ("No fever, calf hot and swollen").
_SITE_OR_VERB = re.compile(
    r"\b(?:calf|calves|leg|legs|knee|knees|thigh|thighs|foot|feet|ankle|shin|popliteal|hip|back|"
    r"is|are|was|were|has|have|had|shows?|showed|feels?|felt|appears?|noted|reports?|complains?|presents?)\b", re.I)
_COMMA_OR_BREAK = re.compile(r",|[.;:\n]|\b(?:but|however)\b", re.I)


def _icd_key(code: str) -> str:
    return code.replace(".", "").upper()


# The only characters outside ASCII that a case-insensitive pattern matches with an ASCII letter (checked
# against every code point by a test): folded before the literal pre-check, so it never skips a real match.
_ASCII_FOLD = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"})
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyz0123456789 '-")
_QUANTIFIERS = frozenset("?*+{")


def _class_end(source: str, start: int) -> int:
    """Index just after the character class opening at `start` ("[^]a-z\\]]" included)."""
    i = start + 1
    if i < len(source) and source[i] == "^":
        i += 1
    if i < len(source) and source[i] == "]":
        i += 1
    while i < len(source) and source[i] != "]":
        i += 2 if source[i] == "\\" else 1
    return i + 1


def _top_level_alternatives(source: str) -> list[str]:
    parts, depth, start, i = [], 0, 0, 0
    while i < len(source):
        char = source[i]
        if char == "\\":
            i += 2
            continue
        if char == "[":
            i = _class_end(source, i)
            continue
        depth += (char == "(") - (char == ")")
        if char == "|" and depth == 0:
            parts.append(source[start:i])
            start = i + 1
        i += 1
    return [*parts, source[start:]]


def _required_run(source: str) -> str | None:
    """The longest run of plain characters every match of this (alternation-free) pattern contains."""
    runs, run, depth, i = [], "", 0, 0
    while i < len(source):
        char = source[i].lower()
        optional = i + 1 < len(source) and source[i + 1] in _QUANTIFIERS
        if depth == 0 and char in _PLAIN and not optional:
            run += char
        else:
            runs.append(run)
            run = ""
            if char == "[":  # a character class is never part of a run
                i = _class_end(source, i)
                continue
            if char == "{":  # nor are a quantifier's counts
                i = source.find("}", i) + 1 or len(source)
                continue
            if char == "\\":
                i += 1  # nor is an escape (\b, \w, \.)
            depth += (char == "(") - (char == ")")
        i += 1
    longest = max([*runs, run], key=len)
    return longest if len(longest) >= 3 else None


def required_literals(source: str) -> tuple[str, ...] | None:
    """Lower-case strings one of which every match of the pattern contains, or None if none is known.

    Checking them with `in` costs a microsecond per 10,000 characters; the regular expression they guard
    costs hundreds, and most patterns have no chance in most texts.
    """
    literals = [_required_run(a) for a in _top_level_alternatives(source)]
    return None if None in literals else tuple(literals)


def folded_for_literals(text: str) -> str:
    return (text if text.isascii() else text.translate(_ASCII_FOLD)).lower()


class Clauses:
    """Clause boundaries and the first negation cue of each clause of one text."""

    __slots__ = ("starts", "cues")

    def __init__(self, text: str, breaks: re.Pattern[str] = _CLAUSE_BREAK):
        starts = sorted({0, *(m.end() for m in breaks.finditer(text)), *_comma_boundaries(text)})
        cues: list[int | None] = [None] * len(starts)
        for cue in _NEGATION.finditer(text):
            index = bisect_right(starts, cue.start()) - 1
            if cues[index] is None:
                cues[index] = cue.start()
        self.starts = starts
        self.cues = cues

    def clause_of(self, position: int) -> int:
        return bisect_right(self.starts, position) - 1

    def affirmed_at(self, position: int) -> bool:
        """A finding starting here is affirmed unless a cue starts earlier in its clause."""
        cue = self.cues[self.clause_of(position)]
        return cue is None or position <= cue

    def affirmed(self, pattern: re.Pattern[str], text: str) -> bool:
        return any(self.affirmed_at(m.start()) for m in pattern.finditer(text))

    def affirmed_clauses(self, pattern: re.Pattern[str], text: str) -> set[int]:
        return {self.clause_of(m.start()) for m in pattern.finditer(text) if self.affirmed_at(m.start())}


def _comma_boundaries(text: str) -> list[int]:
    """Commas after which a new clause starts: the next segment names its own site or verb."""
    out = []
    marks = [(m.start(), m.group() == ",") for m in _COMMA_OR_BREAK.finditer(text)]
    for i, (position, is_comma) in enumerate(marks):
        if not is_comma:
            continue
        end = marks[i + 1][0] if i + 1 < len(marks) else len(text)
        if _SITE_OR_VERB.search(text, position + 1, end):
            out.append(position + 1)
    return out


def affirmed(text: str, pattern: re.Pattern[str]) -> bool:
    """True if the pattern occurs in the text at least once, not negated in its clause (G-10)."""
    return bool(text) and Clauses(text[:TEXT_CAP]).affirmed(pattern, text[:TEXT_CAP])


class TextNotRead(KneeCdsError):
    """A hook call has matched its whole text budget: the resource whose text is next is left out, and named."""


class TextBudget:
    """What is left of one hook call's TEXT_BUDGET (issue: no call may run much past its deadline)."""

    def __init__(self, characters: int = TEXT_BUDGET):
        self.total = self.left = characters

    def spend(self, characters: int) -> None:
        if characters > self.left:
            raise TextNotRead(f"its text was not read: this call's {self.total:,}-character text budget was spent")
        self.left -= characters


@dataclass(frozen=True)
class TextPattern:
    """One text pattern of a value set, and the strings one of which every text it matches contains."""

    regex: re.Pattern[str]
    literals: tuple[str, ...] | None  # None: no such string is known, always run the regex

    @classmethod
    def starting_a_word(cls, source: str) -> TextPattern:
        return cls(re.compile(rf"\b(?:{source})", re.I), required_literals(source))

    @classmethod
    def whole_words(cls, alternatives: str) -> TextPattern:
        return cls(re.compile(rf"\b(?:{alternatives})\b", re.I), required_literals(alternatives))

    def may_occur_in(self, folded: str) -> bool:
        """False only if the pattern cannot match the text `folded` came from (`folded_for_literals`)."""
        return self.literals is None or any(literal in folded for literal in self.literals)


@dataclass(frozen=True)
class ClauseRule:
    """A finding written as words that must all stand, affirmed, in one clause ("R calf hot" = calf + hot)."""

    groups: tuple[TextPattern, ...]
    exclude: re.Pattern[str] | None  # e.g. a treatment: "warm compress to the leg" is not calf warmth

    @classmethod
    def from_json(cls, spec: dict[str, Any]) -> ClauseRule:
        exclude = TextPattern.whole_words(spec["exclude"]).regex if spec.get("exclude") else None
        return cls(tuple(TextPattern.whole_words(g) for g in spec["all"]), exclude)

    def found(self, text: str, clauses: Clauses) -> bool:
        common: set[int] | None = None
        for group in self.groups:
            hits = clauses.affirmed_clauses(group.regex, text)
            common = hits if common is None else common & hits
            if not common:
                return False
        if self.exclude is None:
            return True
        excluded = {clauses.clause_of(m.start()) for m in self.exclude.finditer(text)}
        return bool(common - excluded)


@dataclass(frozen=True)
class ValueSet:
    name: str
    codes: dict[str, frozenset[str]]
    prefixes: dict[str, tuple[str, ...]]
    ranges: dict[str, tuple[tuple[str, str], ...]]
    excluded: tuple[str, ...]  # ICD-10-CM prefixes carved out of the includes
    text_patterns: tuple[TextPattern, ...]
    clause_rules: tuple[ClauseRule, ...] = ()
    latest_only: bool = False  # G-07: only the newest resource of this concept is read
    window_days: int | None = None  # only resources dated within this many days are read (the rules' look-back)

    @classmethod
    def from_json(cls, name: str, spec: dict[str, Any]) -> ValueSet:
        codes: dict[str, set[str]] = {}
        prefixes: dict[str, list[str]] = {}
        ranges: dict[str, list[tuple[str, str]]] = {}
        for include in spec["include"]:
            system = include["system"]
            norm = _icd_key if system == ICD10CM else (lambda c: c)
            codes.setdefault(system, set()).update(norm(c) for c in include.get("codes", []))
            prefixes.setdefault(system, []).extend(norm(p) for p in include.get("prefixes", []))
            ranges.setdefault(system, []).extend((norm(lo), norm(hi)) for lo, hi in include.get("ranges", []))
        return cls(
            name,
            {k: frozenset(v) for k, v in codes.items()},
            {k: tuple(v) for k, v in prefixes.items()},
            {k: tuple(v) for k, v in ranges.items()},
            tuple(_icd_key(p) for p in spec.get("exclude_prefixes", [])),
            tuple(TextPattern.starting_a_word(p) for p in spec.get("text", [])),
            tuple(ClauseRule.from_json(c) for c in spec.get("clause", [])),
            bool(spec.get("latest_only", False)),
            spec.get("window_days"),
        )

    @property
    def has_icd(self) -> bool:
        return ICD10CM in self.codes

    @property
    def reads_text(self) -> bool:
        return bool(self.text_patterns or self.clause_rules)

    def has_code(self, system: str | None, code: str | None) -> bool:
        if not system or not code:
            return False
        key = _icd_key(code) if system == ICD10CM else code
        if system == ICD10CM and any(key.startswith(p) for p in self.excluded):
            return False
        if key in self.codes.get(system, ()):
            return True
        if any(key.startswith(p) for p in self.prefixes.get(system, ())):
            return True
        return any(_in_range(system, key, lo, hi) for lo, hi in self.ranges.get(system, ()))

    def explicit_codes(self) -> frozenset[str]:
        """Codes listed one by one (not prefixes or ranges): what a code-filtered FHIR search can ask for."""
        return frozenset(c for system, codes in self.codes.items() if system != ICD10CM for c in codes)


def _in_range(system: str, key: str, low: str, high: str) -> bool:
    if system == ICD10CM:
        # Compare ICD-10-CM categories as text: "C4A" and "C7A" sort inside C00-C96, as they belong.
        return low <= key[:3] <= high
    if key.isdigit() and low.isdigit() and high.isdigit():
        return int(low) <= int(key) <= int(high)
    return False


class Terminology:
    """Every value set, with the per-code and per-text lookups the chart index makes for each resource.

    Both lookups are pure functions of the knowledge, so their results are kept (bounded): charts
    repeat the same codes and phrases ("Body Mass Index") across resources and calls.
    """

    def __init__(self, value_sets: dict[str, ValueSet]):
        self.value_sets = value_sets
        self.icd_value_sets = frozenset(n for n, vs in value_sets.items() if vs.has_icd)
        self.latest_only = frozenset(n for n, vs in value_sets.items() if vs.latest_only)
        self.windows = {n: vs.window_days for n, vs in value_sets.items() if vs.window_days is not None}
        readers = [vs for vs in value_sets.values() if vs.reads_text]
        self._patterns: dict[str, tuple[TextPattern, list[str]]] = {}
        for vs in readers:
            for pattern in vs.text_patterns:
                self._patterns.setdefault(pattern.regex.pattern, (pattern, []))[1].append(vs.name)
        self._clause_rules = [(rule, vs.name) for vs in readers for rule in vs.clause_rules]
        # Plain dicts, emptied when full: a lookup runs for every resource of every call, and a dict lookup
        # costs a sixth of an lru_cache call.
        self._by_code: dict[tuple[str, str], frozenset[str]] = {}
        self._by_text: dict[str, frozenset[str]] = {}

    def code_concepts(self, system: str, code: str) -> frozenset[str]:
        """Value sets a code belongs to."""
        key = (system, code)
        found = self._by_code.get(key)
        if found is None:
            if len(self._by_code) >= _CACHE_ENTRIES:
                self._by_code.clear()
            found = self._by_code[key] = frozenset(
                name for name, vs in self.value_sets.items() if vs.has_code(system, code))
        return found

    def text_concepts(self, text: str, budget: TextBudget | None = None) -> frozenset[str]:
        """Value sets whose text patterns or clause rules the text affirms (G-10); text seen before costs no budget."""
        found = self._by_text.get(text)
        if found is None:
            if budget is not None:
                budget.spend(len(text))
            found = self._text_concepts(text)
            if len(text) <= _CACHED_TEXT_LENGTH:  # long text is rarely seen twice and would fill the cache
                if len(self._by_text) >= _CACHE_ENTRIES:
                    self._by_text.clear()
                self._by_text[text] = found
        return found

    def _text_concepts(self, text: str) -> frozenset[str]:
        folded = folded_for_literals(text)
        patterns = [(p.regex, names) for p, names in self._patterns.values() if p.may_occur_in(folded)]
        rules = [(rule, name) for rule, name in self._clause_rules if all(g.may_occur_in(folded) for g in rule.groups)]
        if not patterns and not rules:  # most texts of a chart: nothing to look for
            return frozenset()
        found: set[str] = set()
        if patterns:
            clauses = Clauses(text)
            for pattern, names in patterns:
                if not set(names) <= found and clauses.affirmed(pattern, text):
                    found.update(names)
        if rules:
            headed = Clauses(text, _HEADING_BREAK)
            for rule, name in rules:
                if name not in found and rule.found(text, headed):
                    found.add(name)
        return frozenset(found)

    def explicit_codes(self, names: tuple[str, ...] | frozenset[str]) -> tuple[str, ...]:
        return tuple(sorted({c for n in names for c in self.value_sets[n].explicit_codes()}))


def load_value_sets(spec: dict[str, Any]) -> dict[str, ValueSet]:
    return {name: ValueSet.from_json(name, body) for name, body in spec.items()}
