"""Red flags (rules.md §5): one card listing every flag present, at the highest level.
"""

from __future__ import annotations

from ..facts import Evidence, PatientFacts
from .base import ACUTE_DAYS, Finding, acute_injuries, within

_INDICATOR_RANK = {"info": 0, "warning": 1, "critical": 2}


SEVERE_PAIN = 7  # RF-02: a pain score of 7/10 or more after trauma


def red_flags(facts: PatientFacts) -> list[Finding]:
    flags: list[tuple[str, str, str, tuple[Evidence, ...]]] = []  # (rule, indicator, name, evidence)
    local = bool(facts.posterior_knee_pain) or facts.knee_pain_unknown_location
    limb = local or facts.any_knee_pain or bool(facts.leg_signs)
    if local:
        injuries = acute_injuries(facts)
        severe = []
        pain = facts.pain_score
        if pain is not None and pain.score >= SEVERE_PAIN and within(facts, pain.evidence.when, ACUTE_DAYS):
            severe.append(pain.evidence)
        severe += [e for e in facts.finding("unable-bear-weight-4-steps") if within(facts, e.when, ACUTE_DAYS)]
        if injuries and severe:
            flags.append(("RF-02", "warning", "Severe pain after a knee injury", injuries + tuple(severe)))
        locked = facts.finding("knee-locking") + facts.cond("knee-locking")
        if locked:
            flags.append(("RF-03", "critical", "Locked knee", locked))
        giving_way = facts.cond("knee-giving-way")
        if giving_way:
            flags.append(("RF-04", "warning", "Knee giving way", giving_way))
    if limb:
        threatened = facts.cond("knee-dislocation") + facts.cond("limb-ischaemia")
        if threatened:
            flags.append(("RF-05", "critical", "Threatened limb (cold, pale or pulseless leg, or knee dislocation)",
                          threatened))
        septic = facts.cond("septic-arthritis")
        effusion_fever = facts.cond("knee-effusion") + facts.fever if facts.cond("knee-effusion") and facts.fever \
            else ()
        if septic or effusion_fever:
            flags.append(("RF-06", "critical", "Possible septic arthritis", septic + effusion_fever))
        compartment = facts.cond("compartment-syndrome")
        if compartment:
            flags.append(("RF-07", "critical", "Possible compartment syndrome", compartment))
    if not flags:
        return []
    indicator = max((f[1] for f in flags), key=_INDICATOR_RANK.__getitem__)
    lines: list[str] = []
    actions = []
    for rule, _, name, evidence in flags:
        lines.append(f"- **{name}** ({rule}):")
        lines += [f"  - {e.line()}" for e in evidence]
        actions.append(rule)
    return [Finding("red-flag", tuple(actions), tuple(lines), facts.painful_side, indicator=indicator,
                    extra=tuple(RED_FLAG_ACTIONS[r] for r in actions))]


RED_FLAG_ACTIONS = {
    "RF-02": "- Severe pain after injury: assess the same day for fracture or internal injury; Ottawa/Pittsburgh "
             "decide on radiographs.",
    "RF-03": "- Locked knee: urgent orthopaedic review; MRI of the knee without contrast.",
    "RF-04": "- Giving way: orthopaedic referral; MRI to look for ligament or meniscal injury.",
    "RF-05": "- Threatened limb: emergency vascular or orthopaedic assessment now; after a knee dislocation, "
             "radiographs, MRI and CT or MR angiography.",
    "RF-06": "- Possible septic arthritis: same-day assessment and joint aspiration before antibiotics.",
    "RF-07": "- Possible compartment syndrome: emergency surgical assessment now.",
}
