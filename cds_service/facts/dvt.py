"""What the DVT rules read (rules.md §1, §2, G-09): leg signs, calf warmth, Wells items, D-dimers, anticoagulation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..chart import ChartEntry
from ..fhir_read import (
    condition_is_current,
    condition_is_suspected,
    ddimer_positive,
    finding_code,
    observation_positive,
    quantity_in,
    value_text,
)
from .record import Record, med_label, once
from .types import DDimer, Evidence

_EXAM_SIGNS = ("deep-vein-tenderness", "entire-leg-swollen", "pitting-oedema-symptomatic-leg", "collateral-superficial-veins",
               "calf-warmth")
CALF_DIFFERENCE_CM = 3.0  # W-06 and the leg-sign gate: calf at least 3 cm larger (NICE NG158 Table 1)
LEG_SIGN_DAYS = 28  # rules.md G-09 (a): last 4 weeks (UNRESOLVED design choice)
EXAM_DAYS = 14  # rules.md G-09 (b): last 14 days
RECENT_DVT_DAYS = 90  # D-08


@dataclass
class _LegSigns:
    """G-09 leg signs, and the calf warmth and swelling or tenderness D-01 needs, as they are found."""

    signs: list[Evidence] = field(default_factory=list)
    warmth: list[Evidence] = field(default_factory=list)
    swelling: list[Evidence] = field(default_factory=list)

    def sign(self, evidence: Evidence, *, swelling: bool = False, warmth: bool = False) -> None:
        self.signs.append(evidence)
        if swelling:
            self.swelling.append(evidence)
        if warmth:
            self.warmth.append(evidence)


def leg_sign_facts(rec: Record, posterior, knee_pain, drafts, pregnant: bool):
    """G-09: leg signs / DVT suspected; also the warmth and swelling/tenderness D-01 needs."""
    painful = ({e.side for e in posterior} | {k.evidence.side for k in knee_pain}) - {"unknown"}

    def on_painful_side(side: str) -> bool:
        # P-01: in pregnancy a sign of either leg counts (left-leg DVT predominates).
        return pregnant or side in ("unknown", "both") or not painful or side in painful or "both" in painful

    found = _LegSigns()
    for entry in rec.conditions():
        if condition_is_current(entry.resource):
            _condition_signs(rec, entry, found, on_painful_side)
    for entry in rec.live_observations():
        _observation_signs(rec, entry, found, on_painful_side)
    for order in drafts:
        if order.modality in ("venous-duplex", "d-dimer"):  # (c) a DVT test being ordered: DVT is suspected
            found.sign(Evidence(order.reference, f"Draft order: {order.label}", rec.today, order.side))
    return once(found.signs), once(found.warmth), once(found.swelling)


def _condition_signs(rec: Record, entry: ChartEntry, found: _LegSigns, on_painful_side: Callable[[str], bool]) -> None:
    suspected = condition_is_suspected(entry.resource)
    evidence = rec.ev(entry, suspected=suspected)
    if "calf-leg-signs" in entry.concepts and rec.within(entry.recent, LEG_SIGN_DAYS, undated=True) \
            and on_painful_side(evidence.side):
        found.sign(evidence, swelling=True)  # (a)
    if ("dvt" in entry.concepts and suspected) or "thrombophlebitis-unspecified" in entry.concepts:
        found.sign(evidence)  # (c) clinician suspicion
    if "ruptured-bakers-cyst" in entry.concepts and rec.within(entry.recent, LEG_SIGN_DAYS, undated=True):
        found.sign(evidence)  # K-08: a ruptured cyst mimics DVT, so the DVT pathway runs
    if "calf-warmth" in entry.concepts and rec.within(entry.recent, EXAM_DAYS, undated=True):
        found.warmth.append(evidence)


def _observation_signs(rec: Record, entry: ChartEntry, found: _LegSigns, on_painful_side: Callable[[str], bool]) -> None:
    observation = entry.resource
    code = finding_code(observation)
    evidence = rec.ev(entry)
    exam_recent = rec.within(entry.recent, EXAM_DAYS, undated=True)
    if code in _EXAM_SIGNS and observation_positive(observation) and exam_recent:
        found.sign(evidence, swelling=code != "calf-warmth", warmth=code == "calf-warmth")  # (b)
    elif code == "calf-circumference-difference" and exam_recent:
        cm = quantity_in(observation.valueQuantity, "cm")
        if cm is not None and cm >= CALF_DIFFERENCE_CM:
            found.sign(evidence, swelling=True)  # (b) W-06
    elif code == "wells-dvt-score" and exam_recent:
        found.sign(evidence)  # (c) the clinician scored Wells: DVT is suspected
    elif code is None and "calf-leg-signs" in entry.concepts and observation_positive(observation) \
            and rec.within(entry.recent, LEG_SIGN_DAYS, undated=True) and on_painful_side(evidence.side):
        found.sign(evidence, swelling=True)  # (a), coded or written (G-10)
    if code is None and "calf-warmth" in entry.concepts and observation_positive(observation) and exam_recent:
        found.sign(evidence, warmth=True)  # written as text (G-10)
def anticoagulants(rec: Record, current) -> tuple[list[Evidence], list[Evidence]]:
    """Every anticoagulant on record, and those whose reason is a DVT (D-08 [2026-11-26])."""
    every = list(current.get("anticoagulant", ()))
    for_dvt: list[Evidence] = []
    for entry in rec.of("MedicationRequest"):
        if entry.resource.status == "active" and "anticoagulant" in entry.concepts:
            evidence = Evidence(entry.reference, med_label(entry.resource), entry.when)
            every.append(evidence)
            if entry.reason_concepts & {"dvt", "history-of-dvt"}:
                for_dvt.append(evidence)
    return every, for_dvt


def known_recent_dvt(rec: Record, history, anticoagulation, for_dvt, leg_signs) -> list[Evidence]:
    """D-08: a confirmed DVT of the symptomatic leg in the last 90 days, or an anticoagulant given for DVT.

    An anticoagulant for another reason (atrial fibrillation, a valve) is not D-08 on its own.
    """
    confirmed = [e for e in history.get("dvt", ()) if not e.suspected]
    symptomatic = {e.side for e in leg_signs} - {"unknown"}
    recent = [e for e in confirmed if e.when is not None and rec.within(e.when, RECENT_DVT_DAYS)
              and (not symptomatic or e.side in ("unknown", "both") or e.side in symptomatic or "both" in symptomatic)]
    return recent + (anticoagulation if recent else for_dvt)


def d_dimer_results(rec: Record) -> list[DDimer]:
    out = []
    for entry in rec.live_observations():
        if "d-dimer" not in entry.concepts:
            continue
        observation = entry.resource
        at = observation.effectiveDateTime or observation.issued
        out.append(DDimer(rec.ev(entry, value=value_text(observation)), at, ddimer_positive(observation)))
    return out
