"""The rules' shared vocabulary: what a rule returns (Finding, Suggest, WellsResult), the thresholds more than one
rule uses, and the helpers every domain needs (same side, recency windows, evidence lines).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

from ..facts import DraftOrder, Evidence, PatientFacts, WellsItem

CHRONIC_WEEKS = 6  # §3 "Chronic": AAFP's 6 weeks (ACR's ≈3 months is UNRESOLVED)
XRAY_LOOKBACK_DAYS = 365  # K-05/K-07: 12-month look-back (UNRESOLVED design choice)
INJURY_LOOKBACK_DAYS = 42  # K-07: no knee injury in the last 6 weeks
ACUTE_DAYS = 7  # Ottawa: injury within 7 days
PITTSBURGH_DAYS = 6  # Pittsburgh: not applicable more than 6 days after injury
ACR_MIN_AGE = 5
YOUNG_AGE = 40  # K-09 "young" (UNVERIFIED heuristic threshold in rules.md §6)
ADULT_AGE = 18
# Two-level Wells (rules.md §1, NICE NG158 Table 1): criterion -> (rule id, points), in the table's order.
WELLS_CRITERIA: dict[str, tuple[str, int]] = {
    "active-cancer": ("W-01", 1),
    "paralysis-or-immobilisation": ("W-02", 1),
    "bedridden-or-major-surgery": ("W-03", 1),
    "deep-vein-tenderness": ("W-04", 1),
    "entire-leg-swollen": ("W-05", 1),
    "calf-swelling-3cm": ("W-06", 1),
    "pitting-oedema": ("W-07", 1),
    "collateral-superficial-veins": ("W-08", 1),
    "previous-dvt": ("W-09", 1),
    "alternative-diagnosis": ("W-10", -2),
}
WELLS_ORDER = tuple(WELLS_CRITERIA)
# How the card names each criterion (the identifiers above are for machines: the Wells extension).
WELLS_LABELS = {
    "active-cancer": "Active cancer",
    "paralysis-or-immobilisation": "Paralysis, paresis or recent plaster cast of the leg",
    "bedridden-or-major-surgery": "Bedridden 3 days or more, or major surgery in the last 12 weeks",
    "deep-vein-tenderness": "Tenderness along the deep veins",
    "entire-leg-swollen": "Entire leg swollen",
    "calf-swelling-3cm": "Calf 3 cm or more larger than the other",
    "pitting-oedema": "Pitting oedema of the symptomatic leg",
    "collateral-superficial-veins": "Collateral superficial veins",
    "previous-dvt": "Previous DVT",
    "alternative-diagnosis": "Another diagnosis at least as likely",
}
WELLS_LIKELY = 2  # W-11: two-level Wells, likely >= 2


def wells_points(item: WellsItem) -> int:
    return WELLS_CRITERIA[item.criterion][1]


def wells_rule(item: WellsItem) -> str:
    return WELLS_CRITERIA[item.criterion][0]
ALL_TYPES = frozenset({"Patient", "Condition", "Observation", "Procedure", "MedicationRequest", "Encounter",
                       "DiagnosticReport"})


@dataclass(frozen=True)
class Suggest:
    """An orderable the card offers: create it, and on order hooks maybe remove the draft it replaces."""

    orderable: str  # xray-standing | xray-trauma | mri | us-knee | us-popliteal-artery | venous-duplex | d-dimer
    label: str  # key into the card definition's suggestion_labels
    replaces: DraftOrder | None = None
    recommended: bool = True


@dataclass(frozen=True)
class WellsResult:
    score: int
    leg: str
    items: tuple[WellsItem, ...]

    @property
    def likely(self) -> bool:
        return self.score >= WELLS_LIKELY

    @property
    def criteria(self) -> list[str]:
        present = {i.criterion for i in self.items}
        return [c for c in WELLS_ORDER if c in present]

    def extension(self) -> dict:
        # No empty array in a response (CDS Hooks 2.0): a score with no positive criterion has no criteria key.
        out: dict = {"score": self.score, "likely": self.likely, "leg": self.leg}
        if self.criteria:
            out["criteria"] = self.criteria
        return out

    def lines(self) -> tuple[DetailLine, ...]:
        """The score's list: every criterion once, with its data (or "see above" when the card showed it already)."""
        out: list[DetailLine] = [f"**Two-level Wells score: {self.score}** "
                                 f"({'DVT likely' if self.likely else 'DVT unlikely'}; {self.leg} leg)"]
        out += [wells_line(item) for item in sorted(self.items, key=lambda i: WELLS_ORDER.index(i.criterion))]
        if not self.items:
            out.append("- no Wells criterion found in the record")
        return tuple(out)


