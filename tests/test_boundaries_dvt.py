"""Boundary tables of the DVT rules (rules.md §1, §2, G-09): each threshold just below, at and just above, as the
clinician sees it (the DVT card's topic, its Wells score, a criterion present or absent, the test it offers).

Expected values are written by hand from shared/clinical/rules.md. "Today" is 2026-11-26; the patient is 52, with
pain behind the right knee for 10 days. Windows count today as day 0 and include their last day (G-03).
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from cds_service.facts import DDimer

from .boundary_kit import (
    CALF_PAIN,
    D_DIMER,
    DUPLEX,
    ICD,
    NOW,
    calf_circumference,
    calf_difference,
    calf_pain,
    chart,
    condition,
    dvt_card,
    ev,
    exam_finding,
    history_of_dvt,
    item,
    knee_pain_behind,
    patient,
    shown,
)

# --- W-06 calf swelling >= 3.0 cm (NICE "at least 3 cm"; README: exactly 3.0 scores) --------------------------------
# The right leg has a coded calf-pain sign (so the pathway runs whatever the calf) and a DVT years ago (W-09 +1):
# the calf decides between Wells 1 (dvt-unlikely) and Wells 2 (dvt-likely).
CALF_CODED = [  # pkp-finding#calf-circumference-difference, right minus left
    (2.9, "dvt-unlikely", 1, False),
    (3.0, "dvt-likely", 2, True),
    (3.1, "dvt-likely", 2, True),
]


@pytest.mark.parametrize(("cm", "topic", "score", "scored"), CALF_CODED, ids=[f"{r[0]}cm" for r in CALF_CODED])
def test_calf_difference_coded(cm, topic, score, scored):
    card = dvt_card(chart(knee_pain_behind(), calf_pain(), history_of_dvt(), calf_difference(cm)))
    assert shown(card, "topic", "wells_score") == (topic, score)
    assert ("calf-swelling-3cm" in card.criteria) is scored


CALF_PAIRED = [  # right and left calf circumference measured the same day (rules.md W-06, G-06)
    ("2.9cm", 33.8, 30.9, "dvt-unlikely", 1, False),
    ("3.0cm", 33.8, 30.8, "dvt-likely", 2, True),  # 33.8 - 30.8 is 2.9999999999999964 in floating point
    ("3.1cm", 33.8, 30.7, "dvt-likely", 2, True),
    ("3.0cm-larger-on-the-other-leg", 30.8, 33.8, "dvt-unlikely", 1, False),  # only the symptomatic leg scores
]


@pytest.mark.parametrize(("right", "left", "topic", "score", "scored"), [r[1:] for r in CALF_PAIRED],
                         ids=[r[0] for r in CALF_PAIRED])
def test_calf_difference_paired(right, left, topic, score, scored):
    card = dvt_card(chart(knee_pain_behind(), calf_pain(), history_of_dvt(),
                          calf_circumference("right", right), calf_circumference("left", left)))
    assert shown(card, "topic", "wells_score") == (topic, score)
    assert ("calf-swelling-3cm" in card.criteria) is scored


# G-09 (b): the calf difference is the only leg sign. Below 3.0 cm DVT is not suspected: no DVT card at all
# (no risk factor either, so no D-04); from 3.0 cm the pathway runs with W-06 as its one point.
CALF_GATE = [  # cm -> the DVT card's (topic, Wells score, criteria), None: no DVT card
    (2.9, None),
    (3.0, ("dvt-unlikely", 1, ("calf-swelling-3cm",))),
    (3.1, ("dvt-unlikely", 1, ("calf-swelling-3cm",))),
]


@pytest.mark.parametrize(("cm", "expected"), CALF_GATE, ids=[f"{r[0]}cm" for r in CALF_GATE])
def test_calf_difference_leg_sign_gate(cm, expected):
    card = dvt_card(chart(knee_pain_behind(), calf_difference(cm)))
    assert shown(card, "topic", "wells_score", "criteria") == expected


# --- examination findings: the last 14 days (G-09 (b), W-04..W-08) --------------------------------------------------
EXAM_GATE = [  # deep-vein tenderness recorded N days ago is the only leg sign
    (13, ("dvt-unlikely", 1, ("deep-vein-tenderness",))),
    (14, ("dvt-unlikely", 1, ("deep-vein-tenderness",))),
    (15, None),
]


@pytest.mark.parametrize(("days", "expected"), EXAM_GATE, ids=[f"{r[0]}d" for r in EXAM_GATE])
def test_exam_finding_window_leg_sign(days, expected):
    card = dvt_card(chart(knee_pain_behind(), exam_finding("deep-vein-tenderness", days)))
    assert shown(card, "topic", "wells_score", "criteria") == expected


EXAM_WELLS = [  # with a calf-pain sign and W-09, deep-vein tenderness (W-04) N days ago makes DVT likely or not
    (13, ("dvt-likely", 2, ("deep-vein-tenderness", "previous-dvt"))),
    (14, ("dvt-likely", 2, ("deep-vein-tenderness", "previous-dvt"))),
    (15, ("dvt-unlikely", 1, ("previous-dvt",))),
]


@pytest.mark.parametrize(("days", "expected"), EXAM_WELLS, ids=[f"{r[0]}d" for r in EXAM_WELLS])
def test_exam_finding_window_wells(days, expected):
    card = dvt_card(chart(knee_pain_behind(), calf_pain(), history_of_dvt(), exam_finding("deep-vein-tenderness", days)))
    assert shown(card, "topic", "wells_score", "criteria") == expected


# --- coded leg signs: the last 4 weeks (G-09 (a)) --------------------------------------------------------------------
LEG_SIGN_WINDOW = [  # a calf-pain Condition (M79.661, right) with onset N days ago is the only leg sign
    (27, ("dvt-unlikely", 0, (D_DIMER,))),  # D-03: D-dimer first
    (28, ("dvt-unlikely", 0, (D_DIMER,))),
    (29, None),
]


@pytest.mark.parametrize(("days", "expected"), LEG_SIGN_WINDOW, ids=[f"{r[0]}d" for r in LEG_SIGN_WINDOW])
def test_leg_sign_window(days, expected):
    card = dvt_card(chart(knee_pain_behind(), calf_pain(days)))
    assert shown(card, "topic", "wells_score", "orders") == expected


# --- D-03 with a D-dimer of the last 24 h (rules.md D-03, D-07) -------------------------------------------------------
# Wells 0 with a calf-pain sign. A positive D-dimer of the last 24 h sends the patient to the scan; a negative one
# completes D-03 (no further test offered); an older one counts for nothing: D-dimer first.
D_DIMER_WINDOW = [
    (23, True, (DUPLEX,)),
    (24, True, (DUPLEX,)),
    (25, True, (D_DIMER,)),
    (23, False, ()),
    (24, False, ()),
    (25, False, (D_DIMER,)),
]


@pytest.mark.parametrize(("hours", "positive", "orders"), D_DIMER_WINDOW,
                         ids=[f"{r[0]}h-{'positive' if r[1] else 'negative'}" for r in D_DIMER_WINDOW])
def test_d_dimer_window(hours, positive, orders):
    taken = NOW - timedelta(hours=hours)
    test = DDimer(ev("D-dimer", days=(NOW.date() - taken.date()).days, ref="Observation/d-dimer"), taken, positive)
    card = dvt_card(patient(leg_signs=(CALF_PAIN,), d_dimers=(test,)))
    assert shown(card, "topic", "wells_score", "orders") == ("dvt-unlikely", 0, orders)


# --- D-08 known recent DVT: 90 days, of the symptomatic leg (amended 2026-11-26) --------------------------------------
# New calf pain in the right leg. A confirmed DVT of this leg in the last 90 days is D-08: the dvt-risk-factors card
# names it, the diagnostic pathway is not re-run (no Wells, no test offered). An older one, or one of the other leg,
# is a previously documented DVT: the pathway runs with W-09 +1.
KNOWN_DVT = ("dvt-risk-factors", ("D-08",), None, ())
PATHWAY_WITH_W09 = ("dvt-unlikely", ("D-03",), 1, ("previous-dvt",))
D08 = [
    ("right-89d", "I82.4Y1", 89, KNOWN_DVT),
    ("right-90d", "I82.4Y1", 90, KNOWN_DVT),
    ("right-91d", "I82.4Y1", 91, PATHWAY_WITH_W09),
    ("left-30d", "I82.4Y2", 30, PATHWAY_WITH_W09),
    ("side-unknown-30d", "I82.409", 30, KNOWN_DVT),  # G-06: unknown side = the same leg
]


@pytest.mark.parametrize(("code", "days", "expected"), [r[1:] for r in D08], ids=[r[0] for r in D08])
def test_d08_known_recent_dvt(code, days, expected):
    dvt = condition("dvt", ICD, code, "Deep vein thrombosis of lower extremity", days)
    card = dvt_card(chart(knee_pain_behind(), calf_pain(), dvt))
    assert shown(card, "topic", "rules", "wells_score", "criteria") == expected


# --- W-11 two-level Wells: likely from 2 points (rule level) ---------------------------------------------------------
WELLS_BAND = [
    ("1", ("active-cancer",), ("dvt-unlikely", 1, (D_DIMER,))),
    ("2", ("active-cancer", "previous-dvt"), ("dvt-likely", 2, (DUPLEX,))),
    ("3-minus-alternative-2", ("active-cancer", "previous-dvt", "bedridden-or-major-surgery", "alternative-diagnosis"),
     ("dvt-unlikely", 1, (D_DIMER,))),  # W-10 is -2
]


@pytest.mark.parametrize(("criteria", "expected"), [r[1:] for r in WELLS_BAND], ids=[r[0] for r in WELLS_BAND])
def test_wells_band(criteria, expected):
    card = dvt_card(patient(leg_signs=(CALF_PAIN,), wells_items=tuple(item(c) for c in criteria)))
    assert shown(card, "topic", "wells_score", "orders") == expected


# --- D-04 risk factors without leg signs: a warning once the record alone holds 2 Wells points ----------------------
# Wells is not applied without leg signs: no score, no test offered, whatever the level.
D04 = [
    ("1-point", ("active-cancer",), "info"),
    ("2-points", ("active-cancer", "previous-dvt"), "warning"),
    ("3-points", ("active-cancer", "previous-dvt", "bedridden-or-major-surgery"), "warning"),
]


@pytest.mark.parametrize(("criteria", "indicator"), [r[1:] for r in D04], ids=[r[0] for r in D04])
def test_d04_escalation(criteria, indicator):
    card = dvt_card(patient(wells_items=tuple(item(c) for c in criteria)))
    assert shown(card, "topic", "indicator", "rules", "wells_score", "orders") == \
        ("dvt-risk-factors", indicator, ("D-04",), None, ())
