"""What the facts step yields: typed values, each with the evidence that proved it (what, which resource, when, which
side). No rule ids and no card wording: the rules own those.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime


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
        """The datum in plain words with its date; the reference is for machines (the card's evidence extension)."""
        when = self.when.isoformat() if self.when else "date not recorded"
        side = f", {self.side}" if self.side in ("right", "left", "both") and self.side not in self.label.lower() else ""
        value = f": {self.value}" if self.value else ""
        suspected = " (suspected)" if self.suspected else ""
        return f"{self.label}{side}{value}{suspected} ({when})"


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

