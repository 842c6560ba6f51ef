"""Boundary tables of the knee and red-flag rules (rules.md §3 chronic, §5 red flags), on hand-built facts: each
threshold or gate just below, at and just above, as the clinician sees it (which card, at which level, offering what).

Expected values are written by hand from shared/clinical/rules.md; the DVT tables are in test_boundaries_dvt.py.
"Today" is 2026-11-26; the patient is 52, with pain behind the right knee unless a row says otherwise.
"""

from __future__ import annotations

import pytest

from cds_service.facts import KneePain, PainScore

from .boundary_kit import CALF_PAIN, WEIGHT_BEARING_XRAY, card_on, cards, ev, pain_behind_knee, patient, shown

# --- chronic = 6 weeks (rules.md §3 "Chronic", K-05, K-14) ------------------------------------------------------------
# No radiograph and no diagnosis on record: chronic pain gets weight-bearing radiographs first (K-05) and the clinical
# assessment advice (K-14) as a line of the differential card (card contract: no separate assessment card beside it);
# pain younger than 6 weeks gets neither.
XRAY_FIRST = (("K-05",), (WEIGHT_BEARING_XRAY,))  # the imaging card: its rules and the order it offers
CHRONIC = [  # days of pain -> (imaging card, differential card's rules)
    (41, (None, ("L-07",))),
    (42, (XRAY_FIRST, ("L-07", "K-14"))),
    (43, (XRAY_FIRST, ("L-07", "K-14"))),
]


@pytest.mark.parametrize(("days", "expected"), CHRONIC, ids=[f"{r[0]}d" for r in CHRONIC])
def test_chronic_pain(days, expected):
    facts = patient(**pain_behind_knee(days=days))
    imaging, differential = card_on(facts, "imaging"), card_on(facts, "differential")
    assert card_on(facts, "assessment") is None
    assert (shown(imaging, "rules", "orders"), differential.rules) == expected


# --- RF-05 threatened limb: runs with knee pain of any location or with leg signs (G-05 safety gate) ---------------
ISCHAEMIA = {"limb-ischaemia": (ev("Occlusion of artery of right lower limb", 0),)}
NO_KNEE_PAIN = {"knee_pain": (), "posterior_knee_pain": (), "pain_onset": None}
ANTERIOR_PAIN = KneePain(ev("Anterior right knee pain around the patella", 10), "anterior", frozenset())
RF05 = ("critical", ("RF-05",))  # the red-flag card's indicator and rules
LIMB_THREAT = [
    ("leg-signs-no-knee-pain", {**NO_KNEE_PAIN, "leg_signs": (CALF_PAIN,)}, RF05),
    ("anterior-knee-pain", {**NO_KNEE_PAIN, "knee_pain": (ANTERIOR_PAIN,)}, RF05),
    ("pain-behind-the-knee", {}, RF05),
    ("neither", NO_KNEE_PAIN, None),
]


@pytest.mark.parametrize(("changes", "expected"), [r[1:] for r in LIMB_THREAT], ids=[r[0] for r in LIMB_THREAT])
def test_limb_threat_gate(changes, expected):
    flag = card_on(patient(conditions=ISCHAEMIA, **changes), "red-flag")
    assert shown(flag, "indicator", "rules") == expected


def test_two_red_flags_are_both_named_in_the_summary():
    conditions = {**ISCHAEMIA, "compartment-syndrome": (ev("Compartment syndrome of right lower leg", 0),)}
    flag = card_on(patient(conditions=conditions), "red-flag")
    assert shown(flag, "indicator", "rules", "summary") == (
        "critical", ("RF-05", "RF-07"), "Threatened limb (cold, pale or pulseless leg, or knee dislocation) and "
        "Possible compartment syndrome: assess each today, as below")


# --- RF-02 severe pain after trauma: pain score >= 7/10 with a knee injury in the last 7 days ----------------------
INJURY = {"knee-injury": (ev("Sprain of right knee", 2),)}
RF02 = ("warning", ("RF-02",))
PAIN_AFTER_INJURY = [
    ("6of10", 6, INJURY, None),
    ("7of10", 7, INJURY, RF02),
    ("8of10", 8, INJURY, RF02),
    ("8of10-no-injury", 8, {}, None),  # severe pain alone is no red flag
]


@pytest.mark.parametrize(("score", "conditions", "expected"), [r[1:] for r in PAIN_AFTER_INJURY],
                         ids=[r[0] for r in PAIN_AFTER_INJURY])
def test_severe_pain_after_injury(score, conditions, expected):
    pain = PainScore(ev("Pain severity 0-10", 0, ref="Observation/pain"), score)
    flag = card_on(patient(conditions=conditions, pain_score=pain), "red-flag")
    assert shown(flag, "indicator", "rules") == expected


# --- K-11 strain: an imaging card only when the record calls for it ([2026-11-26]) ---------------------------------
def _strain_card(strain_days: int, pain_days: int | None, **conditions: tuple) -> tuple | None:
    strain = {"hamstring-strain": (ev("Right hamstring strain", strain_days),), **conditions}
    pain = PainScore(ev("Pain severity 0-10", pain_days, ref="Observation/pain"), 5) if pain_days is not None else None
    # the knee pain itself was recorded 60 days ago: only the pain score can be the recent pain record
    facts = patient(conditions=strain, pain_score=pain, **pain_behind_knee(days=60))
    found = [c for c in cards(facts) if c.topic == "imaging" and "K-11" in c.rules]
    return shown(found[0], "rules", "orders") if found else None


K11 = (("K-11",), ("MRI of the knee without IV contrast",))
NOT_IMPROVING = [  # days since the strain, days since the last pain record -> the K-11 card
    ("41d-pain-today", 41, 0, None),
    ("42d-pain-today", 42, 0, K11),
    ("43d-pain-today", 43, 0, K11),
    ("50d-pain-13d-ago", 50, 13, K11),
    ("50d-pain-14d-ago", 50, 14, K11),
    ("50d-pain-15d-ago", 50, 15, None),
    ("50d-no-pain-record", 50, None, None),
]


@pytest.mark.parametrize(("strain_days", "pain_days", "expected"), [r[1:] for r in NOT_IMPROVING],
                         ids=[r[0] for r in NOT_IMPROVING])
def test_a_strain_not_improving(strain_days, pain_days, expected):
    assert _strain_card(strain_days, pain_days) == expected


def test_a_fresh_strain_gets_no_card_unless_a_rupture_is_suspected():
    assert _strain_card(3, 0) is None
    rupture = {"tendon-rupture-suspected": (ev("Right hamstring strain", 3),)}  # the same Condition's text
    assert _strain_card(3, 0, **rupture) == K11
    elsewhere = {"tendon-rupture-suspected": (ev("Ruptured Baker's cyst", 3),)}  # another Condition
    assert _strain_card(3, 0, **elsewhere) is None
