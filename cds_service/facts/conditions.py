"""Conditions (rules.md G-01, G-02), examination findings, and knee pain with where it sits (G-05)."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from ..fhir_read import (
    codings,
    condition_is_current,
    condition_is_history,
    condition_is_suspected,
    finding_code,
    observation_positive,
)
from ..terminology import SNOMED, affirmed
from .record import Record
from .types import Evidence, KneePain

_POSTERIOR = re.compile(r"\b(popliteal|posterior(?! tibial)|back of (the )?(right |left )?knee|"
                        r"behind (the )?(right |left )?knee)\b", re.I)
_ANTERIOR = re.compile(r"\b(anterior|patell\w*|front of (the )?(right |left )?knee|kneecap|infrapatellar)\b", re.I)
_POSTERIOR_QUALIFIER = "255551008"
_MEDIAL_QUALIFIER = "255561001"
_LATERAL_QUALIFIER = "49370004"
_SUBSITES = (
    ("medial", re.compile(r"\b(medial|inner|inside)\b", re.I)),
    ("lateral", re.compile(r"\b(lateral|outer|outside)\b", re.I)),
    ("central", re.compile(r"\b(central|middle|popliteal fossa|crease)\b", re.I)),
    ("above", re.compile(r"\babove\b|\bthigh\b", re.I)),
    ("below", re.compile(r"\b(below|into the calf|calf)\b", re.I)),
)
_SWELLING = re.compile(r"\b(swelling|swollen|fullness|lump|mass|bulge)\b", re.I)
_SPRINT_KICK = re.compile(r"\b(sprint\w*|kick\w*|running)\b", re.I)
CURRENT_CONCEPTS = (
    "knee-injury", "ligament-injury", "knee-dislocation", "limb-ischaemia", "compartment-syndrome",
    "septic-arthritis", "knee-effusion", "fever", "knee-giving-way", "internal-derangement-locking", "knee-locking",
    "bakers-cyst", "ruptured-bakers-cyst", "knee-oa", "meniscal-tear", "meniscal-root-tear", "hamstring-strain",
    "calf-strain", "tendon-rupture-suspected", "tendinopathy", "popliteal-aneurysm", "aaa", "sciatica-referred",
    "cellulitis-leg", "back-pain", "explaining-diagnosis", "mechanical-or-red-flag", "knee-prosthesis", "obesity",
    "thrombophilia", "oestrogen", "leg-paralysis", "bedridden", "malignancy", "palliative", "cancer-treatment",
    "anticoagulant",
)
HISTORY_CONCEPTS = ("dvt", "dvt-upper-limb", "history-of-dvt", "pe", "malignancy", "cancer-treatment",
                    "recent-knee-arthroplasty", "postpartum", "pregnancy")


def patient_age(rec: Record) -> int | None:
    birth = rec.index.birth_date if rec.index.patient is not None else None
    if birth is None:
        return None
    return rec.today.year - birth.year - ((rec.today.month, rec.today.day) < (birth.month, birth.day))


def condition_concepts(rec: Record) -> tuple[dict[str, tuple[Evidence, ...]], dict[str, tuple[Evidence, ...]]]:
    """(current conditions by every value set they belong to (G-01), any-status history by HISTORY_CONCEPTS (G-02)).

    Current conditions are kept for every value set, not a fixed list, so that a rule read from a table (a new red
    flag's value set) needs no change here.
    """
    current: dict[str, list[Evidence]] = {}
    history: dict[str, list[Evidence]] = {}
    for entry in rec.conditions():
        condition = entry.resource
        if not condition_is_history(condition):
            continue
        evidence = rec.ev(entry, suspected=condition_is_suspected(condition))
        if condition_is_current(condition):
            for concept in sorted(entry.concepts):
                current.setdefault(concept, []).append(evidence)
        for concept in HISTORY_CONCEPTS:
            if concept in entry.concepts:
                history.setdefault(concept, []).append(evidence)
    return ({k: tuple(v) for k, v in current.items()}, {k: tuple(v) for k, v in history.items()})


def exam_findings(rec: Record) -> dict[str, tuple[Evidence, ...]]:
    out: dict[str, list[Evidence]] = {}
    for entry in rec.live_observations():
        code = finding_code(entry.resource)
        if code is None or not observation_positive(entry.resource):
            continue
        out.setdefault(code, []).append(rec.ev(entry))
    return {k: tuple(v) for k, v in out.items()}


def knee_pain_facts(rec: Record, findings: dict[str, tuple[Evidence, ...]]):
    knee_pain: list[KneePain] = []
    posterior: list[Evidence] = []
    onsets: list[date] = []
    subsites: set[str] = set()
    swelling = False
    for entry in rec.conditions():
        condition = entry.resource
        if not condition_is_current(condition):
            continue
        text = entry.text
        is_knee_pain = "knee-pain" in entry.concepts
        posterior_dx = "posterior-knee-diagnosis" in entry.concepts
        if not (is_knee_pain or posterior_dx):
            continue
        onset = entry.when
        evidence = rec.ev(entry, suspected=condition_is_suspected(condition))
        location = pain_location(rec, condition, text) if is_knee_pain else "posterior"
        sites = {name for name, pattern in _SUBSITES if pattern.search(text)}
        for site in condition.bodySite or []:
            codes = {c.code for c in codings(site) if c.system == SNOMED}
            if _MEDIAL_QUALIFIER in codes:
                sites.add("medial")
            if _LATERAL_QUALIFIER in codes:
                sites.add("lateral")
        if _SPRINT_KICK.search(text):
            sites.add("sprint")
        if is_knee_pain:
            knee_pain.append(KneePain(evidence, location, frozenset(sites)))
        if location == "posterior" or posterior_dx:
            posterior.append(evidence)
            subsites |= sites
            swelling = swelling or bool(_SWELLING.search(text))
            if onset is not None:
                onsets.append(onset)
    swelling = swelling or bool(findings.get("pulsatile-popliteal-mass"))
    return knee_pain, posterior, (min(onsets) if onsets else None), subsites, swelling


def pain_location(rec: Record, condition: Any, text: str) -> str:
    for site in condition.bodySite or []:
        if any(c.system == SNOMED and c.code == _POSTERIOR_QUALIFIER for c in codings(site)):
            return "posterior"
    if affirmed(text, _POSTERIOR):
        return "posterior"
    if _ANTERIOR.search(text):
        return "anterior"
    return "unknown"
