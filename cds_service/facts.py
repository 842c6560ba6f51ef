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

from .chart import ChartEntry, ChartIndex
from .fhir_read import (
    body_sites,
    codings,
    concept_label,
    condition_is_current,
    condition_is_history,
    condition_is_suspected,
    ddimer_positive,
    finding_code,
    label_of,
    near,
    observation_positive,
    observation_result,
    quantity_in,
    report_result,
    text_result,
    to_date,
    value_text,
)
from .terminology import SNOMED, affirmed

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
_KNEE_TEXT = re.compile(r"\bknee\b", re.I)


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
    """A Wells criterion (rules.md §1) present in the record, and what proved it; its points are the rules'."""

    criterion: str
    evidence: Evidence
    leg_specific: bool = False  # scored for the symptomatic leg only (G-06)
    paired: bool = False  # a calf difference computed from paired right and left measurements (W-06)


@dataclass(frozen=True)
class RiskFactor:
    """A VTE risk factor (rules.md R-01..R-08) in the record; R-02 and R-03 are the Wells items' own."""

    # obesity | long-haul-travel | pregnancy | postpartum | postpartum-late | oestrogen | previous-vte | thrombophilia
    kind: str
    evidence: Evidence


@dataclass(frozen=True)
class PainScore:
    evidence: Evidence
    score: float  # 0-10


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
    risk_factors: tuple[RiskFactor, ...]
    recent_dvt: tuple[Evidence, ...]
    anticoagulation: tuple[Evidence, ...]
    d_dimers: tuple[DDimer, ...]
    conditions: dict[str, tuple[Evidence, ...]]  # current (G-01) by value set name
    findings: dict[str, tuple[Evidence, ...]]  # positive pkp-finding observations by code
    injury_mechanism: str | None
    pain_score: PainScore | None
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
    "thrombophlebitis-unspecified", "calf-warmth", "calf-circumference", "exam-findings-local"}))


def build_facts(index: ChartIndex, now: datetime) -> PatientFacts:
    return _Builder(index, now).build()


