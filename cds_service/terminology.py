"""Code matching against the value sets in ``cards/valuesets.json``.

No terminology server is reachable, so there is no subsumption: SNOMED and LOINC match by explicit
code lists, ICD-10-CM by prefix (dots ignored), and ``code.text`` by patterns that understand a
preceding negation ("denies knee pain", "no calf swelling").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
CPT = "http://www.ama-assn.org/go/cpt"
PKP_FINDING = "http://example.org/fhir/CodeSystem/pkp-finding"

# A negation cue earlier in the same clause cancels a text match.
_NEGATION = re.compile(r"\b(no|not|denies|denied|without|negative for|absence of|free of|nil)\b", re.I)
_CLAUSE_BREAK = re.compile(r"[.;,:\n]|\bbut\b", re.I)


def _icd_key(code: str) -> str:
    return code.replace(".", "").upper()


@dataclass(frozen=True)
class ValueSet:
    name: str
    codes: dict[str, frozenset[str]]
    prefixes: dict[str, tuple[str, ...]]
    ranges: dict[str, tuple[tuple[str, str], ...]]
    excluded: tuple[str, ...]  # ICD-10-CM prefixes carved out of the includes
    text_patterns: tuple[re.Pattern[str], ...]

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
        patterns = tuple(re.compile(rf"\b(?:{p})", re.I) for p in spec.get("text", []))
        return cls(
            name,
            {k: frozenset(v) for k, v in codes.items()},
            {k: tuple(v) for k, v in prefixes.items()},
            {k: tuple(v) for k, v in ranges.items()},
            tuple(_icd_key(p) for p in spec.get("exclude_prefixes", [])),
            patterns,
        )

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

    def matching_coding(self, concept: Any) -> Any | None:
        for coding in getattr(concept, "coding", None) or []:
            if self.has_code(coding.system, coding.code):
                return coding
        return None

    def matches_text(self, text: str | None) -> bool:
        return bool(text) and any(affirmed(text, p) for p in self.text_patterns)

    def matches(self, concept: Any) -> bool:
        """Coded match first; ``code.text`` only as a fallback.

        ICD-10-CM is matched by prefix, which covers the whole hierarchy, so an ICD-10-CM code that
        does not match settles the question (T79.A11A is the arm, whatever its text says). SNOMED
        and LOINC are matched by explicit lists without subsumption, so their text still counts.
        """
        if concept is None:
            return False
        if self.matching_coding(concept) is not None:
            return True
        codings = getattr(concept, "coding", None) or []
        if ICD10CM in self.codes and any(c.system == ICD10CM and c.code for c in codings):
            return False
        texts = [getattr(concept, "text", None)]
        texts += [c.display for c in getattr(concept, "coding", None) or []]
        return any(self.matches_text(t) for t in texts)


def _in_range(system: str, key: str, low: str, high: str) -> bool:
    if system == ICD10CM:
        # Compare ICD-10-CM categories as text: "C4A" and "C7A" sort inside C00-C96, as they belong.
        return low <= key[:3] <= high
    if key.isdigit() and low.isdigit() and high.isdigit():
        return int(low) <= int(key) <= int(high)
    return False


def affirmed(text: str, pattern: re.Pattern[str]) -> bool:
    """True if the pattern occurs in the text at least once without a negation before it."""
    for match in pattern.finditer(text):
        clause_start = 0
        for brk in _CLAUSE_BREAK.finditer(text, 0, match.start()):
            clause_start = brk.end()
        if not _NEGATION.search(text, clause_start, match.start()):
            return True
    return False


def load_value_sets(spec: dict[str, Any]) -> dict[str, ValueSet]:
    return {name: ValueSet.from_json(name, body) for name, body in spec.items()}

