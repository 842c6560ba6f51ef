"""Facts step: a typed, immutable summary of the patient, each fact carrying what proved it.

The data rules of rules.md §0 live here (G-01 condition status, G-02 history, G-03 windows from
today, G-05 posterior localisation, G-06 laterality, G-07 latest observation and BMI, G-08 prior
imaging, G-09 leg signs), so the rules never look at raw FHIR. Every fact is a tuple of
``Evidence``: what it is, which resource, when, which side.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from functools import cached_property
from typing import Any

from .fhir_read import (
    Reader,
    body_sites,
    codings,
    concept_label,
    condition_is_current,
    condition_is_history,
    condition_is_suspected,
    condition_onset,
    ddimer_positive,
    finding_code,
    label_of,
    near,
    observation_positive,
    observation_result,
    observation_when,
    procedure_when,
    quantity_in,
    ref_of,
    report_result,
    text_result,
    texts_of,
    to_date,
    value_text,
)
from .knowledge import Knowledge
from .parse import ParsedRecord
from .terminology import SNOMED, ValueSet, affirmed

_DEAD_OBSERVATION = {"entered-in-error", "cancelled"}

_POSTERIOR = re.compile(r"\b(popliteal|posterior(?! tibial)|back of (the )?(right |left )?knee|"
                        r"behind (the )?(right |left )?knee)\b", re.I)
_ANTERIOR = re.compile(r"\b(anterior|patell\w*|front of (the )?(right |left )?knee|kneecap|infrapatellar)\b", re.I)
_POSTERIOR_QUALIFIER = "255551008"
_MEDIAL_QUALIFIER = "255561001"
_LATERAL_QUALIFIER = "49370004"
_LOWER_LIMB = "61685007"
_SUBSITES = (
    ("medial", re.compile(r"\b(medial|inner|inside)\b", re.I)),
    ("lateral", re.compile(r"\b(lateral|outer|outside)\b", re.I)),
    ("central", re.compile(r"\b(central|middle|popliteal fossa|crease)\b", re.I)),
    ("above", re.compile(r"\babove\b|\bthigh\b", re.I)),
    ("below", re.compile(r"\b(below|into the calf|calf)\b", re.I)),
)
_SWELLING = re.compile(r"\b(swelling|swollen|fullness|lump|mass|bulge)\b", re.I)
_SPRINT_KICK = re.compile(r"\b(sprint\w*|kick\w*|running)\b", re.I)
_HOT_CALF = re.compile(r"\b(hot|warm)\b.*\b(calf|leg)\b|\b(calf|leg)\b.*\b(hot|warm)\b", re.I)
_TREATMENT_TEXT = re.compile(r"\b(chemotherap\w*|radiotherap\w*|radiation therapy|immunotherap\w*)\b", re.I)
_DELIVERY_TEXT = re.compile(r"\b(deliver(y|ed)|caesarean|cesarean|childbirth)\b", re.I)
_KNEE_TEXT = re.compile(r"\bknee\b", re.I)
_CALF_CIRCUMFERENCE = re.compile(r"calf circumference", re.I)


LEG_SIGN_DAYS = 28  # rules.md G-09 (a): last 4 weeks (UNRESOLVED design choice)
EXAM_DAYS = 14  # rules.md G-09 (b): last 14 days
WELLS_SURGERY_DAYS = 84  # W-03: 12 weeks (NICE)
IMMOBILISATION_DAYS = 84  # W-02: "recent" = 12 weeks (UNRESOLVED design choice)
BEDRIDDEN_DAYS = 28
CANCER_TREATMENT_DAYS = 183  # W-01: treatment within 6 months
RECENT_DVT_DAYS = 90  # D-08
PREGNANCY_DAYS = 294  # 42 weeks
POSTPARTUM_DAYS = 42  # P-02: 6 weeks
POSTPARTUM_RISK_DAYS = 84  # risk stays raised to ~12 weeks (shown only)
TRAVEL_DAYS = 56  # 8 weeks
ACUTE_INJURY_DAYS = 7  # Ottawa: injury within 7 days


@dataclass(frozen=True)
class Evidence:
    """One piece of patient data behind a fact: what it is, where it is, and when."""

    reference: str
    label: str
    when: date | None
    side: str = "unknown"  # right | left | both | unknown
    value: str | None = None
    suspected: bool = False

    def line(self) -> str:
        when = self.when.isoformat() if self.when else "date not recorded"
        side = f", {self.side}" if self.side in ("right", "left", "both") and self.side not in self.label.lower() else ""
        value = f": {self.value}" if self.value else ""
        suspected = " (suspected)" if self.suspected else ""
        return f"{self.label}{side}{value}{suspected} ({when}; {self.reference})"


@dataclass(frozen=True)
class WellsItem:
    """A positive Wells criterion (rules.md §1) and what proved it."""

    rule: str
    criterion: str
    points: int
    evidence: Evidence
    leg_specific: bool = False  # scored for the symptomatic leg only (G-06)


@dataclass(frozen=True)
class ImagingOnRecord:
    modality: str  # xray | mri | us-knee | venous-duplex
    evidence: Evidence
    result: str  # normal | effusion-only | abnormal | unknown


@dataclass(frozen=True)
class DDimer:
    evidence: Evidence
    at: datetime | date | None
    positive: bool | None


@dataclass(frozen=True)
class DraftOrder:
    reference: str
    modality: str | None  # xray | mri | us-knee | venous-duplex | d-dimer | None
    label: str
    side: str


@dataclass(frozen=True)
class KneePain:
    evidence: Evidence
    location: str  # posterior | anterior | unknown
    subsites: frozenset[str]


@dataclass(frozen=True)
class PatientFacts:
    today: date
    now: datetime
    age: int | None
    knee_pain: tuple[KneePain, ...]
    posterior_knee_pain: tuple[Evidence, ...]  # G-05, incl. posterior diagnoses
    pain_onset: date | None
    subsites: frozenset[str]
    posterior_swelling: bool
    leg_signs: tuple[Evidence, ...]  # G-09
    calf_warmth: tuple[Evidence, ...]
    swelling_or_tenderness: tuple[Evidence, ...]  # for D-01
    wells_items: tuple[WellsItem, ...]
    pregnant: tuple[Evidence, ...]
    postpartum: tuple[Evidence, ...]
    postpartum_late: tuple[Evidence, ...]  # 6-12 weeks: raised risk, shown only
    risk_factors: tuple[tuple[str, str, Evidence], ...]  # (rule id, label, evidence)
    recent_dvt: tuple[Evidence, ...]
    anticoagulation: tuple[Evidence, ...]
    d_dimers: tuple[DDimer, ...]
    conditions: dict[str, tuple[Evidence, ...]]  # current (G-01) by value set name
    findings: dict[str, tuple[Evidence, ...]]  # positive pkp-finding observations by code
    injury_mechanism: str | None
    pain_score: Evidence | None
    fever: tuple[Evidence, ...]
    prior_knee_surgery: tuple[Evidence, ...]
    imaging: tuple[ImagingOnRecord, ...]
    draft_orders: tuple[DraftOrder, ...]
    left_out_types: frozenset[str]

    def has(self, concept: str) -> bool:
        return bool(self.conditions.get(concept))

    def cond(self, concept: str) -> tuple[Evidence, ...]:
        return self.conditions.get(concept, ())

    def finding(self, code: str) -> tuple[Evidence, ...]:
        return self.findings.get(code, ())

    @property
    def painful_side(self) -> str:
        sides = {e.side for e in self.posterior_knee_pain or tuple(k.evidence for k in self.knee_pain)} - {"unknown"}
        if not sides:
            return "unknown"
        return sides.pop() if len(sides) == 1 else "both"

    @property
    def knee_pain_unknown_location(self) -> bool:
        return any(k.location == "unknown" for k in self.knee_pain)

    @property
    def any_knee_pain(self) -> bool:
        return bool(self.knee_pain or self.posterior_knee_pain)

    def weeks_of_pain(self) -> float | None:
        return None if self.pain_onset is None else (self.today - self.pain_onset).days / 7

    def days_since(self, when: date | None) -> int | None:
        return None if when is None else (self.today - when).days


# --- the summary ---------------------------------------------------------------------------------

# Condition concepts read into PatientFacts.conditions (current ones, G-01).
CURRENT_CONCEPTS = (
    "knee-injury", "ligament-injury", "knee-dislocation", "limb-ischaemia", "compartment-syndrome",
    "septic-arthritis", "knee-effusion", "fever", "knee-giving-way", "internal-derangement-locking", "knee-locking",
    "bakers-cyst", "ruptured-bakers-cyst", "knee-oa", "meniscal-tear", "meniscal-root-tear", "hamstring-strain",
    "calf-strain", "tendinopathy", "popliteal-aneurysm", "aaa", "sciatica-referred", "cellulitis-leg", "back-pain",
    "explaining-diagnosis", "mechanical-or-red-flag", "knee-prosthesis", "obesity", "thrombophilia", "oestrogen",
    "leg-paralysis", "bedridden", "malignancy", "palliative", "cancer-treatment", "anticoagulant",
)


HISTORY_CONCEPTS = ("dvt", "dvt-upper-limb", "history-of-dvt", "pe", "malignancy", "cancer-treatment",
                    "recent-knee-arthroplasty", "postpartum", "pregnancy")
# Every value set the facts read; create_app refuses to start if cards/valuesets.json lacks one.
REQUIRED_VALUE_SETS = tuple(sorted(set(CURRENT_CONCEPTS) | set(HISTORY_CONCEPTS) | {
    "knee-pain", "posterior-knee-diagnosis", "calf-leg-signs", "ruptured-bakers-cyst", "immobilisation-procedure",
    "major-surgery", "d-dimer", "d-dimer-order", "knee-xray", "knee-mri", "knee-us", "venous-duplex", "pain-score",
    "body-temperature", "bmi", "body-weight", "body-height", "pregnancy-status", "internal-derangement-locking",
    "thrombophlebitis-unspecified"}))


def build_facts(
    record: ParsedRecord,
    knowledge: Knowledge,
    now: datetime,
    draft_orders: tuple[Any, ...] = (),
) -> PatientFacts:
    return _Builder(record, knowledge, now, draft_orders).build()


class _Builder:
    def __init__(self, record: ParsedRecord, knowledge: Knowledge, now: datetime, drafts: tuple[Any, ...]):
        self.record = record
        self.k = knowledge
        self.vs = knowledge.vs
        self.now = now
        self.today = now.date()
        self.read = Reader(knowledge)
        self.drafts = drafts

    # helpers
    def within(self, when: date | None, days: int, undated: bool = False) -> bool:
        if when is None:
            return undated
        return 0 <= (self.today - when).days <= days

    def ev(self, resource: Any, when: date | None, value: str | None = None, suspected: bool = False) -> Evidence:
        if value is None and resource.__resource_type__ == "Observation" and resource.valueBoolean is None:
            value = value_text(resource)
        return Evidence(ref_of(resource), label_of(resource), when, self.read.side(resource), value, suspected)

    @cached_property
    def _conditions(self) -> tuple[Any, ...]:
        # Future-dated entries are not current data.
        return tuple(c for c in self.record.of("Condition")
                     if (condition_onset(c) or self.today) <= self.today)

    @cached_property
    def _observations(self) -> tuple[Any, ...]:
        return tuple(o for o in self.record.of("Observation")
                     if o.status not in _DEAD_OBSERVATION and (observation_when(o) or self.today) <= self.today)

    def conditions(self) -> Iterable[Any]:
        return self._conditions

    def live_observations(self) -> Iterable[Any]:
        return self._observations

    def build(self) -> PatientFacts:
        age = self._age()
        current, history = self._condition_concepts()
        findings = self._findings()
        knee_pain, posterior, onset, subsites, posterior_swelling = self._knee_pain(findings)
        pregnant, postpartum, postpartum_late = self._pregnancy()
        drafts = self._drafts()
        leg_signs, warmth, swelling = self._leg_signs(posterior, knee_pain, drafts, bool(pregnant))
        imaging = self._imaging()
        d_dimers = self._d_dimers()
        wells = self._wells_items(current, history, findings)
        anticoagulation = self._anticoagulation(current)
        recent_dvt = self._recent_dvt(history, anticoagulation, leg_signs)
        risk = self._risk_factors(current, history, findings, pregnant, postpartum, postpartum_late, age, wells)
        return PatientFacts(
            today=self.today,
            now=self.now,
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
            injury_mechanism=self._mechanism(),
            pain_score=self._pain_score(),
            fever=tuple(self._fever(current)),
            prior_knee_surgery=tuple(self._prior_knee_surgery(current)),
            imaging=tuple(imaging),
            draft_orders=drafts,
            left_out_types=frozenset(self.record.rejected_types()),
        )

    def _age(self) -> int | None:
        patient = self.record.patient
        birth = to_date(getattr(patient, "birthDate", None)) if patient is not None else None
        if birth is None:
            return None
        return self.today.year - birth.year - ((self.today.month, self.today.day) < (birth.month, birth.day))

    def _condition_concepts(self) -> tuple[dict[str, tuple[Evidence, ...]], dict[str, tuple[Evidence, ...]]]:
        current: dict[str, list[Evidence]] = {}
        history: dict[str, list[Evidence]] = {}
        for condition in self.conditions():
            is_current = condition_is_current(condition)
            is_history = condition_is_history(condition)
            if not is_history:
                continue
            evidence = self.ev(condition, condition_onset(condition), suspected=condition_is_suspected(condition))
            for concept in CURRENT_CONCEPTS:
                if is_current and self.vs(concept).matches(condition.code):
                    current.setdefault(concept, []).append(evidence)
            for concept in HISTORY_CONCEPTS:
                if self.vs(concept).matches(condition.code):
                    history.setdefault(concept, []).append(evidence)
                    if is_current:
                        current.setdefault(concept, []).append(evidence)
            # Locking coded as internal derangement counts only with locking words (RF-03).
            if is_current and self.vs("internal-derangement-locking").matches(condition.code) \
                    and any(self.vs("knee-locking").matches_text(t) for t in texts_of(condition)):
                current.setdefault("knee-locking", []).append(evidence)
        return ({k: tuple(v) for k, v in current.items()}, {k: tuple(v) for k, v in history.items()})

    def _findings(self) -> dict[str, tuple[Evidence, ...]]:
        out: dict[str, list[Evidence]] = {}
        for observation in self.live_observations():
            code = finding_code(observation)
            if code is None or not observation_positive(observation):
                continue
            out.setdefault(code, []).append(self.ev(observation, observation_when(observation)))
        return {k: tuple(v) for k, v in out.items()}

    def _knee_pain(self, findings: dict[str, tuple[Evidence, ...]]):
        knee_pain: list[KneePain] = []
        posterior: list[Evidence] = []
        onsets: list[date] = []
        subsites: set[str] = set()
        swelling = False
        for condition in self.conditions():
            if not condition_is_current(condition):
                continue
            text = " ".join(texts_of(condition))
            is_knee_pain = self.vs("knee-pain").matches(condition.code)
            posterior_dx = self.vs("posterior-knee-diagnosis").matches(condition.code)
            if not (is_knee_pain or posterior_dx):
                continue
            onset = condition_onset(condition)
            evidence = self.ev(condition, onset, suspected=condition_is_suspected(condition))
            location = self._location(condition, text) if is_knee_pain else "posterior"
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

    def _location(self, condition: Any, text: str) -> str:
        for site in condition.bodySite or []:
            if any(c.system == SNOMED and c.code == _POSTERIOR_QUALIFIER for c in codings(site)):
                return "posterior"
        if affirmed(text, _POSTERIOR):
            return "posterior"
        if _ANTERIOR.search(text):
            return "anterior"
        return "unknown"

    def _pregnancy(self):
        pregnant: list[Evidence] = []
        postpartum: list[Evidence] = []
        late: list[Evidence] = []
        deliveries: list[tuple[date | None, Evidence]] = []
        for condition in self.conditions():
            if not condition_is_history(condition):
                continue
            onset = condition_onset(condition)
            if self.vs("postpartum").matches(condition.code):
                deliveries.append((onset, self.ev(condition, onset)))
        for procedure in self.record.of("Procedure"):
            if procedure.status == "completed" and any(_DELIVERY_TEXT.search(t) for t in texts_of(procedure)):
                when = procedure_when(procedure)
                deliveries.append((when, self.ev(procedure, when)))
        for when, evidence in deliveries:
            if when is None:
                # An undated postpartum state on the problem list: counted (conservative).
                if "86569001" in evidence.label or "postpartum" in evidence.label.lower():
                    postpartum.append(evidence)
            elif self.within(when, POSTPARTUM_DAYS):
                postpartum.append(evidence)
            elif self.within(when, POSTPARTUM_RISK_DAYS):
                late.append(evidence)
        last_delivery = max((w for w, _ in deliveries if w is not None), default=None)

        status_obs = [o for o in self.live_observations() if self.vs("pregnancy-status").matches(o.code)]
        if status_obs:
            latest = max(status_obs, key=lambda o: observation_when(o) or date.min)
            codes = {c.code for c in codings(latest.valueCodeableConcept)} if latest.valueCodeableConcept else set()
            if "60001007" in codes:  # latest says not pregnant: overrides the problem list
                return [], postpartum, late
            if "77386006" in codes:
                pregnant.append(self.ev(latest, observation_when(latest), "pregnant"))
                return pregnant, postpartum, late
        for condition in self.conditions():
            if not condition_is_current(condition) or not self.vs("pregnancy").matches(condition.code):
                continue
            onset = condition_onset(condition)
            if onset is None or not self.within(onset, PREGNANCY_DAYS):
                continue  # stale problem-list entry
            if last_delivery is not None and last_delivery >= onset:
                continue
            pregnant.append(self.ev(condition, onset))
        return pregnant, postpartum, late

    def _drafts(self) -> tuple[DraftOrder, ...]:
        out = []
        for order in self.drafts:
            modality = self.modality(order.code)
            if modality is None and self.vs("d-dimer-order").matches(order.code):
                modality = "d-dimer"
            out.append(DraftOrder(ref_of(order), modality, label_of(order), self.read.side(order)))
        return tuple(out)

    def modality(self, concept: Any) -> str | None:
        for modality, name in (("xray", "knee-xray"), ("mri", "knee-mri"), ("us-knee", "knee-us"),
                               ("venous-duplex", "venous-duplex")):
            if self.vs(name).matches(concept):
                return modality
        return None

    def _leg_signs(self, posterior, knee_pain, drafts, pregnant: bool):
        """G-09: leg signs / DVT suspected; also the warmth and swelling/tenderness D-01 needs."""
        painful = {e.side for e in posterior} | {k.evidence.side for k in knee_pain}
        painful -= {"unknown"}
        signs: list[Evidence] = []
        swelling: list[Evidence] = []
        warmth: list[Evidence] = []

        def on_painful_side(side: str) -> bool:
            # P-01: in pregnancy a sign of either leg counts (left-leg DVT predominates).
            return pregnant or side in ("unknown", "both") or not painful or side in painful or "both" in painful

        for condition in self.conditions():
            if not condition_is_current(condition):
                continue
            onset = condition_onset(condition)
            evidence = self.ev(condition, onset, suspected=condition_is_suspected(condition))
            if self.vs("calf-leg-signs").matches(condition.code) and self.within(onset, LEG_SIGN_DAYS, undated=True) \
                    and on_painful_side(evidence.side):
                signs.append(evidence)
                swelling.append(evidence)
            if (self.vs("dvt").matches(condition.code) and condition_is_suspected(condition)) or \
                    self.vs("thrombophlebitis-unspecified").matches(condition.code):
                signs.append(evidence)  # (c) clinician suspicion
            if self.vs("ruptured-bakers-cyst").matches(condition.code) and self.within(onset, LEG_SIGN_DAYS, True):
                signs.append(evidence)  # K-08: a ruptured cyst mimics DVT, so the DVT pathway runs
            if any(affirmed(t, _HOT_CALF) for t in texts_of(condition)) \
                    and self.within(onset, EXAM_DAYS, undated=True):
                warmth.append(evidence)
        for observation in self.live_observations():
            when = observation_when(observation)
            code = finding_code(observation)
            evidence = self.ev(observation, when)
            if code in ("deep-vein-tenderness", "entire-leg-swollen", "pitting-oedema-symptomatic-leg",
                        "collateral-superficial-veins", "calf-warmth") and observation_positive(observation) \
                    and self.within(when, EXAM_DAYS, undated=True):
                signs.append(evidence)
                if code == "calf-warmth":
                    warmth.append(evidence)
                else:
                    swelling.append(evidence)
            elif code == "calf-circumference-difference" and self.within(when, EXAM_DAYS, undated=True):
                cm = quantity_in(observation.valueQuantity, "cm")
                if cm is not None and cm >= 3.0:
                    signs.append(evidence)
                    swelling.append(evidence)
            elif code == "wells-dvt-score" and self.within(when, EXAM_DAYS, undated=True):
                signs.append(evidence)  # (c) the clinician scored Wells: DVT is suspected
            elif code is None and self.vs("calf-leg-signs").matches(observation.code) \
                    and observation_positive(observation) and self.within(when, LEG_SIGN_DAYS, undated=True) \
                    and on_painful_side(evidence.side):
                signs.append(evidence)
                swelling.append(evidence)
            if code is None and any(affirmed(t, _HOT_CALF) for t in texts_of(observation)) \
                    and observation_positive(observation) and self.within(when, EXAM_DAYS, undated=True):
                warmth.append(evidence)
                signs.append(evidence)
        for order in drafts:
            if order.modality in ("venous-duplex", "d-dimer"):
                signs.append(Evidence(order.reference, f"Draft order: {order.label}", self.today, order.side))
        return signs, warmth, swelling

    def _wells_items(self, current, history, findings) -> list[WellsItem]:
        items: list[WellsItem] = []

        def add(rule: str, criterion: str, points: int, evidence: Evidence, leg: bool = False) -> None:
            items.append(WellsItem(rule, criterion, points, evidence, leg))

        # W-01 active cancer: active malignancy, treatment within 6 months, or palliative care.
        for evidence in current.get("malignancy", ()):
            add("W-01", "active-cancer", 1, evidence)
        for evidence in history.get("cancer-treatment", ()) + current.get("palliative", ()):
            if evidence.when is None or self.within(evidence.when, CANCER_TREATMENT_DAYS):
                add("W-01", "active-cancer", 1, evidence)
        for procedure in self.record.of("Procedure"):
            when = procedure_when(procedure)
            if procedure.status in ("completed", "in-progress") and \
                    any(_TREATMENT_TEXT.search(t) for t in texts_of(procedure)) and self.within(when, CANCER_TREATMENT_DAYS):
                add("W-01", "active-cancer", 1, self.ev(procedure, when))
        for encounter in self.record.of("Encounter"):
            when = to_date(encounter.period.start) if encounter.period and encounter.period.start else None
            reasons = list(encounter.reasonCode or []) + list(encounter.type or [])
            if encounter.status not in ("entered-in-error", "cancelled", "planned") and \
                    any(self.vs("cancer-treatment").matches(r) for r in reasons) and self.within(when, CANCER_TREATMENT_DAYS):
                label = next((concept_label(r) for r in reasons if concept_label(r)), None)
                add("W-01", "active-cancer", 1, Evidence(ref_of(encounter), label or "Anticancer treatment encounter", when))
        for request in self.record.of("MedicationRequest"):
            when = to_date(request.authoredOn)
            if request.status in ("active", "completed") and self._med_matches(request, self.vs("cancer-treatment")) \
                    and self.within(when, CANCER_TREATMENT_DAYS, undated=request.status == "active"):
                add("W-01", "active-cancer", 1, Evidence(ref_of(request), self._med_label(request), when))
        # W-02 paralysis, paresis or recent plaster immobilisation.
        for evidence in current.get("leg-paralysis", ()):
            add("W-02", "paralysis-or-immobilisation", 1, evidence)
        for procedure in self.record.of("Procedure"):
            when = procedure_when(procedure)
            if procedure.status in ("completed", "in-progress") and \
                    self.vs("immobilisation-procedure").matches(procedure.code) and self.within(when, IMMOBILISATION_DAYS):
                add("W-02", "paralysis-or-immobilisation", 1, self.ev(procedure, when))
        for evidence in findings.get("leg-immobilisation", ()):
            if self.within(evidence.when, IMMOBILISATION_DAYS, undated=True):
                add("W-02", "paralysis-or-immobilisation", 1, evidence)
        # W-03 bedridden >= 3 days or major surgery within 12 weeks.
        for procedure in self.record.of("Procedure"):
            when = procedure_when(procedure)
            if procedure.status != "completed" or self.modality(procedure.code) is not None:
                continue  # imaging is not surgery
            if self.vs("immobilisation-procedure").matches(procedure.code) and \
                    not self.vs("major-surgery").matches_text(label_of(procedure)):
                continue
            if self._is_surgery(procedure) and self.within(when, WELLS_SURGERY_DAYS):
                add("W-03", "bedridden-or-major-surgery", 1, self.ev(procedure, when, f"{(self.today - when).days} days ago"))
        for evidence in history.get("recent-knee-arthroplasty", ()):
            if self.within(evidence.when, WELLS_SURGERY_DAYS):
                add("W-03", "bedridden-or-major-surgery", 1, evidence)
        for evidence in current.get("bedridden", ()):
            if self.within(evidence.when, BEDRIDDEN_DAYS, undated=True):
                add("W-03", "bedridden-or-major-surgery", 1, evidence)
        for encounter in self.record.of("Encounter"):
            if self._long_inpatient_stay(encounter):
                period = encounter.period
                add("W-03", "bedridden-or-major-surgery", 1,
                    Evidence(ref_of(encounter), "Inpatient stay of 3 days or more", to_date(period.end)))
        # W-04..W-08 examination findings (symptomatic leg only).
        for code, rule, criterion in (
            ("deep-vein-tenderness", "W-04", "deep-vein-tenderness"),
            ("entire-leg-swollen", "W-05", "entire-leg-swollen"),
            ("pitting-oedema-symptomatic-leg", "W-07", "pitting-oedema"),
            ("collateral-superficial-veins", "W-08", "collateral-superficial-veins"),
        ):
            for evidence in findings.get(code, ()):
                if self.within(evidence.when, EXAM_DAYS, undated=True):
                    add(rule, criterion, 1, evidence, leg=True)
        for observation in self.live_observations():
            when = observation_when(observation)
            if not self.within(when, EXAM_DAYS, undated=True):
                continue
            if finding_code(observation) is None and "80068009" in {c.code for c in codings(observation.code)} \
                    and any(_LOWER_LIMB in {c.code for c in codings(s)} for s in body_sites(observation)) \
                    and observation_positive(observation):
                add("W-05", "entire-leg-swollen", 1, self.ev(observation, when), leg=True)
            if finding_code(observation) == "calf-circumference-difference":
                cm = quantity_in(observation.valueQuantity, "cm")
                if cm is not None and cm >= 3.0:  # NICE: "at least 3 cm"
                    add("W-06", "calf-swelling-3cm", 1, self.ev(observation, when, f"{cm:.1f} cm"), leg=True)
        items += self._paired_calf_measurements()
        for condition in self.conditions():
            if condition_is_current(condition) and "80068009" in {c.code for c in codings(condition.code)} and any(
                    _LOWER_LIMB in {c.code for c in codings(s)} for s in body_sites(condition)):
                onset = condition_onset(condition)
                if self.within(onset, LEG_SIGN_DAYS, undated=True):
                    add("W-05", "entire-leg-swollen", 1, self.ev(condition, onset), leg=True)
        # W-09 previously documented DVT (confirmed; any clinical status).
        for concept in ("dvt", "dvt-upper-limb", "history-of-dvt"):
            for evidence in history.get(concept, ()):
                if not evidence.suspected:
                    add("W-09", "previous-dvt", 1, evidence)
        # W-10 alternative diagnosis at least as likely: only when the clinician recorded it.
        for evidence in findings.get("wells-alternative-diagnosis", ()):
            add("W-10", "alternative-diagnosis", -2, evidence)
        return items

    def _paired_calf_measurements(self) -> list[WellsItem]:
        by_day: dict[date, dict[str, tuple[float, Any]]] = {}
        for observation in self.live_observations():
            if finding_code(observation) or not any(_CALF_CIRCUMFERENCE.search(t) for t in texts_of(observation)):
                continue
            when = observation_when(observation)
            cm = quantity_in(observation.valueQuantity, "cm")
            side = self.read.side(observation)
            if when is None or cm is None or side not in ("left", "right") or not self.within(when, EXAM_DAYS):
                continue
            by_day.setdefault(when, {})[side] = (cm, observation)
        items = []
        for when, sides in by_day.items():
            if set(sides) == {"left", "right"}:
                (lcm, lobs), (rcm, robs) = sides["left"], sides["right"]
                bigger, cm, obs = ("right", rcm - lcm, robs) if rcm >= lcm else ("left", lcm - rcm, lobs)
                if cm >= 3.0:
                    evidence = Evidence(ref_of(obs), "Calf circumference difference (paired measurements)", when,
                                        bigger, f"{cm:.1f} cm")
                    items.append(WellsItem("W-06", "calf-swelling-3cm", 1, evidence, True))
        return items

    def _is_surgery(self, procedure: Any) -> bool:
        if self.vs("major-surgery").matches(procedure.code):
            return True
        category = getattr(procedure, "category", None)
        return category is not None and "387713003" in {c.code for c in codings(category)}

    def _long_inpatient_stay(self, encounter: Any) -> bool:
        if encounter.status in ("entered-in-error", "cancelled", "planned"):
            return False
        klass = getattr(encounter, "class_fhir", None)
        if klass is None or klass.code not in ("IMP", "ACUTE", "NONAC"):
            return False
        period = encounter.period
        if period is None or period.start is None or period.end is None:
            return False
        start, end = to_date(period.start), to_date(period.end)
        return (end - start).days >= 3 and self.within(end, BEDRIDDEN_DAYS)

    def _med_label(self, request: Any) -> str:
        return concept_label(request.medicationCodeableConcept) or "MedicationRequest"

    def _med_matches(self, request: Any, value_set: ValueSet) -> bool:
        concept = request.medicationCodeableConcept
        if concept is not None and value_set.matches(concept):
            return True
        if request.medicationReference is not None and request.medicationReference.display:
            return value_set.matches_text(request.medicationReference.display)
        return False

    def _anticoagulation(self, current) -> list[Evidence]:
        out = list(current.get("anticoagulant", ()))
        for request in self.record.of("MedicationRequest"):
            if request.status == "active" and self._med_matches(request, self.vs("anticoagulant")):
                out.append(Evidence(ref_of(request), self._med_label(request), to_date(request.authoredOn)))
        return out

    def _recent_dvt(self, history, anticoagulation, leg_signs) -> list[Evidence]:
        """D-08: a confirmed DVT of the symptomatic leg in the last 90 days, or anticoagulation with a DVT on record."""
        confirmed = [e for e in history.get("dvt", ()) if not e.suspected]
        symptomatic = {e.side for e in leg_signs} - {"unknown"}
        recent = [e for e in confirmed if e.when is not None and self.within(e.when, RECENT_DVT_DAYS)
                  and (not symptomatic or e.side in ("unknown", "both") or e.side in symptomatic or "both" in symptomatic)]
        if anticoagulation and (confirmed or history.get("history-of-dvt")):
            recent += anticoagulation
        return recent

    def _d_dimers(self) -> list[DDimer]:
        out = []
        for observation in self.live_observations():
            if not self.vs("d-dimer").matches(observation.code):
                continue
            at = observation.effectiveDateTime or observation.issued
            out.append(DDimer(self.ev(observation, observation_when(observation), value_text(observation)),
                              at, ddimer_positive(observation)))
        return out

    def _imaging(self) -> list[ImagingOnRecord]:
        results = []
        reports = []
        for report in self.record.of("DiagnosticReport"):
            if report.status in ("entered-in-error", "cancelled"):
                continue
            modality = self.modality(report.code)
            if modality:
                when = to_date(report.effectiveDateTime) or to_date(report.issued)
                reports.append((modality, when, report))
        result_observations = []
        for observation in self.live_observations():
            modality = self.modality(observation.code)
            if modality:
                result_observations.append((modality, observation_when(observation), observation))
        for procedure in self.record.of("Procedure"):
            if procedure.status != "completed":
                continue
            modality = self.modality(procedure.code)
            if not modality:
                continue
            when = procedure_when(procedure)
            result = text_result(" ".join(texts_of(procedure)))
            if result == "unknown":
                result = self._linked_result(modality, when, reports, result_observations)
            results.append(ImagingOnRecord(modality, self.ev(procedure, when), result))
        for modality, when, report in reports:
            results.append(ImagingOnRecord(modality, self.ev(report, when), report_result(report)))
        # G-08: an Observation coded with a knee study's LOINC code is a study on record by itself
        # when no Procedure or report of that study stands beside it.
        recorded = [(i.modality, i.evidence.when) for i in results]
        for modality, when, observation in result_observations:
            if not any(m == modality and (near(w, when) or near(when, w)) for m, w in recorded):
                results.append(ImagingOnRecord(modality, self.ev(observation, when), observation_result(observation)))
        return results

    def _linked_result(self, modality, when, reports, observations) -> str:
        for other_modality, other_when, report in reports:
            if other_modality == modality and near(when, other_when):
                return report_result(report)
        for other_modality, other_when, observation in observations:
            if other_modality == modality and near(when, other_when):
                return observation_result(observation)
        return "unknown"

    def _mechanism(self) -> str | None:
        for observation in self.live_observations():
            if finding_code(observation) == "injury-mechanism":
                value = observation.valueString or (observation.valueCodeableConcept.text
                                                    if observation.valueCodeableConcept else None)
                if value:
                    return value.strip().lower()
        return None

    def _pain_score(self) -> Evidence | None:
        scores = []
        for observation in self.live_observations():
            if self.vs("pain-score").matches(observation.code):
                value = observation.valueQuantity.value if observation.valueQuantity is not None else \
                    observation.valueInteger
                if value is not None:
                    scores.append((observation_when(observation) or date.min, float(value), observation))
        if not scores:
            return None
        when, value, observation = max(scores, key=lambda s: s[0])
        return self.ev(observation, observation_when(observation), f"{value:g}/10")

    def _fever(self, current) -> list[Evidence]:
        out = [e for e in current.get("fever", ()) if self.within(e.when, 2, undated=True)]
        for observation in self.live_observations():
            if self.vs("body-temperature").matches(observation.code) and observation.valueQuantity is not None \
                    and observation.valueQuantity.value is not None:
                celsius = float(observation.valueQuantity.value)
                unit = observation.valueQuantity.code or observation.valueQuantity.unit or "Cel"
                if unit in ("[degF]", "degF", "°F"):
                    celsius = (celsius - 32) * 5 / 9
                when = observation_when(observation)
                at = observation.effectiveDateTime
                recent = (self.now - at).total_seconds() <= 48 * 3600 if isinstance(at, datetime) else \
                    self.within(when, 2)
                if celsius >= 38.0 and recent:
                    out.append(self.ev(observation, when, f"{celsius:.1f} °C"))
        return out

    def _prior_knee_surgery(self, current) -> list[Evidence]:
        out = list(current.get("knee-prosthesis", ()))
        for procedure in self.record.of("Procedure"):
            if procedure.status == "completed" and self.modality(procedure.code) is None and \
                    self._is_surgery(procedure) and any(_KNEE_TEXT.search(t) for t in texts_of(procedure)):
                out.append(self.ev(procedure, procedure_when(procedure)))
        return out

    def _risk_factors(self, current, history, findings, pregnant, postpartum, late, age, wells):
        risks: list[tuple[str, str, Evidence]] = []
        bmi = self._bmi()
        if bmi is not None and bmi[0] >= 30.0 and (age is None or age >= 18):
            risks.append(("R-01", "Obesity", bmi[1]))
        for evidence in current.get("obesity", ()):
            risks.append(("R-01", "Obesity", evidence))
        for item in wells:
            if item.rule == "W-01":
                risks.append(("R-02", "Active cancer", item.evidence))
            elif item.rule == "W-03":
                risks.append(("R-03", "Recent surgery, hospital stay or immobility", item.evidence))
        for evidence in findings.get("long-haul-travel", ()):
            if self.within(evidence.when, TRAVEL_DAYS):
                risks.append(("R-04", "Long-haul travel (more than 4 hours seated)", evidence))
        for evidence in pregnant:
            risks.append(("R-05", "Pregnancy", evidence))
        for evidence in postpartum:
            risks.append(("R-05", "Postpartum (6 weeks or less)", evidence))
        for evidence in late:
            risks.append(("R-05", "Postpartum 6-12 weeks (risk still raised)", evidence))
        oestrogen = list(current.get("oestrogen", ()))
        for request in self.record.of("MedicationRequest"):
            if request.status == "active" and self._med_matches(request, self.vs("oestrogen")):
                oestrogen.append(Evidence(ref_of(request), self._med_label(request), to_date(request.authoredOn)))
        for evidence in oestrogen:
            risks.append(("R-06", "Oestrogen-containing contraception or HRT", evidence))
        for concept in ("dvt", "dvt-upper-limb", "history-of-dvt", "pe"):
            for evidence in history.get(concept, ()):
                if not evidence.suspected:
                    risks.append(("R-07", "Previous venous thromboembolism", evidence))
        for evidence in current.get("thrombophilia", ()):
            risks.append(("R-08", "Thrombophilia", evidence))
        return risks

    def _bmi(self) -> tuple[float, Evidence] | None:
        """G-07: latest BMI; else computed from the latest weight and height; rounded to 1 decimal."""
        def latest(name: str):
            found = [(observation_when(o) or date.min, o) for o in self.live_observations()
                     if self.vs(name).matches(o.code) and o.valueQuantity is not None
                     and o.valueQuantity.value is not None]
            return max(found, key=lambda f: f[0])[1] if found else None

        recorded = latest("bmi")
        if recorded is not None:
            value = round(float(recorded.valueQuantity.value), 1)
            return value, self.ev(recorded, observation_when(recorded), f"BMI {value:.1f} kg/m²")
        weight, height = latest("body-weight"), latest("body-height")
        if weight is None or height is None:
            return None
        kg, metres = quantity_in(weight.valueQuantity, "kg"), quantity_in(height.valueQuantity, "m")
        if not kg or not metres:
            return None
        value = round(kg / (metres * metres), 1)
        return value, Evidence(ref_of(weight), "Body mass index (from weight and height)",
                               observation_when(weight), value=f"BMI {value:.1f} kg/m²")


