"""Knee imaging (rules.md §3): trauma (Ottawa, Pittsburgh), mechanical symptoms, chronic pain, cyst and vessels,
strains.
"""

from __future__ import annotations

from ..facts import PatientFacts
from .base import (
    ACUTE_DAYS,
    PITTSBURGH_DAYS,
    YOUNG_AGE,
    DetailLine,
    Finding,
    Line,
    Suggest,
    acute_injuries,
    chronic_line,
    condition_refs,
    is_chronic,
    lines_of,
    pain_lines,
    same_side,
    within,
    xrays_of_knee,
)


def ottawa(facts: PatientFacts) -> tuple[bool | None, list[DetailLine]]:
    """K-01: None when not applicable; else (positive, the criteria that were met, as lines of the card)."""
    injuries = acute_injuries(facts)
    if not injuries or facts.pregnant or facts.cond("knee-prosthesis") or facts.cond("leg-paralysis"):
        return None, []
    met: list[DetailLine] = []
    if facts.age is not None and facts.age >= 55:
        met.append(f"- Ottawa knee rule positive: age {facts.age} (55 or over)")
    for code, label in (("isolated-patellar-tenderness", "isolated tenderness of the patella"),
                        ("fibular-head-tenderness", "tenderness at the head of the fibula"),
                        ("unable-flex-90", "unable to flex to 90°"),
                        ("unable-bear-weight-4-steps", "unable to bear weight for 4 steps")):
        for evidence in facts.finding(code):
            if within(facts, evidence.when, ACUTE_DAYS):
                met.append(Line(f"- Ottawa knee rule positive, {label}:", (evidence,)))
                break
    if facts.age is None and not met:
        return None, []  # the age criterion cannot be judged
    return bool(met), met


def pittsburgh(facts: PatientFacts) -> tuple[bool | None, list[str]]:
    """K-02: blunt trauma or fall, and age < 12 or > 50 or unable to take 4 weight-bearing steps."""
    injuries = acute_injuries(facts, PITTSBURGH_DAYS)
    if not injuries or facts.prior_knee_surgery:
        return None, []
    mechanism = facts.injury_mechanism or ""
    if not any(word in mechanism for word in ("fall", "blunt")):
        return False, []
    met = []
    if facts.age is not None and (facts.age < 12 or facts.age > 50):
        met.append(f"{mechanism} with age {facts.age}")
    if any(within(facts, e.when, ACUTE_DAYS) for e in facts.finding("unable-bear-weight-4-steps")):
        met.append(f"{mechanism} and unable to take 4 weight-bearing steps")
    return bool(met), met


def trauma_imaging(facts: PatientFacts) -> list[Finding]:
    injuries = acute_injuries(facts)
    if not injuries:
        return []
    ott, ott_met = ottawa(facts)
    pitt, pitt_met = pittsburgh(facts)
    lines = lines_of("Knee injury", injuries)
    out = []
    xray_done = xrays_of_knee(facts, facts.painful_side, days=ACUTE_DAYS)
    if (ott or pitt) and not xray_done:
        only_age = bool(ott) and not pitt and all(isinstance(m, str) for m in ott_met)
        criteria = ott_met + [f"- Pittsburgh knee rule positive: {m}" for m in pitt_met]
        out.append(Finding("xray-trauma", tuple(r for r, hit in (("K-01", ott), ("K-02", pitt)) if hit),
                           lines + tuple(criteria), facts.painful_side, reasons=condition_refs(injuries),
                           suggestions=(Suggest("xray-trauma", "order"),),
                           indicator="info" if only_age else None))
    locked = facts.finding("knee-locking") + facts.cond("knee-locking")
    derangement = facts.cond("meniscal-tear") + facts.cond("ligament-injury")
    fracture_excluded = any(i.result == "normal" for i in xray_done) or (ott is False and pitt is not True)
    if locked or (derangement and fracture_excluded and not out):
        why = lines_of("Locked knee", locked) + lines_of("Suspected internal derangement", derangement)
        if fracture_excluded:
            why += ("- Fracture excluded or Ottawa/Pittsburgh negative",)
        out.append(Finding("mri-derangement", ("K-04",), lines + why, facts.painful_side,
                           reasons=condition_refs(derangement + injuries), suggestions=(Suggest("mri", "order"),),
                           indicator="critical" if locked else None))
    return out


def chronic_imaging(facts: PatientFacts) -> list[Finding]:
    if not is_chronic(facts) or acute_injuries(facts):
        return []
    out = []
    side = facts.painful_side
    recent = xrays_of_knee(facts, side)
    if not recent:  # K-05
        out.append(Finding("xray-chronic", ("K-05",), pain_lines(facts) + (
            chronic_line(facts),
            f"- No radiograph of this knee in the 12 months before {facts.today.isoformat()}"),
            side, reasons=condition_refs(facts.posterior_knee_pain),
            suggestions=(Suggest("xray-standing", "order"),)))
    else:
        negative = [i for i in xrays_of_knee(facts, side, days=None) if i.result in ("normal", "effusion-only")]
        mri_on_record = [i for i in facts.imaging if i.modality == "mri" and same_side(i.evidence.side, side)]
        if negative and not mri_on_record:  # K-06
            xray = negative[-1]
            out.append(Finding("mri-after-xray", ("K-06",), pain_lines(facts) + (
                chronic_line(facts),
                Line(f"- Knee radiograph {'normal' if xray.result == 'normal' else 'showing only an effusion'}:",
                     (xray.evidence,))), side, reasons=condition_refs(facts.posterior_knee_pain),
                suggestions=(Suggest("mri", "order"),)))
    return out


