"""Other causes (rules.md §3 K-10/K-14, §4 referred pain, §7 differential by location).
"""

from __future__ import annotations

from ..facts import PatientFacts
from .base import Finding, chronic_line, is_chronic, lines_of, pain_lines, same_side


def referred_pain(facts: PatientFacts) -> list[Finding]:
    """N-01 (sciatica and similar) and K-10 (normal knee MRI): one referred-pain card."""
    rules, lines, extra = [], [], []
    sciatica = facts.cond("sciatica-referred")
    if sciatica:
        rules.append("N-01")
        lines += lines_of("Possible source of referred pain", sciatica)
        extra.append("Pain from the L5/S1 roots or the sciatic nerve is often felt behind the knee. Examine the "
                     "lumbar spine (straight-leg raise, neurology); nerve studies if there is a deficit. This alone "
                     "is no reason to escalate to a knee MRI.")
    normal_mri = [i for i in facts.imaging if i.modality == "mri" and i.result == "normal"
                  and same_side(i.evidence.side, facts.painful_side)]
    if normal_mri:
        rules.append("K-10")
        lines += lines_of("Normal knee MRI", [i.evidence for i in normal_mri])
        extra.append("With a normal knee MRI, do not repeat it: look outside the joint, at the veins (Wells if there "
                     "are leg signs), the lumbar spine and the hip.")
    if not rules:
        return []
    return [Finding("referred-pain", tuple(rules), pain_lines(facts) + tuple(lines), facts.painful_side,
                    extra=tuple(extra))]


DIFFERENTIAL_GROUPS = (
    ("L-06", "with back or buttock pain, or pain running down the leg",
     "lumbar radiculopathy (sciatica); piriformis syndrome", "examine the spine; nerve studies if deficits"),
    ("L-01", "inner (medial) side", "semimembranosus tendinopathy; medial meniscus tear (posterior horn or root); "
     "osteoarthritis", "MRI if mechanical symptoms; X-ray if 45 or over or chronic"),
    ("L-02", "outer (lateral) side", "biceps femoris tendinopathy; lateral meniscus tear; popliteus tendinopathy "
     "(rare)", "MRI if mechanical symptoms; ultrasound for the tendon"),
    ("L-03", "centre of the back of the knee, with swelling or fullness",
     "Baker's cyst (often with osteoarthritis or a meniscal tear); osteoarthritis; popliteal artery aneurysm if "
     "pulsatile (rare); DVT (rarely isolated here)",
     "ultrasound of the popliteal fossa for cyst or aneurysm; for DVT, Wells then D-dimer or venous duplex (an MSK "
     "ultrasound does not exclude DVT)"),
    ("L-04", "about 5 cm above the back of the knee, after sprinting or kicking",
     "hamstring muscle or tendon tear", "MRI or ultrasound if a rupture or avulsion is suspected"),
    ("L-05", "below the knee into the calf", "calf (gastrocnemius or soleus) tear; DVT; referred lumbar pain",
     "Wells first if there are leg signs"),
)


def differential(facts: PatientFacts) -> list[Finding]:
    """L-01..L-07: pain behind the knee with no diagnosis on record that explains it."""
    if not facts.posterior_knee_pain or facts.has("explaining-diagnosis"):
        return []
    present = set(facts.subsites)
    matched = []
    for rule, where, causes, test in DIFFERENTIAL_GROUPS:
        hit = (rule == "L-06" and facts.has("back-pain")) or (rule == "L-01" and "medial" in present) or \
            (rule == "L-02" and "lateral" in present) or \
            (rule == "L-03" and ("central" in present or facts.posterior_swelling)) or \
            (rule == "L-04" and ("above" in present or "sprint" in present)) or (rule == "L-05" and "below" in present)
        if hit:
            matched.append((rule, where, causes, test))
    lines = list(pain_lines(facts))
    if facts.has("back-pain"):
        lines += lines_of("Back or buttock pain", facts.cond("back-pain"))
    if matched:
        extra = ["\n".join(["**Causes to consider for where the pain sits:**"] + [
            f"- *{where}:* {causes}. Separating test: {test}." for _, where, causes, test in matched])]
        rules = tuple(m[0] for m in matched)
    else:
        extra = ["\n".join([
                 "**Where exactly the pain sits is not recorded, so all groups apply:**",
                 "- *Joint:* osteoarthritis, meniscal tear (posterior horn or root), Baker's (popliteal) cyst.",
                 "- *Tendon and muscle:* hamstring or calf strain; semimembranosus, biceps femoris or popliteus "
                 "tendinopathy.",
                 "- *Nerve:* referred pain from the lumbar spine (sciatica), piriformis syndrome.",
                 "- *Vessels:* deep vein thrombosis; popliteal artery aneurysm (rare)."]),
                 # its own paragraph: written straight after the list, it would render inside the last item
                 "Recording the site (inner, outer, centre, above, below), swelling, mechanical symptoms and calf "
                 "signs makes this list specific."]
        rules = ("L-07",)
    return [Finding("differential", rules, tuple(lines), facts.painful_side, reads=frozenset({"Condition"}),
                    extra=tuple(extra))]


def assessment(facts: PatientFacts) -> list[Finding]:
    """K-14: persistent posterior knee pain with no diagnosis that explains it."""
    if not is_chronic(facts) or facts.has("explaining-diagnosis"):
        return []
    return [Finding("assessment", ("K-14",), pain_lines(facts) + (chronic_line(facts), NO_DIAGNOSIS_LINE),
                    facts.painful_side)]


NO_DIAGNOSIS_LINE = "- No diagnosis on record that explains it"  # the differential card says so in its advice