class _Builder:
    def __init__(self, index: ChartIndex, now: datetime):
        self.index = index
        self.now = now
        self.today = now.date()

    # helpers
    def within(self, when: date | None, days: int, undated: bool = False) -> bool:
        if when is None:
            return undated
        return 0 <= (self.today - when).days <= days

    def ev(self, entry: ChartEntry, when: date | None = None, value: str | None = None,
           suspected: bool = False) -> Evidence:
        resource = entry.resource
        if value is None and entry.resource_type == "Observation" and resource.valueBoolean is None:
            value = value_text(resource)
        return Evidence(entry.reference, label_of(resource), entry.when if when is None else when, entry.side, value,
                        suspected)

    @cached_property
    def _conditions(self) -> tuple[ChartEntry, ...]:
        # Future-dated entries are not current data.
        return tuple(c for c in self.index.of("Condition") if (c.when or self.today) <= self.today)

    @cached_property
    def _observations(self) -> tuple[ChartEntry, ...]:
        return tuple(o for o in self.index.of("Observation")
                     if o.resource.status not in _DEAD_OBSERVATION and (o.when or self.today) <= self.today)

    def conditions(self) -> Iterable[ChartEntry]:
        return self._conditions

    def live_observations(self) -> Iterable[ChartEntry]:
        return self._observations

    def of(self, resource_type: str) -> tuple[ChartEntry, ...]:
        return self.index.of(resource_type)

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
        anticoagulation, for_dvt = self._anticoagulation(current)
        recent_dvt = self._recent_dvt(history, anticoagulation, for_dvt, leg_signs)
        risk = self._risk_factors(current, history, findings, pregnant, postpartum, postpartum_late, age)
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
            left_out_types=frozenset(self.index.rejected_types()),
        )

    def _age(self) -> int | None:
        birth = self.index.birth_date if self.index.patient is not None else None
        if birth is None:
            return None
        return self.today.year - birth.year - ((self.today.month, self.today.day) < (birth.month, birth.day))

    def _condition_concepts(self) -> tuple[dict[str, tuple[Evidence, ...]], dict[str, tuple[Evidence, ...]]]:
        current: dict[str, list[Evidence]] = {}
        history: dict[str, list[Evidence]] = {}
        for entry in self.conditions():
            condition = entry.resource
            if not condition_is_history(condition):
                continue
            is_current = condition_is_current(condition)
            evidence = self.ev(entry, suspected=condition_is_suspected(condition))
            for concept in CURRENT_CONCEPTS:
                if is_current and concept in entry.concepts:
                    current.setdefault(concept, []).append(evidence)
            for concept in HISTORY_CONCEPTS:
                if concept in entry.concepts:
                    history.setdefault(concept, []).append(evidence)
                    if is_current and concept not in CURRENT_CONCEPTS:
                        current.setdefault(concept, []).append(evidence)
        return ({k: tuple(v) for k, v in current.items()}, {k: tuple(v) for k, v in history.items()})

    def _findings(self) -> dict[str, tuple[Evidence, ...]]:
        out: dict[str, list[Evidence]] = {}
        for entry in self.live_observations():
            code = finding_code(entry.resource)
            if code is None or not observation_positive(entry.resource):
                continue
            out.setdefault(code, []).append(self.ev(entry))
        return {k: tuple(v) for k, v in out.items()}

    def _knee_pain(self, findings: dict[str, tuple[Evidence, ...]]):
        knee_pain: list[KneePain] = []
        posterior: list[Evidence] = []
        onsets: list[date] = []
        subsites: set[str] = set()
        swelling = False
        for entry in self.conditions():
            condition = entry.resource
            if not condition_is_current(condition):
                continue
            text = entry.text
            is_knee_pain = "knee-pain" in entry.concepts
            posterior_dx = "posterior-knee-diagnosis" in entry.concepts
            if not (is_knee_pain or posterior_dx):
                continue
            onset = entry.when
            evidence = self.ev(entry, suspected=condition_is_suspected(condition))
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
        for entry in self.conditions():
            if condition_is_history(entry.resource) and "postpartum" in entry.concepts:
                deliveries.append((entry.when, self.ev(entry)))
        for entry in self.of("Procedure"):
            if entry.resource.status == "completed" and "postpartum" in entry.concepts:
                deliveries.append((entry.recent, self.ev(entry)))
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

        status_obs = [o for o in self.live_observations() if "pregnancy-status" in o.concepts]
        if status_obs:
            latest = max(status_obs, key=lambda o: o.when or date.min)
            value = latest.resource.valueCodeableConcept
            codes = {c.code for c in codings(value)} if value else set()
            if "60001007" in codes:  # latest says not pregnant: overrides the problem list
                return [], postpartum, late
            if "77386006" in codes:
                pregnant.append(self.ev(latest, value="pregnant"))
                return pregnant, postpartum, late
        for entry in self.conditions():
            if not condition_is_current(entry.resource) or "pregnancy" not in entry.concepts:
                continue
            onset = entry.when
            if onset is None or not self.within(onset, PREGNANCY_DAYS):
                continue  # stale problem-list entry
            if last_delivery is not None and last_delivery >= onset:
                continue
            pregnant.append(self.ev(entry))
        return pregnant, postpartum, late

    def _drafts(self) -> tuple[DraftOrder, ...]:
        out = []
        for order in self.index.drafts:
            modality = modality_of(order.concepts)
            if modality is None and "d-dimer-order" in order.concepts:
                modality = "d-dimer"
            out.append(DraftOrder(order.reference, modality, label_of(order.resource), order.side))
        return tuple(out)

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

        for entry in self.conditions():
            condition = entry.resource
            if not condition_is_current(condition):
                continue
            evidence = self.ev(entry, suspected=condition_is_suspected(condition))
            if "calf-leg-signs" in entry.concepts and self.within(entry.recent, LEG_SIGN_DAYS, undated=True) \
                    and on_painful_side(evidence.side):
                signs.append(evidence)
                swelling.append(evidence)
            if ("dvt" in entry.concepts and condition_is_suspected(condition)) or \
                    "thrombophlebitis-unspecified" in entry.concepts:
                signs.append(evidence)  # (c) clinician suspicion
            if "ruptured-bakers-cyst" in entry.concepts and self.within(entry.recent, LEG_SIGN_DAYS, True):
                signs.append(evidence)  # K-08: a ruptured cyst mimics DVT, so the DVT pathway runs
            if "calf-warmth" in entry.concepts and self.within(entry.recent, EXAM_DAYS, undated=True):
                warmth.append(evidence)
        for entry in self.live_observations():
            observation = entry.resource
            recent = entry.recent
            code = finding_code(observation)
            evidence = self.ev(entry)
            if code in ("deep-vein-tenderness", "entire-leg-swollen", "pitting-oedema-symptomatic-leg",
                        "collateral-superficial-veins", "calf-warmth") and observation_positive(observation) \
                    and self.within(recent, EXAM_DAYS, undated=True):
                signs.append(evidence)
                if code == "calf-warmth":
                    warmth.append(evidence)
                else:
                    swelling.append(evidence)
            elif code == "calf-circumference-difference" and self.within(recent, EXAM_DAYS, undated=True):
                cm = quantity_in(observation.valueQuantity, "cm")
                if cm is not None and cm >= 3.0:
                    signs.append(evidence)
                    swelling.append(evidence)
            elif code == "wells-dvt-score" and self.within(recent, EXAM_DAYS, undated=True):
                signs.append(evidence)  # (c) the clinician scored Wells: DVT is suspected
            elif code is None and "calf-leg-signs" in entry.concepts \
                    and observation_positive(observation) and self.within(recent, LEG_SIGN_DAYS, undated=True) \
                    and on_painful_side(evidence.side):
                signs.append(evidence)
                swelling.append(evidence)
            if code is None and "calf-warmth" in entry.concepts \
                    and observation_positive(observation) and self.within(recent, EXAM_DAYS, undated=True):
                warmth.append(evidence)
                signs.append(evidence)
        for order in drafts:
            if order.modality in ("venous-duplex", "d-dimer"):
                signs.append(Evidence(order.reference, f"Draft order: {order.label}", self.today, order.side))
        return _once(signs), _once(warmth), _once(swelling)

    def _wells_items(self, current, history, findings) -> list[WellsItem]:
        items: list[WellsItem] = []

        def add(criterion: str, evidence: Evidence, leg: bool = False) -> None:
            items.append(WellsItem(criterion, evidence, leg))

        # W-01 active cancer: active malignancy, treatment within 6 months, or palliative care.
        for evidence in current.get("malignancy", ()):
            add("active-cancer", evidence)
        for evidence in history.get("cancer-treatment", ()) + current.get("palliative", ()):
            if evidence.when is None or self.within(evidence.when, CANCER_TREATMENT_DAYS):
                add("active-cancer", evidence)
        for entry in self.of("Procedure"):
            if entry.resource.status in ("completed", "in-progress") and "cancer-treatment" in entry.concepts \
                    and self.within(entry.recent, CANCER_TREATMENT_DAYS):
                add("active-cancer", self.ev(entry))
        for entry in self.of("Encounter"):
            encounter = entry.resource
            if encounter.status not in ("entered-in-error", "cancelled", "planned") and \
                    "cancer-treatment" in entry.concepts and self.within(entry.recent, CANCER_TREATMENT_DAYS):
                reasons = list(encounter.reasonCode or []) + list(encounter.type or [])
                label = next((concept_label(r) for r in reasons if concept_label(r)), None)
                add("active-cancer",
                    Evidence(entry.reference, label or "Anticancer treatment encounter", entry.when))
        for entry in self.of("MedicationRequest"):
            request = entry.resource
            if request.status in ("active", "completed") and "cancer-treatment" in entry.concepts \
                    and self.within(entry.when, CANCER_TREATMENT_DAYS, undated=request.status == "active"):
                add("active-cancer", Evidence(entry.reference, _med_label(request), entry.when))
        # W-02 paralysis, paresis or recent plaster immobilisation.
        for evidence in current.get("leg-paralysis", ()):
            add("paralysis-or-immobilisation", evidence)
        for entry in self.of("Procedure"):
            if entry.resource.status in ("completed", "in-progress") and \
                    "immobilisation-procedure" in entry.concepts and self.within(entry.recent, IMMOBILISATION_DAYS):
                add("paralysis-or-immobilisation", self.ev(entry))
        for evidence in findings.get("leg-immobilisation", ()):
            if self.within(evidence.when, IMMOBILISATION_DAYS, undated=True):
                add("paralysis-or-immobilisation", evidence)
        # W-03 bedridden >= 3 days or major surgery within 12 weeks.
        for entry in self.of("Procedure"):
            if entry.resource.status != "completed" or modality_of(entry.concepts) is not None:
                continue  # imaging is not surgery
            if "immobilisation-procedure" in entry.concepts and not _SURGERY_WORDS.search(label_of(entry.resource)):
                continue  # a cast is W-02, unless it was part of an operation
            if self._is_surgery(entry) and entry.recent is not None and self.within(entry.recent, WELLS_SURGERY_DAYS):
                add("bedridden-or-major-surgery",
                    self.ev(entry, value=f"{(self.today - entry.recent).days} days ago"))
        for evidence in history.get("recent-knee-arthroplasty", ()):
            if self.within(evidence.when, WELLS_SURGERY_DAYS):
                add("bedridden-or-major-surgery", evidence)
        for evidence in current.get("bedridden", ()):
            if self.within(evidence.when, BEDRIDDEN_DAYS, undated=True):
                add("bedridden-or-major-surgery", evidence)
        for entry in self.of("Encounter"):
            if self._long_inpatient_stay(entry.resource):
                period = entry.resource.period
                add("bedridden-or-major-surgery",
                    Evidence(entry.reference, "Inpatient stay of 3 days or more", to_date(period.end)))
        # W-04..W-08 examination findings (symptomatic leg only).
        for code, criterion in (
            ("deep-vein-tenderness", "deep-vein-tenderness"),
            ("entire-leg-swollen", "entire-leg-swollen"),
            ("pitting-oedema-symptomatic-leg", "pitting-oedema"),
            ("collateral-superficial-veins", "collateral-superficial-veins"),
        ):
            for evidence in findings.get(code, ()):
                if self.within(evidence.when, EXAM_DAYS, undated=True):
                    add(criterion, evidence, leg=True)
        for entry in self.live_observations():
            observation = entry.resource
            if not self.within(entry.recent, EXAM_DAYS, undated=True):
                continue
            if finding_code(observation) is None and "80068009" in {c.code for c in codings(observation.code)} \
                    and any(_LOWER_LIMB in {c.code for c in codings(s)} for s in body_sites(observation)) \
                    and observation_positive(observation):
                add("entire-leg-swollen", self.ev(entry), leg=True)
            if finding_code(observation) == "calf-circumference-difference":
                cm = quantity_in(observation.valueQuantity, "cm")
                if cm is not None and cm >= 3.0:  # NICE: "at least 3 cm"
                    add("calf-swelling-3cm", self.ev(entry, value=f"{cm:.1f} cm"), leg=True)
        items += self._paired_calf_measurements()
        for entry in self.conditions():
            condition = entry.resource
            if condition_is_current(condition) and "80068009" in {c.code for c in codings(condition.code)} and any(
                    _LOWER_LIMB in {c.code for c in codings(s)} for s in body_sites(condition)) \
                    and self.within(entry.recent, LEG_SIGN_DAYS, undated=True):
                add("entire-leg-swollen", self.ev(entry), leg=True)
        # W-09 previously documented DVT (confirmed; any clinical status).
        for concept in ("dvt", "dvt-upper-limb", "history-of-dvt"):
            for evidence in history.get(concept, ()):
                if not evidence.suspected:
                    add("previous-dvt", evidence)
        # W-10 alternative diagnosis at least as likely: only when the clinician recorded it.
        for evidence in findings.get("wells-alternative-diagnosis", ()):
            add("alternative-diagnosis", evidence)
        return items

    def _paired_calf_measurements(self) -> list[WellsItem]:
        by_day: dict[date, dict[str, tuple[float, ChartEntry]]] = {}
        for entry in self.live_observations():
            if finding_code(entry.resource) or "calf-circumference" not in entry.concepts:
                continue
            when = entry.when
            cm = quantity_in(entry.resource.valueQuantity, "cm")
            if when is None or cm is None or entry.side not in ("left", "right") or not self.within(when, EXAM_DAYS):
                continue
            by_day.setdefault(when, {})[entry.side] = (cm, entry)
        items = []
        for when, sides in by_day.items():
            if set(sides) == {"left", "right"}:
                (lcm, left), (rcm, right) = sides["left"], sides["right"]
                bigger, cm, entry = ("right", rcm - lcm, right) if rcm >= lcm else ("left", lcm - rcm, left)
                if cm >= 3.0:
                    evidence = Evidence(entry.reference, "Calf circumference difference (paired measurements)", when,
                                        bigger, f"{cm:.1f} cm")
                    items.append(WellsItem("calf-swelling-3cm", evidence, leg_specific=True, paired=True))
        return items

    def _is_surgery(self, entry: ChartEntry) -> bool:
        if "major-surgery" in entry.concepts:
            return True
        category = getattr(entry.resource, "category", None)
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

    def _anticoagulation(self, current) -> tuple[list[Evidence], list[Evidence]]:
        """Every anticoagulant on record, and those whose reason is a DVT (D-08 [2026-11-26])."""
        every = list(current.get("anticoagulant", ()))
        for_dvt: list[Evidence] = []
        for entry in self.of("MedicationRequest"):
            if entry.resource.status == "active" and "anticoagulant" in entry.concepts:
                evidence = Evidence(entry.reference, _med_label(entry.resource), entry.when)
                every.append(evidence)
                if entry.reason_concepts & {"dvt", "history-of-dvt"}:
                    for_dvt.append(evidence)
        return every, for_dvt

    def _recent_dvt(self, history, anticoagulation, for_dvt, leg_signs) -> list[Evidence]:
        """D-08: a confirmed DVT of the symptomatic leg in the last 90 days, or an anticoagulant given for DVT.

        An anticoagulant for another reason (atrial fibrillation, a valve) is not D-08 on its own.
        """
        confirmed = [e for e in history.get("dvt", ()) if not e.suspected]
        symptomatic = {e.side for e in leg_signs} - {"unknown"}
        recent = [e for e in confirmed if e.when is not None and self.within(e.when, RECENT_DVT_DAYS)
                  and (not symptomatic or e.side in ("unknown", "both") or e.side in symptomatic or "both" in symptomatic)]
        return recent + (anticoagulation if recent else for_dvt)

    def _d_dimers(self) -> list[DDimer]:
        out = []
        for entry in self.live_observations():
            if "d-dimer" not in entry.concepts:
                continue
            observation = entry.resource
            at = observation.effectiveDateTime or observation.issued
            out.append(DDimer(self.ev(entry, value=value_text(observation)), at, ddimer_positive(observation)))
        return out

    def _imaging(self) -> list[ImagingOnRecord]:
        results = []
        reports = []
        for entry in self.of("DiagnosticReport"):
            if entry.resource.status in ("entered-in-error", "cancelled"):
                continue
            modality = modality_of(entry.concepts)
            if modality:
                reports.append((modality, entry.when, entry))
        result_observations = []
        for entry in self.live_observations():
            modality = modality_of(entry.concepts)
            if modality:
                result_observations.append((modality, entry.when, entry))
        for entry in self.of("Procedure"):
            if entry.resource.status != "completed":
                continue
            modality = modality_of(entry.concepts)
            if not modality:
                continue
            when = entry.recent
            result = text_result(entry.text)
            if result == "unknown":
                result = self._linked_result(modality, when, reports, result_observations)
            results.append(ImagingOnRecord(modality, self.ev(entry, when=when), result))
        for modality, _when, entry in reports:
            results.append(ImagingOnRecord(modality, self.ev(entry), report_result(entry.resource)))
        # G-08: an Observation coded with a knee study's LOINC code is a study on record by itself
        # when no Procedure or report of that study stands beside it.
        recorded = [(i.modality, i.evidence.when) for i in results]
        for modality, when, entry in result_observations:
            if not any(m == modality and (near(w, when) or near(when, w)) for m, w in recorded):
                results.append(ImagingOnRecord(modality, self.ev(entry), observation_result(entry.resource)))
        return results

    def _linked_result(self, modality, when, reports, observations) -> str:
        for other_modality, other_when, entry in reports:
            if other_modality == modality and near(when, other_when):
                return report_result(entry.resource)
        for other_modality, other_when, entry in observations:
            if other_modality == modality and near(when, other_when):
                return observation_result(entry.resource)
        return "unknown"

    def _mechanism(self) -> str | None:
        for entry in self.live_observations():
            observation = entry.resource
            if finding_code(observation) == "injury-mechanism":
                value = observation.valueString or (observation.valueCodeableConcept.text
                                                    if observation.valueCodeableConcept else None)
                if value:
                    return value.strip().lower()
        return None

    def _pain_score(self) -> PainScore | None:
        scores = []
        for entry in self.live_observations():
            if "pain-score" in entry.concepts:
                observation = entry.resource
                value = observation.valueQuantity.value if observation.valueQuantity is not None else \
                    observation.valueInteger
                if value is not None:
                    scores.append((entry.when or date.min, float(value), entry))
        if not scores:
            return None
        _, value, entry = max(scores, key=lambda s: s[0])
        return PainScore(self.ev(entry, value=f"{value:g}/10"), value)

    def _fever(self, current) -> list[Evidence]:
        out = [e for e in current.get("fever", ()) if self.within(e.when, 2, undated=True)]
        for entry in self.live_observations():
            observation = entry.resource
            if "body-temperature" in entry.concepts and observation.valueQuantity is not None \
                    and observation.valueQuantity.value is not None:
                celsius = float(observation.valueQuantity.value)
                unit = observation.valueQuantity.code or observation.valueQuantity.unit or "Cel"
                if unit in ("[degF]", "degF", "°F"):
                    celsius = (celsius - 32) * 5 / 9
                at = observation.effectiveDateTime
                recent = (self.now - at).total_seconds() <= 48 * 3600 if isinstance(at, datetime) else \
                    self.within(entry.recent, 2)
                if celsius >= 38.0 and recent:
                    out.append(self.ev(entry, value=f"{celsius:.1f} °C"))
        return out

    def _prior_knee_surgery(self, current) -> list[Evidence]:
        out = list(current.get("knee-prosthesis", ()))
        for entry in self.of("Procedure"):
            if entry.resource.status == "completed" and modality_of(entry.concepts) is None and \
                    self._is_surgery(entry) and _KNEE_TEXT.search(entry.text):
                out.append(self.ev(entry))
        return out

    def _risk_factors(self, current, history, findings, pregnant, postpartum, late, age) -> list[RiskFactor]:
        """R-01, R-04..R-08 (R-02 and R-03 are the Wells items active cancer and surgery or immobility)."""
        risks: list[RiskFactor] = []
        bmi = self._bmi()
        if bmi is not None and bmi[0] >= 30.0 and (age is None or age >= 18):
            risks.append(RiskFactor("obesity", bmi[1]))
        risks += [RiskFactor("obesity", e) for e in current.get("obesity", ())]
        risks += [RiskFactor("long-haul-travel", e) for e in findings.get("long-haul-travel", ())
                  if self.within(e.when, TRAVEL_DAYS)]
        risks += [RiskFactor("pregnancy", e) for e in pregnant]
        risks += [RiskFactor("postpartum", e) for e in postpartum]
        risks += [RiskFactor("postpartum-late", e) for e in late]
        oestrogen = list(current.get("oestrogen", ()))
        for entry in self.of("MedicationRequest"):
            if entry.resource.status == "active" and "oestrogen" in entry.concepts:
                oestrogen.append(Evidence(entry.reference, _med_label(entry.resource), entry.when))
        risks += [RiskFactor("oestrogen", e) for e in oestrogen]
        for concept in ("dvt", "dvt-upper-limb", "history-of-dvt", "pe"):
            risks += [RiskFactor("previous-vte", e) for e in history.get(concept, ()) if not e.suspected]
        risks += [RiskFactor("thrombophilia", e) for e in current.get("thrombophilia", ())]
        return risks

    def _bmi(self) -> tuple[float, Evidence] | None:
        """G-07: latest BMI; else computed from the latest weight and height; rounded to 1 decimal."""
        def latest(name: str) -> ChartEntry | None:
            found = [(o.when or date.min, o) for o in self.live_observations()
                     if name in o.concepts and o.resource.valueQuantity is not None
                     and o.resource.valueQuantity.value is not None]
            return max(found, key=lambda f: f[0])[1] if found else None

        recorded = latest("bmi")
        if recorded is not None:
            value = round(float(recorded.resource.valueQuantity.value), 1)
            return value, self.ev(recorded, value=f"BMI {value:.1f} kg/m²")
        weight, height = latest("body-weight"), latest("body-height")
        if weight is None or height is None:
            return None
        kg = quantity_in(weight.resource.valueQuantity, "kg")
        metres = quantity_in(height.resource.valueQuantity, "m")
        if not kg or not metres:
            return None
        value = round(kg / (metres * metres), 1)
        return value, Evidence(weight.reference, "Body mass index (from weight and height)", weight.when,
                               value=f"BMI {value:.1f} kg/m²")


_MODALITIES = (("xray", "knee-xray"), ("mri", "knee-mri"), ("us-knee", "knee-us"), ("venous-duplex", "venous-duplex"))
_SURGERY_WORDS = re.compile(r"\b(?:surgery|surgical|\w+ectomy|\w+otomy|\w+plasty|repair|fixation|arthroscop\w*)\b", re.I)


def _once(evidence: list[Evidence]) -> list[Evidence]:
    """Each resource once: one exam note can be both a leg sign and calf warmth, but it is one datum."""
    seen: set[str] = set()
    return [e for e in evidence if not (e.reference in seen or seen.add(e.reference))]


def modality_of(concepts: frozenset[str]) -> str | None:
    """The imaging modality of a resource's value sets (knee X-ray, MRI, ultrasound, venous duplex)."""
    return next((modality for modality, name in _MODALITIES if name in concepts), None)


def _med_label(request: Any) -> str:
    if request.medicationCodeableConcept is not None:
        return concept_label(request.medicationCodeableConcept) or "MedicationRequest"
    if request.medicationReference is not None and request.medicationReference.display:
        return request.medicationReference.display
    return "MedicationRequest"