def cyst_and_vessel_imaging(facts: PatientFacts) -> list[Finding]:
    out = []
    aneurysm = facts.cond("popliteal-aneurysm") + facts.finding("pulsatile-popliteal-mass")
    if not aneurysm and facts.cond("aaa") and facts.posterior_swelling:
        aneurysm = facts.cond("aaa")
    if aneurysm:  # K-13
        out.append(Finding("us-popliteal-artery", ("K-13",), lines_of("Possible popliteal artery aneurysm", aneurysm),
                           facts.painful_side, reasons=condition_refs(aneurysm),
                           suggestions=(Suggest("us-popliteal-artery", "order"),)))
    out += cyst_imaging(facts) if not aneurysm else []
    return out


def cyst_imaging(facts: PatientFacts) -> list[Finding]:
    """K-08: a suspected Baker's cyst gets the popliteal-fossa ultrasound. With leg signs or a possibly ruptured cyst
    the DVT pathway runs too; select.py drops this card when the DVT card suggests a venous duplex (it shows the
    cyst as well), and otherwise it says the D-dimer comes first."""
    cyst = facts.cond("bakers-cyst")
    us_done = [i for i in facts.imaging if i.modality in ("us-knee", "venous-duplex")]
    if not (cyst or facts.posterior_swelling) or us_done:
        return []
    lines = lines_of("Baker's cyst", cyst) or ("- Swelling or fullness behind the knee recorded",)
    dvt_pathway = bool(facts.leg_signs or facts.cond("ruptured-bakers-cyst"))
    return [Finding("us-bakers-cyst", ("K-08",), pain_lines(facts) + lines, facts.painful_side,
                    reasons=condition_refs(cyst or facts.posterior_knee_pain), suggestions=(Suggest("us-knee", "order"),),
                    folded=("dvt-pathway",) if dvt_pathway else ())]


def mechanical_imaging(facts: PatientFacts) -> list[Finding]:
    """K-09: meniscal tear or mechanical symptoms."""
    tear = facts.cond("meniscal-tear")
    locked = facts.finding("knee-locking") + facts.cond("knee-locking")
    giving_way = facts.cond("knee-giving-way")
    if not (tear or locked or giving_way) or acute_injuries(facts):
        return []
    injured = facts.cond("knee-injury") + facts.cond("ligament-injury")
    young_after_trauma = facts.age is not None and facts.age < YOUNG_AGE and bool(injured)
    root = facts.cond("meniscal-root-tear")
    if locked or giving_way or root or young_after_trauma:
        lines = lines_of("Meniscal tear", tear) + lines_of("Locking", locked) + lines_of("Giving way", giving_way)
        if young_after_trauma:
            lines += (f"- Age {facts.age} (under 40) with a knee injury on record",)
        return [Finding("mri-mechanical", ("K-09",), lines, facts.painful_side,
                        reasons=condition_refs(tear + giving_way + locked), suggestions=(Suggest("mri", "order"),),
                        indicator="critical" if locked else None)]
    if not xrays_of_knee(facts, facts.painful_side):
        return [Finding("xray-degenerative-tear", ("K-09",), lines_of("Meniscal tear", tear) + (
            f"- Age {facts.age if facts.age is not None else 'unknown'}, no locking or giving way on record",
            "- No knee radiograph in the last 12 months"), facts.painful_side, reasons=condition_refs(tear),
            suggestions=(Suggest("xray-standing", "order"),))]
    return []


STRAIN_WEEKS = 6  # K-11: a strain "not improving" after 6 weeks with the pain still recorded
STRAIN_PAIN_DAYS = 14  # ... in the last 2 weeks


def strain_imaging(facts: PatientFacts) -> list[Finding]:
    """K-11: a hamstring or calf strain is a clinical diagnosis; an imaging card only when the record calls for it
    (a suspected rupture or avulsion written on the strain, an elite athlete, or no better after 6 weeks)."""
    strain = facts.cond("hamstring-strain") + facts.cond("calf-strain")
    if not strain:
        return []
    rupture = {e.reference for e in facts.cond("tendon-rupture-suspected")}
    ruptured = [e for e in strain if e.reference in rupture]
    elite = list(facts.finding("elite-athlete"))
    pain_now = [e for e in ([facts.pain_score.evidence] if facts.pain_score else []) + list(facts.posterior_knee_pain)
                if within(facts, e.when, STRAIN_PAIN_DAYS)]
    lasting = [e for e in strain if e.when is not None and (facts.today - e.when).days >= STRAIN_WEEKS * 7] \
        if pain_now else []
    if not (ruptured or elite or lasting):
        return []
    lines = lines_of("Strain with a suspected rupture or avulsion", ruptured) + lines_of("Elite athlete", elite)
    if lasting:
        lines += lines_of(f"Strain not better after {STRAIN_WEEKS} weeks", lasting) + \
            lines_of("Pain still recorded", pain_now)
    lines += lines_of("Muscle strain", [e for e in strain if e not in ruptured and e not in lasting])
    return [Finding("mri-strain", ("K-11",), lines, facts.painful_side, reasons=condition_refs(strain),
                    suggestions=(Suggest("mri", "order"),))]
