"""The named mutations `make mutate` applies, one at a time (issue 7, item 6).

Each breaks one threshold or gate of the rule book the way a hand edit could, and names the fast tests that must
notice. Snippets are constant definitions or comparisons, so that they outlive refactoring; the runner refuses
to start when a snippet is not found exactly once in its file (then update the snippet, never drop the mutation).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str  # relative to the repository root
    snippet: str  # found exactly once in the file
    replacement: str
    tests: tuple[str, ...]  # pytest arguments: files and a -k selection


def _tests(path: str, selection: str) -> tuple[str, ...]:
    return (path, "-k", selection)


def dvt(selection: str) -> tuple[str, ...]:
    return _tests("tests/test_boundaries_dvt.py", selection)


def knee(selection: str) -> tuple[str, ...]:
    return _tests("tests/test_boundaries.py", selection)


FACTS_DVT = "cds_service/facts/dvt.py"
FACTS_WELLS = "cds_service/facts/wells.py"
RULES_BASE = "cds_service/rules/base.py"
RULES_DVT = "cds_service/rules/dvt.py"
RULES_RED_FLAGS = "cds_service/rules/red_flags.py"
RULES_IMAGING = "cds_service/rules/imaging.py"
CARDS = "cards/cards.toml"
FHIR_MODELS = "cds_service/fhir_models.py"
AUTH = "cds_service/auth.py"
PREFETCH = "cds_service/prefetch.py"

M = Mutation
MUTATIONS: tuple[Mutation, ...] = (
    # W-06 calf swelling >= 3.0 cm: the threshold, then each path (coded difference, paired measurements, leg signs).
    M("calf-threshold-raised", FACTS_DVT, "CALF_DIFFERENCE_CM = 3.0", "CALF_DIFFERENCE_CM = 3.1", dvt("calf_difference")),
    M("calf-threshold-lowered", FACTS_DVT, "CALF_DIFFERENCE_CM = 3.0", "CALF_DIFFERENCE_CM = 2.9", dvt("calf_difference")),
    M("w06-coded-strict", FACTS_WELLS, "if cm is not None and cm >= CALF_DIFFERENCE_CM:",
      "if cm is not None and cm > CALF_DIFFERENCE_CM:", dvt("calf_difference_coded")),
    M("w06-paired-strict", FACTS_WELLS, "if cm >= CALF_DIFFERENCE_CM:", "if cm > CALF_DIFFERENCE_CM:",
      dvt("calf_difference_paired")),
    M("w06-paired-float-difference", FACTS_WELLS, "cm = round(abs(rcm - lcm), 1)", "cm = abs(rcm - lcm)",
      dvt("calf_difference_paired")),
    M("w06-paired-ignored", FACTS_WELLS, "*paired_calf_measurements(rec),", "", dvt("calf_difference_paired")),
    M("w06-paired-any-leg", FACTS_WELLS, '("right", right) if rcm >= lcm else ("left", left)',
      '("right", right) if True else ("left", left)', dvt("calf_difference_paired")),
    M("leg-sign-gate-calf-strict", FACTS_DVT, "if cm is not None and cm >= CALF_DIFFERENCE_CM:",
      "if cm is not None and cm > CALF_DIFFERENCE_CM:", dvt("calf_difference_leg_sign_gate")),
    # G-09: examination findings of the last 14 days, coded leg signs of the last 4 weeks.
    M("exam-window-longer", FACTS_DVT, "EXAM_DAYS = 14", "EXAM_DAYS = 15", dvt("exam_finding_window")),
    M("exam-window-shorter", FACTS_DVT, "EXAM_DAYS = 14", "EXAM_DAYS = 13", dvt("exam_finding_window")),
    M("leg-sign-window-longer", FACTS_DVT, "LEG_SIGN_DAYS = 28", "LEG_SIGN_DAYS = 29", dvt("leg_sign_window")),
    M("leg-sign-window-shorter", FACTS_DVT, "LEG_SIGN_DAYS = 28", "LEG_SIGN_DAYS = 27", dvt("leg_sign_window")),
    # D-03: a D-dimer of the last 24 h.
    M("d-dimer-window-longer", RULES_DVT, "DDIMER_HOURS = 24", "DDIMER_HOURS = 25", dvt("d_dimer_window")),
    M("d-dimer-window-shorter", RULES_DVT, "DDIMER_HOURS = 24", "DDIMER_HOURS = 23", dvt("d_dimer_window")),
    M("d-dimer-window-strict", RULES_DVT, "<= timedelta(hours=DDIMER_HOURS)", "< timedelta(hours=DDIMER_HOURS)",
      dvt("d_dimer_window")),
    # D-08: a confirmed DVT of the symptomatic leg in the last 90 days (amended 2026-11-26).
    M("d08-window-longer", FACTS_DVT, "RECENT_DVT_DAYS = 90", "RECENT_DVT_DAYS = 91", dvt("d08")),
    M("d08-window-shorter", FACTS_DVT, "RECENT_DVT_DAYS = 90", "RECENT_DVT_DAYS = 89", dvt("d08")),
    M("d08-any-leg", FACTS_DVT, "or e.side in symptomatic", "or True", dvt("d08")),
    M("d08-unknown-side-is-another-leg", FACTS_DVT, 'e.side in ("unknown", "both")', 'e.side in ("both",)',
      dvt("d08")),
    # W-11: DVT likely from 2 points; D-04 escalates when the record alone holds 2.
    M("wells-likely-raised", RULES_BASE, "WELLS_LIKELY = 2", "WELLS_LIKELY = 3", dvt("wells_band")),
    M("wells-likely-lowered", RULES_BASE, "WELLS_LIKELY = 2", "WELLS_LIKELY = 1", dvt("wells_band")),
    M("wells-likely-strict", RULES_BASE, "self.score >= WELLS_LIKELY", "self.score > WELLS_LIKELY", dvt("wells_band")),
    M("d04-escalation-raised", RULES_DVT, "ESCALATION_POINTS = 2", "ESCALATION_POINTS = 3", dvt("d04")),
    M("d04-escalation-lowered", RULES_DVT, "ESCALATION_POINTS = 2", "ESCALATION_POINTS = 1", dvt("d04")),
    M("d04-escalation-strict", RULES_DVT, "partial >= ESCALATION_POINTS", "partial > ESCALATION_POINTS", dvt("d04")),
    # Chronic = 6 weeks (K-05..K-07, K-14).
    M("chronic-longer", RULES_BASE, "CHRONIC_WEEKS = 6", "CHRONIC_WEEKS = 7", knee("chronic")),
    M("chronic-shorter", RULES_BASE, "CHRONIC_WEEKS = 6", "CHRONIC_WEEKS = 5", knee("chronic")),
    M("chronic-strict", RULES_BASE, "weeks >= CHRONIC_WEEKS", "weeks > CHRONIC_WEEKS", knee("chronic")),
    # K-11: a strain gets an imaging card only when not better after 6 weeks with pain recorded in the last 2.
    M("strain-weeks-longer", RULES_IMAGING, "STRAIN_WEEKS = 6", "STRAIN_WEEKS = 7", knee("strain")),
    M("strain-weeks-strict", RULES_IMAGING, "(facts.today - e.when).days >= STRAIN_WEEKS * 7",
      "(facts.today - e.when).days > STRAIN_WEEKS * 7", knee("strain")),
    M("strain-pain-window-shorter", RULES_IMAGING, "STRAIN_PAIN_DAYS = 14", "STRAIN_PAIN_DAYS = 13", knee("strain")),
    M("strain-pain-window-longer", RULES_IMAGING, "STRAIN_PAIN_DAYS = 14", "STRAIN_PAIN_DAYS = 15", knee("strain")),
    M("strain-rupture-anywhere", RULES_IMAGING, "ruptured = [e for e in strain if e.reference in rupture]",
      "ruptured = list(strain) if rupture else []", knee("strain")),
    # RF-05 threatened limb: knee pain of any location, or leg signs (G-05 safety gate); the row's gate is data.
    M("limb-gate-ignores-leg-signs", RULES_RED_FLAGS, "limb = local or facts.any_knee_pain or bool(facts.leg_signs)",
      "limb = local or facts.any_knee_pain", knee("limb_threat")),
    M("limb-gate-ignores-located-pain", RULES_RED_FLAGS,
      "limb = local or facts.any_knee_pain or bool(facts.leg_signs)", "limb = local or bool(facts.leg_signs)",
      knee("limb_threat")),
    M("limb-gate-open", RULES_RED_FLAGS, "limb = local or facts.any_knee_pain or bool(facts.leg_signs)", "limb = True",
      knee("limb_threat")),
    M("rf05-row-knee-gate", CARDS, 'gate = "limb"\nwhen = [["condition:knee-dislocation"]',
      'gate = "knee"\nwhen = [["condition:knee-dislocation"]', knee("limb_threat")),
    # RF-02 severe pain after trauma: 7/10 or more, with a knee injury of the last 7 days.
    M("rf02-threshold-raised", RULES_RED_FLAGS, "SEVERE_PAIN = 7", "SEVERE_PAIN = 8", knee("severe_pain")),
    M("rf02-threshold-lowered", RULES_RED_FLAGS, "SEVERE_PAIN = 7", "SEVERE_PAIN = 6", knee("severe_pain")),
    M("rf02-strict", RULES_RED_FLAGS, "pain.score >= SEVERE_PAIN", "pain.score > SEVERE_PAIN", knee("severe_pain")),
    M("rf02-row-without-injury", CARDS, 'when = [["recent-knee-injury", "severe-pain"]]', 'when = [["severe-pain"]]',
      knee("severe_pain")),
    # Client JWTs (CDS Hooks 2.0 "Trusting CDS Clients"): the jku allow-list, iat in the future beyond the leeway.
    M("jku-allowlist-unchecked", AUTH, "jku not in issuer.jku_allowed", "jku in ()",
      _tests("tests/test_auth.py", "jku")),
    M("iat-future-unchecked", AUTH, 'if _numeric_date(claims, "iat") > now + LEEWAY_SECONDS:', "if False:",
      _tests("tests/test_auth.py", "future")),
    M("iat-leeway-exclusive", AUTH, '_numeric_date(claims, "iat") > now + LEEWAY_SECONDS',
      '_numeric_date(claims, "iat") >= now + LEEWAY_SECONDS', _tests("tests/test_auth.py", "future")),
    M("leeway-longer", AUTH, "LEEWAY_SECONDS = 30", "LEEWAY_SECONDS = 31", _tests("tests/test_auth.py", "future")),
    # A paged prefetch Bundle that cannot be completed counts as unavailable (412 for required data).
    M("paged-prefetch-partial-kept", PREFETCH, "return spec, str(exc)",
      "return spec, str(exc) if isinstance(what, str) else []",
      _tests("tests/test_prefetch.py", "cannot_be_completed")),
    M("paged-prefetch-never-completed", PREFETCH, "if next_link(value) and not covered(",
      "if False and not covered(", _tests("tests/test_prefetch.py", "cannot_be_completed or more_pages")),
    # The compiled R4B validators (fhir_models.py): the after-check kept where a class has required primitives or
    # choice elements, and a complex list whose items could be null is not compiled.
    M("compiled-after-check-choices-only", FHIR_MODELS,
      "if probe.get_required_fields() or probe.get_one_of_many_fields():", "if probe.get_one_of_many_fields():",
      _tests("tests/test_fhir_models.py", "refuses")),
    M("compiled-after-check-required-only", FHIR_MODELS,
      "if probe.get_required_fields() or probe.get_one_of_many_fields():", "if probe.get_required_fields():",
      _tests("tests/test_fhir_models.py", "refuses")),
    M("compiled-null-items-unchecked", FHIR_MODELS,
      'if kind != "list" or schema["items_schema"].get("type") != "definition-ref":', 'if kind != "list":',
      _tests("tests/test_fhir_models.py", "null")),
)
