"""What each rule checks, its thresholds and its sources, for the public rule pages (GET /rules/{rule-id}).

Built from what the engine itself uses: the card definitions and the red-flag table of cards/cards.toml, the Wells
and risk-factor tables, and the rules' constants (so a page cannot disagree with a card). No patient data.
"""

from __future__ import annotations

from typing import Any

from ..facts.dvt import CALF_DIFFERENCE_CM, EXAM_DAYS, LEG_SIGN_DAYS, RECENT_DVT_DAYS
from ..facts.risk import POSTPARTUM_DAYS, TRAVEL_DAYS
from ..facts.wells import BEDRIDDEN_DAYS, CANCER_TREATMENT_DAYS, IMMOBILISATION_DAYS, WELLS_SURGERY_DAYS
from .base import (
    ACUTE_DAYS,
    ADULT_AGE,
    CHRONIC_WEEKS,
    INJURY_LOOKBACK_DAYS,
    PITTSBURGH_DAYS,
    WELLS_CRITERIA,
    WELLS_LABELS,
    WELLS_LIKELY,
    XRAY_LOOKBACK_DAYS,
    YOUNG_AGE,
)
from .dvt import DDIMER_HOURS, ESCALATION_POINTS, NEGATIVE_SCAN_DAYS, RISK_FACTORS
from .red_flags import SEVERE_PAIN

_LEG_SIGNS = (("calf larger than the other leg by", f"{CALF_DIFFERENCE_CM:g} cm or more"),
              ("coded leg signs read from the last", f"{LEG_SIGN_DAYS} days"),
              ("examination findings read from the last", f"{EXAM_DAYS} days"))
THRESHOLDS: dict[str, tuple[tuple[str, str], ...]] = {
    "D-01": _LEG_SIGNS,
    "D-02": (("Wells score for 'DVT likely'", f"{WELLS_LIKELY} or more"), ("adults from", f"{ADULT_AGE} years"),
             *_LEG_SIGNS),
    "D-03": (("Wells score for 'DVT unlikely'", f"{WELLS_LIKELY - 1} or less"),
             ("a D-dimer result counts for", f"{DDIMER_HOURS} hours"), *_LEG_SIGNS),
    "D-04": (("record-only Wells points that make it a warning", f"{ESCALATION_POINTS} or more"),),
    "D-08": (("a DVT of this leg counts as recent for", f"{RECENT_DVT_DAYS} days"),),
    "D-09": (("under", f"{ADULT_AGE} years"),),
    "D-10": (("a negative leg vein scan counts for", f"{NEGATIVE_SCAN_DAYS} days"),),
    "P-02": (("postpartum for", f"{POSTPARTUM_DAYS} days"),),
    "W-01": (("cancer treatment within", f"{CANCER_TREATMENT_DAYS} days"),),
    "W-02": (("a plaster cast within", f"{IMMOBILISATION_DAYS} days"),),
    "W-03": (("major surgery within", f"{WELLS_SURGERY_DAYS} days"), ("bed rest within", f"{BEDRIDDEN_DAYS} days")),
    "W-06": (("calf larger than the other leg by", f"{CALF_DIFFERENCE_CM:g} cm or more"),),
    "R-04": (("travel within", f"{TRAVEL_DAYS} days"),),
    "RF-02": (("pain score", f"{SEVERE_PAIN}/10 or more"), ("injury within", f"{ACUTE_DAYS} days")),
    "K-01": (("injury within", f"{ACUTE_DAYS} days"),),
    "K-02": (("injury within", f"{PITTSBURGH_DAYS} days"),),
    "K-05": (("chronic from", f"{CHRONIC_WEEKS} weeks of pain"), ("no knee radiograph in the last",
                                                                 f"{XRAY_LOOKBACK_DAYS} days")),
    "K-07": (("no knee injury in the last", f"{INJURY_LOOKBACK_DAYS} days"),
             ("no knee radiograph in the last", f"{XRAY_LOOKBACK_DAYS} days")),
    "K-09": (("younger than", f"{YOUNG_AGE} years"),),
    "K-14": (("chronic from", f"{CHRONIC_WEEKS} weeks of pain"),),
}


def _source(cards: dict[str, Any], key: str) -> dict[str, str]:
    source = cards["sources"][key]
    return {"label": source["label"], **({"url": source["url"]} if "url" in source else {})}


def explain(rule_id: str, cards: dict[str, Any]) -> dict[str, Any] | None:
    """The rule page's content, or None for a rule id the service does not know."""
    checks: list[str] = []
    advice: list[str] = []
    sources: list[dict[str, str]] = []
    for definition in cards["cards"].values():
        if definition["rule"] == rule_id:
            checks.append(f"Card '{definition['topic_display']}' ({definition['indicator']})")
            advice.append(definition["recommendation"].strip())
            sources.append(_source(cards, definition["source"]))
    for row in cards["red_flags"]:
        if row["id"] == rule_id:
            checks.append(f"Red flag '{row['name']}': {row['urgency']}")
            advice.append(row["action"].lstrip("- "))
    for criterion, (rule, points) in WELLS_CRITERIA.items():
        if rule == rule_id:
            checks.append(f"Two-level Wells criterion '{WELLS_LABELS[criterion]}': {points:+d} point(s)")
            sources.append(_source(cards, "nice-ng158"))
    for rule, label in RISK_FACTORS.values():
        if rule == rule_id:
            checks.append(f"VTE risk factor: {label}")
    if not checks:
        return None
    unique_sources = list({s["label"]: s for s in sources}.values())
    page: dict[str, Any] = {"id": rule_id, "checks": checks}
    if rule_id in THRESHOLDS:
        page["thresholds"] = [{"what": what, "value": value} for what, value in THRESHOLDS[rule_id]]
    if advice:
        page["advice"] = list(dict.fromkeys(advice))
    if unique_sources:
        page["sources"] = unique_sources
    return page