def wells_line(item: WellsItem) -> Line:
    points = wells_points(item)
    return Line(f"- {WELLS_LABELS[item.criterion]} ({'+' if points > 0 else ''}{points}):", (item.evidence,),
                (wells_rule(item),), refer_back=True)


@dataclass(frozen=True)
class Line:
    """A line of a card's detail that shows chart data: its words, then each datum in plain words with its date.

    The card builder writes each datum once per card (a line whose data the card already showed is left out, or
    says "see above" when it must stay, as a Wells criterion does) and lists the references and rule ids in the
    card's evidence extension instead of the prose. `rules`: the rules this line stands for beyond the card's own.
    """

    head: str
    evidence: tuple[Evidence, ...] = ()
    rules: tuple[str, ...] = ()
    refer_back: bool = False


DetailLine = str | Line  # plain words, or a line that shows chart data
Block = tuple[DetailLine, ...]  # a heading and its lines, written together (left out when no line is left)


@dataclass(frozen=True)
class Finding:
    card_id: str
    rules: tuple[str, ...]
    evidence: tuple[DetailLine, ...]
    side: str = "unknown"
    reads: frozenset[str] = ALL_TYPES
    order: DraftOrder | None = None
    reasons: tuple[str, ...] = ()
    suggestions: tuple[Suggest, ...] = ()
    wells: WellsResult | None = None
    indicator: str | None = None  # overrides the definition's (escalation, locked knee)
    extra: tuple[str | Block, ...] = field(default=())  # more markdown paragraphs (or blocks) for the detail
    summary_values: tuple[tuple[str, str], ...] = ()  # fills the card's summary template (the red flags that fired)
    folded: tuple[str, ...] = ()  # cards whose advice this card carries in one line instead (card definition: folded)


def same_side(a: str, b: str) -> bool:
    # Unknown laterality counts as the same side (rules.md G-06, conservative).
    return "unknown" in (a, b) or "both" in (a, b) or a == b


def lines_of(prefix: str, evidence: Iterable[Evidence], rules: tuple[str, ...] = ()) -> tuple[Line, ...]:
    return tuple(Line(f"- {prefix}:", (e,), rules) for e in evidence)


def condition_refs(evidence: Iterable[Evidence]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(e.reference for e in evidence if e.reference.startswith("Condition/")))


def within(facts: PatientFacts, when: date | None, days: int) -> bool:
    return when is not None and 0 <= (facts.today - when).days <= days


def acute_injuries(facts: PatientFacts, days: int = ACUTE_DAYS) -> tuple[Evidence, ...]:
    injuries = facts.cond("knee-injury") + facts.cond("ligament-injury")
    return tuple(e for e in injuries if within(facts, e.when, days))


def xrays_of_knee(facts: PatientFacts, side: str, days: int | None = XRAY_LOOKBACK_DAYS):
    return [i for i in facts.imaging if i.modality == "xray" and same_side(i.evidence.side, side)
            and (days is None or i.evidence.when is None or (facts.today - i.evidence.when).days <= days)]


def is_chronic(facts: PatientFacts) -> bool:
    weeks = facts.weeks_of_pain()
    return weeks is not None and weeks >= CHRONIC_WEEKS


def pain_lines(facts: PatientFacts) -> tuple[Line, ...]:
    return lines_of("Pain behind the knee", facts.posterior_knee_pain)


def chronic_line(facts: PatientFacts) -> str:
    weeks = int(facts.weeks_of_pain() or 0)
    return f"- Pain for {weeks} weeks (since {facts.pain_onset.isoformat()}): chronic (6 weeks or more)"


def gate_posterior(facts: PatientFacts) -> bool:
    """G-05: pain behind the knee is on record."""
    return bool(facts.posterior_knee_pain)


def gate_safety(facts: PatientFacts) -> bool:
    """G-05 safety gate for DVT and limb-threatening red flags: posterior or unlocated knee pain, or
    leg signs (with knee pain anywhere, and, by the reviewer's recommendation for the UNRESOLVED
    case, without knee pain too)."""
    return bool(facts.posterior_knee_pain) or facts.knee_pain_unknown_location or bool(facts.leg_signs)
