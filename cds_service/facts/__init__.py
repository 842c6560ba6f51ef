"""Facts step: a typed, immutable summary of the patient, each fact carrying what proved it.

The data rules of rules.md §0 live here (G-01 condition status, G-02 history, G-03 windows from today, G-05
posterior localisation, G-06 laterality, G-07 latest observation and BMI, G-08 prior imaging, G-09 leg signs), so
the rules never look at FHIR. One module per domain; ``build_facts`` assembles them.
"""

from __future__ import annotations

from datetime import datetime

from ..chart import ChartIndex
from .conditions import CURRENT_CONCEPTS, HISTORY_CONCEPTS, condition_concepts, exam_findings, knee_pain_facts, patient_age
from .dvt import anticoagulants, d_dimer_results, known_recent_dvt, leg_sign_facts
from .imaging import draft_orders, fever_evidence, imaging_on_record, injury_mechanism, latest_pain_score, prior_knee_surgery
from .record import Record
from .risk import pregnancy_facts, risk_factor_facts
from .types import (
    DDimer,
    DraftOrder,
    Evidence,
    ImagingOnRecord,
    KneePain,
    PainScore,
    PatientFacts,
    RiskFactor,
    WellsItem,
)
from .wells import wells_item_facts

__all__ = ["DDimer", "DraftOrder", "Evidence", "ImagingOnRecord", "KneePain", "PainScore", "PatientFacts",
           "REQUIRED_VALUE_SETS", "RiskFactor", "WellsItem", "build_facts"]

REQUIRED_VALUE_SETS = tuple(sorted(set(CURRENT_CONCEPTS) | set(HISTORY_CONCEPTS) | {
    "knee-pain", "posterior-knee-diagnosis", "calf-leg-signs", "ruptured-bakers-cyst", "immobilisation-procedure",
    "major-surgery", "minor-procedure", "anaesthesia", "d-dimer", "d-dimer-order", "knee-xray", "knee-mri", "knee-us",
    "venous-duplex", "pain-score", "body-temperature", "bmi", "body-weight", "body-height", "pregnancy-status",
    "internal-derangement-locking", "thrombophlebitis-unspecified", "calf-warmth", "calf-circumference",
    "exam-findings-local"}))


def build_facts(index: ChartIndex, now: datetime) -> PatientFacts:
    rec = Record(index, now)
    age = patient_age(rec)
    current, history = condition_concepts(rec)
    findings = exam_findings(rec)
    knee_pain, posterior, onset, subsites, posterior_swelling = knee_pain_facts(rec, findings)
    pregnant, postpartum, postpartum_late = pregnancy_facts(rec)
    drafts = draft_orders(rec)
    leg_signs, warmth, swelling = leg_sign_facts(rec, posterior, knee_pain, drafts, bool(pregnant))
    imaging = imaging_on_record(rec)
    d_dimers = d_dimer_results(rec)
    wells = wells_item_facts(rec, current, history, findings)
    anticoagulation, for_dvt = anticoagulants(rec, current)
    recent_dvt = known_recent_dvt(rec, history, anticoagulation, for_dvt, leg_signs)
    risk = risk_factor_facts(rec, current, history, findings, pregnant, postpartum, postpartum_late, age)
    return PatientFacts(
        today=rec.today,
        now=rec.now,
        age=age,
        knee_pain=tuple(knee_pain),
        posterior_knee_pain=tuple(posterior),
        pain_onset=onset,
        subsites=frozenset(subsites),
        posterior_swelling=posterior_swelling,
        leg_signs=tuple(leg_signs),
        calf_warmth=tuple(warmth),
        swelling_or_tenderness=tuple(swelling),
        wells_items=tuple(wells),
        pregnant=tuple(pregnant),
        postpartum=tuple(postpartum),
        postpartum_late=tuple(postpartum_late),
        risk_factors=tuple(risk),
        recent_dvt=tuple(recent_dvt),
        anticoagulation=tuple(anticoagulation),
        d_dimers=tuple(d_dimers),
        conditions=current,
        findings=findings,
        injury_mechanism=injury_mechanism(rec),
        pain_score=latest_pain_score(rec),
        fever=tuple(fever_evidence(rec, current)),
        prior_knee_surgery=tuple(prior_knee_surgery(rec, current)),
        imaging=tuple(imaging),
        draft_orders=drafts,
    )
